"""Source dead letters, tried again after `streamd dlq retry` marked them.

A source dead letter holds the raw bytes a normalizer refused. Once the normalizer is
fixed (a new streamd) and an operator marks the row, its bytes go through the source's
pure normalizer again (`Source.renormalize`): the events it makes now are appended
(deduped as ever) and the row resolved, in one batch. Refused again, the row is
replaced by one with the new reason and one more attempt. A row no source can take
(its source left the config, or it kept no raw bytes) is replaced saying so: it is
never retried in a loop.

A sink's dead letters are its dispatcher's: it delivers them again itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

import anyio

from ..errors import Rejected
from ..store import Batch, DeadLetter, FeedReader, Writer
from ..store.reader import DeadLetterRow
from .base import Source

log = logging.getLogger("streamd")  # a daemon-wide task: its lines are the daemon's

POLL = 2.0  # seconds between looks for rows marked `retry`
BATCH = 500  # rows taken per look


class SourceDeadLetters:
    def __init__(self, writer: Writer, reader: FeedReader, sources: Mapping[str, Source]) -> None:
        self.writer = writer
        self.reader = reader
        self.sources = sources

    async def run(self) -> None:
        """Every `POLL` seconds, retry the rows marked `retry`, until cancelled."""
        while True:
            await anyio.sleep(POLL)
            for row in await self.reader.dead_letters(origin="source", status="retry", limit=BATCH):
                await self.retry(row)

    async def retry(self, row: DeadLetterRow) -> None:
        """Normalize a source dead letter's raw bytes again."""
        source = self.sources.get(row.name)
        if source is None or row.raw is None:
            reason = "no such source in the config" if source is None else "no raw payload"
            log.warning("dead letter %d: cannot retry (%s); left as is", row.id, reason)
            await self.writer.submit(Batch(resolved_dead_letters=[row.id], dead_letters=[
                _again(row, f"retry impossible: {reason}")]))
            return
        try:
            events = source.renormalize(row.raw, row.context, datetime.now(UTC))
        except Rejected as exc:
            log.info("dead letter %d: still rejected: %s", row.id, exc.reason)
            await self.writer.submit(Batch(resolved_dead_letters=[row.id],
                                           dead_letters=[_again(row, exc.reason)]))
            return
        done = await self.writer.submit(Batch(source=row.name, events=events,
                                              resolved_dead_letters=[row.id]))
        log.info("dead letter %d: re-normalized into %d events (%d new)", row.id, len(events),
                 done.appended)


def _again(row: DeadLetterRow, reason: str) -> DeadLetter:
    return DeadLetter(origin="source", name=row.name, provider=row.provider, reason=reason,
                      raw=row.raw, context=row.context, attempts=row.attempts + 1)
