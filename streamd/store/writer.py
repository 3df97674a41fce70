"""The single writer: the one task that owns the feed's write connection.

Sources, sinks and webhooks hand it a `Batch` (events *and* the progress that
produced them) and await `Committed`. The writer coalesces whatever is queued
(up to `commit_max_events`, lingering `commit_linger` for more) into one SQLite
transaction, commits, and only then resolves every submitter's wait and wakes the
sinks. So a submit that returned is on disk (invariant 1), and a webhook that
answers after `submit()` answers after the commit (invariant 2).

Duplicates (an id already in the feed, or twice in one group) are dropped inside
the transaction and counted per source. `seq` comes from SQLite's AUTOINCREMENT
counter, read inside the transaction: strictly increasing, never reused, even
after retention empties the table.

Backpressure: the queue holds `queue_batches` batches; a source whose `submit`
waits on a full queue reads no further from its peer (invariant 6).

Progress rows go through a `Sealer` (see `sealed`): credentials are encrypted when
`[store] secrets_key` is set, in the writer's transaction and in `write_state`
(`streamd auth`), the only two places that write `source_state`.

This module is the task (its queue, its groups, retries of a busy store, waking the
sinks); what a group writes is `transaction.py`, what a batch holds `batch.py`.
"""

from __future__ import annotations

import enum
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiosqlite
import anyio
from anyio.abc import TaskStatus

from ..config import BackoffPolicy, StoreConfig
from ..errors import DiskFull, StoreBusy, StoreError, StoreFatal, WriterClosed
from ..health import Component, State
from ..metrics import Metrics
from ..retry import Retries
from ..units import Duration
from .batch import Batch, Committed
from .schema import classify, connect, in_thread
from .sealed import Sealer, encode_state, seal_at_rest
from .transaction import UPSERT_STATE, commit

log = logging.getLogger("streamd.store")

_IDLE_BEAT = 1.0
# Disk full or locked: retry soon, and keep trying; the daemon stays up (invariant 5).
_STORE_BACKOFF = BackoffPolicy(min=Duration(0.2), max=Duration(10.0))


class WriterState(enum.Enum):
    """The writer's lifecycle, one way only: NEW -> STARTING -> RUNNING -> CLOSING -> CLOSED.
    A writer closed before it ran goes from NEW (or STARTING) straight to CLOSED."""

    NEW = "new"  # built: batches may queue, nothing commits yet
    STARTING = "starting"  # `run` reads the head and seals credentials at rest
    RUNNING = "running"  # committing
    CLOSING = "closing"  # `close()`: what is queued still commits; nothing more is accepted
    CLOSED = "closed"  # `run` returned, or never ran: nothing is accepted or committed


class _Item:
    __slots__ = ("batch", "done", "result", "error")

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.done = anyio.Event()
        self.result: Committed | None = None
        self.error: BaseException | None = None

    async def wait(self) -> Committed:
        await self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class Pending:
    """A batch in the writer's queue; `await pending.committed()` waits for its commit."""

    __slots__ = ("_item",)

    def __init__(self, item: _Item) -> None:
        self._item = item

    async def committed(self) -> Committed:
        return await self._item.wait()

    @property
    def done(self) -> bool:
        return self._item.done.is_set()


