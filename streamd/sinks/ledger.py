"""What the SFTP sink remembers of what went to the ERP: each invoice's `History`
(`documents`), committed with the sink's offset (`base`, `attach_state`).

A delivery reads the histories of its batch's invoices (`histories`), decides on copies,
and only once every file is written hands the new ones over (`commit`); a delivery that
fails changes nothing. Histories are kept in memory, up to `capacity` invoices, the least
recently used forgotten first; a forgotten one is read again from the store. The
dispatcher keeps at most one offset commit in flight, so what the last two deliveries
changed may not be in the store yet: `capacity` is more than two batches' worth, and
those are the most recently used.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping

from ..errors import SinkStateUnreadable
from ..store import SinkState
from .base import StateLoader
from .documents import History

log = logging.getLogger("streamd.sink")


class Ledger:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._load: StateLoader | None = None  # none: a sink run alone (tests); memory only
        self._known: OrderedDict[str, History] = OrderedDict()
        self._taken: dict[str, SinkState] = {}

    def attach(self, load: StateLoader) -> None:
        self._load = load

    async def histories(self, keys: Iterable[str]) -> dict[str, History]:
        """The history of each invoice (empty for one never seen). Raises
        `SinkStateUnreadable`."""
        wanted = set(keys)
        missing = sorted(k for k in wanted if k not in self._known)
        loaded = await self._load(missing) if missing and self._load is not None else {}
        out: dict[str, History] = {}
        for key in wanted:
            if key in self._known:
                self._known.move_to_end(key)
                out[key] = self._known[key]
            elif key in loaded:
                seq, value = loaded[key]
                try:
                    out[key] = History.decode(seq, value)
                except ValueError as exc:
                    raise SinkStateUnreadable(f"what the sink remembers of invoice {key} cannot be read "
                                     f"({exc})") from None
            else:
                out[key] = History()
        return out

    def commit(self, changed: Mapping[str, History]) -> None:
        """After a delivery that wrote every file: remember, and hand to the dispatcher."""
        for key, history in changed.items():
            self._known[key] = history
            self._known.move_to_end(key)
            self._taken[key] = SinkState(key, history.seq, history.encode())
        while len(self._known) > self.capacity:
            self._known.popitem(last=False)

    def take(self) -> list[SinkState]:
        taken, self._taken = list(self._taken.values()), {}
        return taken
