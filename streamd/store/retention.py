"""Retention: the feed forgets an event once every configured sink has passed it and it
is older than `store.retention`.

A sink's committed offset is the floor: a sink that is down (or filters everything
out and has not committed a scan yet) holds retention back, so nothing it has not
delivered is ever pruned (a lagging sink costs disk, never events). The deletes go
through the writer as ordinary batches of at most `PRUNE_CHUNK` seqs, so a prune never
holds the write lock long and is ordered with everything else. Retention is also the
dedupe horizon: the writer drops a pruned event's id with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection

import anyio

from ..config import StoreConfig
from .batch import Batch
from .reader import FeedReader
from .writer import Writer

log = logging.getLogger("streamd")  # a daemon-wide task: its lines are the daemon's

PRUNE_CHUNK = 10_000


class Retention:
    def __init__(self, cfg: StoreConfig, writer: Writer, reader: FeedReader, sinks: Collection[str],
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.writer = writer
        self.reader = reader
        self.sinks = sinks  # the configured sinks' names: each one's offset is a floor
        self._clock = clock

    async def run(self) -> None:
        """Prune every tenth of `retention` (at least every second, at most every 5 minutes),
        until cancelled."""
        period = min(max(self.cfg.retention.seconds / 10, 1.0), 300.0)
        while True:
            await anyio.sleep(period)
            await self.prune()

    async def prune(self) -> int:
        """Delete events every configured sink has passed and that are older than
        `store.retention`, in chunks. Returns the number of seqs pruned."""
        offsets = await self.reader.offsets()
        head = self.writer.head
        floor = min((offsets.get(n, 0) for n in self.sinks), default=head)
        cutoff_ms = int((self._clock() - self.cfg.retention.seconds) * 1000)
        upto = min(floor, await self.reader.seq_at(cutoff_ms))
        first = await self.reader.first_seq()
        pruned = 0
        while first <= upto:
            end = min(upto, first + PRUNE_CHUNK - 1)
            await self.writer.submit(Batch(prune_upto=end))
            pruned += end - first + 1
            first = end + 1
        if pruned:
            log.info("retention: pruned events up to seq %d", upto)
        return pruned