class Writer:
    def __init__(self, db: aiosqlite.Connection, cfg: StoreConfig, metrics: Metrics,
                 component: Component, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._cfg = cfg
        self._metrics = metrics
        self.component = component
        self._grace = component.grace
        self._clock = clock
        self._send, self._recv = anyio.create_memory_object_stream[_Item](cfg.queue_batches)
        self.head = 0
        self._last_ms = 0
        self._changed = anyio.Event()
        self.finished = anyio.Event()  # set once the state is CLOSED after `run`
        self._state = WriterState.NEW
        self._inflight: list[_Item] = []
        self._pruned = 0
        self._sealer = Sealer.from_config(cfg)

    @property
    def state(self) -> WriterState:
        return self._state

    # ---------------------------------------------------------------- submitters

    async def enqueue(self, batch: Batch) -> Pending:
        """Queue a batch (waits while the queue is full) without waiting for its commit."""
        if self._state in (WriterState.CLOSING, WriterState.CLOSED):
            raise WriterClosed("the store writer is shutting down")
        item = _Item(batch)
        try:
            await self._send.send(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise WriterClosed("the store writer is shutting down") from None
        self._metrics.store_queue.set(self._send.statistics().current_buffer_used)
        return Pending(item)

    async def submit(self, batch: Batch) -> Committed:
        """Queue a batch and wait until it is committed (or raise the store's error)."""
        return await (await self.enqueue(batch)).committed()

    def close(self) -> None:
        """Accept nothing more; the writer commits what is queued, then `run` returns. A
        writer that is not running yet fails what is queued. Closing twice does nothing."""
        self._send.close()
        if self._state is WriterState.RUNNING:
            self._state = WriterState.CLOSING
        elif self._state in (WriterState.NEW, WriterState.STARTING):
            self._state = WriterState.CLOSED
            self._fail_queued(WriterClosed("the store writer never started"))
            self._recv.close()

    async def wait_head(self, above: int) -> int:
        """Wait until the head passes `above` (or the writer stops, or `wake()`); return the
        head. Callers bound the wait with their own `move_on_after`."""
        if self.head <= above and not self.finished.is_set():
            await self._changed.wait()
        return self.head

    # ---------------------------------------------------------------- the task

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        if self._state is not WriterState.NEW:
            raise RuntimeError(f"the store writer is {self._state.value}: it runs once")
        self._state = WriterState.STARTING
        try:
            self.head = await self._read_head()
            await seal_at_rest(self._db, self._sealer, self._cfg.path)
        except sqlite3.Error as exc:
            raise classify(exc, self._cfg.path) from None
        self._last_ms = await self._read_last_received()
        self._metrics.head.set(self.head)
        self.component.ok()
        if self._state is WriterState.STARTING:  # not closed meanwhile
            self._state = WriterState.RUNNING
        task_status.started()
        try:
            async with self._recv:
                while True:
                    group = await self._gather()
                    if group is None:
                        break
                    self._inflight = group
                    await self._commit(group)
                    self._inflight = []
        except BaseException as exc:
            self._fail_queued(exc)
            raise
        finally:
            self._state = WriterState.CLOSED
            self._send.close()
            self.component.set(State.STOPPED)
            self.finished.set()
            self._wake()

    async def _gather(self) -> list[_Item] | None:
        """Wait for the first batch, then take what else is queued, up to the limits."""
        first: _Item | None = None
        while first is None:
            self.component.beat(_IDLE_BEAT * 5)
            with anyio.move_on_after(_IDLE_BEAT):
                try:
                    first = await self._recv.receive()
                except anyio.EndOfStream:
                    return None
        group = [first]
        n = first.batch.size()
        deadline = anyio.current_time() + self._cfg.commit_linger.seconds
        while n < self._cfg.commit_max_events:
            item: _Item | None = None
            try:
                item = self._recv.receive_nowait()
            except anyio.EndOfStream:
                break
            except anyio.WouldBlock:
                # Nothing ready: linger what is left of commit_linger for more to arrive.
                with anyio.move_on_after(deadline - anyio.current_time()):
                    try:
                        item = await self._recv.receive()
                    except anyio.EndOfStream:
                        break
            if item is None:
                break
            group.append(item)
            n += item.batch.size()
        self._metrics.store_queue.set(self._recv.statistics().current_buffer_used)
        return group

    async def _commit(self, group: list[_Item]) -> None:
        retries = Retries(_STORE_BACKOFF, metrics=self._metrics, component=self.component, logger=log,
                          level=logging.ERROR,
                          message="store: %(reason)s; intake paused, retrying in %(wait).1fs")
        while True:
            self.component.beat(60.0)
            t0 = time.perf_counter()
            try:
                # A commit is never abandoned half-way: shutdown waits for it.
                with anyio.CancelScope(shield=True):
                    results = await self._transaction(group)
            except StoreBusy as exc:
                self._metrics.store_errors.labels("busy").inc()
                # A lock clears in moments: /readyz allows the store its grace. A full disk
                # waits for the operator: unready at once, as webhooks get 503 meanwhile.
                self.component.grace = 0.0 if isinstance(exc, DiskFull) else self._grace
                await retries.pause(str(exc))
                continue
            except StoreFatal:
                self._metrics.store_errors.labels("fatal").inc()
                raise
            if self.component.state is not State.OK:
                log.info("store: commits resumed")
                self.component.ok()
            self._metrics.commit_seconds.observe(time.perf_counter() - t0)
            self._finish(group, results)
            return

    async def _transaction(self, group: list[_Item]) -> list[Committed]:
        now_ms = max(int(self._clock() * 1000), self._last_ms)
        try:
            # The whole transaction in one trip to SQLite's thread: statement by statement,
            # each of its six or more steps waited for the event loop to come back to it
            # (a batch of frames being normalized, a TLS read) before the next could start,
            # and every event in the group waited with it (docs/benchmarks.md, issue 18).
            results, self._pruned = await in_thread(self._db, functools.partial(
                commit, batches=[item.batch for item in group], head=self.head, now_ms=now_ms,
                keep_raw=self._cfg.keep_raw, sealer=self._sealer))
        except sqlite3.Error as exc:
            raise classify(exc, self._cfg.path) from None
        self._last_ms = now_ms
        return results

    def _finish(self, group: list[_Item], results: list[Committed]) -> None:
        m = self._metrics
        total = 0
        now = self._clock()
        for item, res in zip(group, results, strict=True):
            b = item.batch
            total += len(b.events)
            if b.source and b.events:
                m.source_appended.labels(b.source).inc(res.appended)
                if res.duplicates:
                    m.source_duplicates.labels(b.source).inc(res.duplicates)
                if res.appended:
                    m.source_last_event.labels(b.source).set(now)
            for d in b.dead_letters:
                m.dead_letters.labels(d.origin, d.name).inc()
                if d.origin == "source":
                    m.source_rejected.labels(d.name).inc()
                    log.warning("source %s: payload rejected, kept in dead letters: %s",
                                d.name, d.reason)
            item.result = res
            item.done.set()
        if self._pruned:
            m.pruned.inc(self._pruned)
            self._pruned = 0
        m.commit_events.observe(total)
        head = results[-1].head if results else self.head
        if head != self.head:
            self.head = head
            m.head.set(head)
            self._wake()

    def wake(self) -> None:
        """Wake everyone waiting in `wait_head` (e.g. a sink told to drain)."""
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _fail_queued(self, exc: BaseException) -> None:
        err = exc if isinstance(exc, StoreError) else WriterClosed("the store writer stopped")
        for item in self._inflight:
            if not item.done.is_set():
                item.error = err
                item.done.set()
        self._inflight = []
        while True:
            try:
                item = self._recv.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            item.error = err
            item.done.set()

    async def _read_head(self) -> int:
        async with self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _read_last_received(self) -> int:
        async with self._db.execute("SELECT received FROM events ORDER BY seq DESC LIMIT 1") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0


async def write_state(cfg: StoreConfig, source: str, progress: Mapping[str, Any]) -> None:
    """Write a source's progress from outside the daemon (`streamd auth` storing tokens),
    sealed like the writer's. SQLite's lock makes this safe while the daemon runs."""
    db = await connect(cfg)
    try:
        rows = encode_state(Sealer.from_config(cfg), source, progress, int(time.time() * 1000))
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.executemany(UPSERT_STATE, rows)
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise classify(exc, cfg.path) from None
    finally:
        await db.close()
