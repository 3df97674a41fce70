"""What the writer takes and gives: a `Batch` (events and everything that commits with
them) and `Committed` (where its events landed). Plain data, shared by every producer
(sources, sinks, retention, the CLI) and by the transaction that writes it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec

from ..model import Event


class EntityState(msgspec.Struct, frozen=True):
    """What a poller last saw of one record; `version=None` forgets it (deleted)."""

    tenant: str
    entity: str
    key: str
    version: str | None
    data: bytes | None = None


class RecordTenant(msgspec.Struct, frozen=True):
    """Which tenant a record is in, for a source whose deletions do not say (Asteria's)."""

    entity: str
    key: str
    tenant: str


class SinkState(msgspec.Struct, frozen=True):
    """What a sink remembers of one key after the event `seq`: `value` is a JSON array of
    entries, each an array whose first item is the seq of the event that made it (so that
    `streamd sink reset --to-seq N` can take back what came after N)."""

    key: str
    seq: int
    value: bytes


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    origin: Literal["source", "sink"]
    name: str
    reason: str
    raw: bytes | None
    provider: str | None = None
    context: dict[str, str] = {}
    event_seq: int | None = None
    attempts: int = 0


class Batch(msgspec.Struct, kw_only=True):
    """One unit of work for the writer; everything in it commits together or not at all."""

    source: str | None = None
    events: Sequence[Event] = ()
    # source_state rows of `source`: key -> any msgspec-encodable value
    progress: Mapping[str, Any] = {}
    entity_states: Sequence[EntityState] = ()
    # records of `source` newly seen in a tenant (or moved to another)
    record_tenants: Sequence[RecordTenant] = ()
    dead_letters: Sequence[DeadLetter] = ()
    # sink name -> the seq it has passed
    offsets: Mapping[str, int] = {}
    # sink name -> what it remembers, committed with its offset
    sink_states: Mapping[str, Sequence[SinkState]] = {}
    # dead-letter rows handled (retried successfully or dropped)
    resolved_dead_letters: Sequence[int] = ()
    # retention: delete events with seq <= prune_upto
    prune_upto: int = 0
    # facts about the running daemon (listen address, pid, version) for `streamd status`
    meta: Mapping[str, str] = {}

    def size(self) -> int:
        return (len(self.events) + len(self.dead_letters) + len(self.entity_states)
                + len(self.record_tenants)
                + sum(len(v) for v in self.sink_states.values()) + 1)


class Committed(msgspec.Struct, frozen=True):
    appended: int
    duplicates: int
    first_seq: int  # 0 when nothing was appended
    last_seq: int
    head: int
