"""`format = "jsonl"`: each batch the SFTP sink delivers as one file of feed lines (the
CloudEvents JSON of each event, one per line, exactly as `streamd tail` and the `file`
sink write them), for a system that picks up files of events rather than documents.

The name comes from the batch: `{first}` and `{last}` are the seqs of its first and last
event (default `streamd-{first:012d}-{last:012d}.jsonl`, which sorts in feed order).
Batches are stable (`stable_batches`): after a crash the dispatcher delivers again
exactly the batch that was in flight, so the file it makes has the same name and the
same bytes, and is found there and skipped: every event is in one file, once. A file at
that name holding anything else (another feed's events, after a restore; a file streamd
did not write) is never replaced: the batch is refused as the invoice format refuses a
document.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ..store import FeedEvent
from .file_format import FileFormat, OutFile, Plan
from .filenames import Template

FIELDS = ("first", "last", "count")
DISTINCT = ("first", "last")
FILENAME = "streamd-{first:012d}-{last:012d}.jsonl"


class JsonLines(FileFormat):
    FIELDS = FIELDS
    DISTINCT = DISTINCT
    FILENAME = FILENAME
    stable_batches = True

    def __init__(self, sink: str, filename: str) -> None:
        self.sink = sink
        self._template = Template(filename, FIELDS)

    @classmethod
    def template_problem(cls, template: str) -> str | None:
        problem = super().template_problem(template)
        if problem:
            return problem
        try:
            Template(template, FIELDS).render({"first": 1, "last": 2, "count": 2})
        except (ValueError, TypeError) as exc:
            return f"cannot be rendered ({exc})"
        return None

    async def plan(self, events: Sequence[FeedEvent]) -> Plan:
        if not events:
            return Plan([])
        first, last = events[0], events[-1]
        data = b"".join(e.line for e in events)  # each newline-terminated
        name = self._template.render({"first": first.seq, "last": last.seq, "count": len(events)})
        identity = hashlib.sha256(data).hexdigest()
        title = f"events {first.seq} to {last.seq}" if len(events) > 1 else f"event {first.seq}"
        return Plan([[OutFile(name, first, identity, title, data)]])

    def head_size(self, f: OutFile) -> int:
        # All of it, and one byte more: a longer file is not this one.
        return len(f.data) + 1

    def held(self, head: bytes, f: OutFile) -> str | None:
        if head == f.data:
            return None
        return "a file that does not hold exactly these events"
