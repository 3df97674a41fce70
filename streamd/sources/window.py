"""A bounded window of commits in flight, for a source that reads faster than it commits.

A source that waited for each batch's commit before reading on would leave the writer idle
between one page (or burst of frames) and the next; one that never waited would hold more
and more in memory while the store is slow. `CommitWindow` queues each batch
(`ctx.enqueue`) and waits only while more than `size` are uncommitted, for the oldest:
a slow store slows the reader, and so its peer (invariant 6). Commits already confirmed
are let go as they come. `settle()` waits for every one: before what may only follow
them (a listing's cursor or deletions, a stop).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable

from ..store import Batch, Pending


class CommitWindow:
    def __init__(self, enqueue: Callable[[Batch], Awaitable[Pending]], size: int) -> None:
        self._enqueue = enqueue
        self.size = size
        self._pending: deque[Pending] = deque()

    def __len__(self) -> int:
        """Batches queued and not yet known to be committed."""
        return len(self._pending)

    async def add(self, batch: Batch) -> None:
        """Queue `batch`; return once at most `size` batches are uncommitted. Safe to call
        from concurrent tasks (a listing's pages fetched side by side)."""
        pending = self._pending
        pending.append(await self._enqueue(batch))
        while pending and (len(pending) > self.size or pending[0].done):
            await pending.popleft().committed()

    async def settle(self) -> None:
        """Wait until every batch added is committed."""
        while self._pending:
            await self._pending.popleft().committed()
