"""Change detection's pure half: a listing diffed page by page (`Listing`), the events it
emits, and whether its deletions are too many to make alone. No I/O, no clock
(invariant 4): the poller in `source` fetches the pages, feeds them here with the
versions `entity_state` holds, asks the API about the records a listing no longer shows,
and commits what comes out. Versions and markers are `sources.changes` (shared by the
pollers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from ...errors import Rejected
from ...model import Event, event_id, format_time, make_event
from ...model.envelope import Op
from ...sources.changes import Refusal, chain, is_live, rejected_marker, same_content, was_emitted
from ...store import EntityState
from . import wire
from .normalize import ZONE, normalize_record, record_key

PROVIDER = wire.PROVIDER


def record_event(resource: str, raw: bytes, *, source: str, tenant: str, previous: str,
                 received_at: datetime, zone: tzinfo = ZONE) -> Event:
    """The event a listing emits for a record whose last known version is `previous`."""
    n = normalize_record(resource, raw, received_at=received_at, zone=zone)
    op: Op = "updated" if was_emitted(previous) else "created"
    return make_event(provider=PROVIDER, source=source, tenant=tenant, entity=n.entity, op=op,
                      key=n.key, time=n.time, data=n.data, version=chain(previous), raw=raw)


def deletion_event(*, source: str, tenant: str, entity: str, key: str, previous: str,
                   data: bytes | None, received_at: datetime) -> Event:
    version = "deleted:" + previous
    return Event(id=event_id(PROVIDER, tenant, entity, key, version), source=source,
                 provider=PROVIDER, tenant=tenant, entity=entity, op="deleted", key=key,
                 time=format_time(received_at), data=data or b"null", version=version)


def mass_delete(gone: int, known: int, *, share: float, minimum: int) -> bool:
    """Whether a listing that confirmed `gone` of the `known` records (live before it)
    deleted must hold them for the operator: more than `share` of them, and more than
    `minimum`. An administration whose access was revoked lists nothing and answers 404 to
    every id, which looks like everything deleted at once; a real clean-up that large is
    rare enough to ask about."""
    return gone > minimum and gone > share * known


@dataclass
class PageChanges:
    """What one page of a listing changes: the events of new and changed records with the
    states to store beside them, the records refused, and the records whose digest differs
    from an emitted version's (`polling.changed_values` decides those from the stored state)."""

    events: list[Event] = field(default_factory=list)
    states: list[EntityState] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    differing: list[Event] = field(default_factory=list)


class Listing:
    """One full listing of one tenant's resource, diffed page by page against what the last
    listing left: `known` (key -> version, as `entity_state` holds them), updated with every
    version the listing emits. Pages may come in any order (they are fetched side by side)."""

    def __init__(self, *, source: str, tenant: str, resource: str, known: dict[str, str],
                 received_at: datetime, zone: tzinfo = ZONE) -> None:
        self.source = source
        self.tenant = tenant
        self.resource = resource
        self.entity = wire.RESOURCES[resource]
        self.known = known
        self.known_live = sum(1 for v in known.values() if is_live(v))  # before this listing
        self.seen: set[str] = set()
        self.received_at = received_at
        self.zone = zone

    def page(self, records: Iterable[bytes]) -> PageChanges:
        """The changes of one page's records (each its raw JSON)."""
        out = PageChanges()
        tenant = self.tenant
        for raw in records:
            try:
                key = record_key(raw)
            except Rejected as exc:
                out.refused.append(Refusal(exc.reason, raw, self.context("")))
                continue
            self.seen.add(key)
            previous = self.known.get(key, "")
            try:
                ev = record_event(self.resource, raw, source=self.source, tenant=tenant, previous=previous,
                                  received_at=self.received_at, zone=self.zone)
            except Rejected as exc:
                marker = rejected_marker(raw, previous)
                if marker != previous:  # not the same bad record as last time
                    out.refused.append(Refusal(exc.reason, raw, self.context(previous)))
                    out.states.append(EntityState(tenant, self.entity, key, marker))
                    self.known[key] = marker
                continue
            if same_content(previous, ev.version):
                continue
            if previous.startswith("poll:"):
                out.differing.append(ev)
                continue
            out.events.append(ev)
            out.states.append(EntityState(tenant, self.entity, key, ev.version, ev.data))
            self.known[key] = ev.version
        return out

    def context(self, previous: str) -> dict[str, str]:
        """A refused record's dead-letter context: what `renormalize` needs to try it again."""
        return {"via": "poll", "tenant": self.tenant, "resource": self.resource, "previous": previous}

    def missing(self) -> list[str]:
        """Records live before the listing that it did not show: gone, if the API agrees."""
        return [k for k, v in self.known.items() if is_live(v) and k not in self.seen]

    def deleted(self, gone: Iterable[str], data: Mapping[str, bytes | None],
                received_at: datetime) -> tuple[list[Event], list[EntityState]]:
        """The `deleted` events of the records confirmed `gone` (in id order, numbers as
        numbers), each with its last state's `data`, and their tombstones."""
        events = [deletion_event(source=self.source, tenant=self.tenant, entity=self.entity, key=k,
                                 previous=self.known[k], data=data.get(k), received_at=received_at)
                  for k in sorted(gone, key=_natural)]
        return events, [EntityState(self.tenant, self.entity, ev.key, ev.version) for ev in events]


def _natural(key: str) -> tuple[int, str]:
    return (int(key), "") if key.isdigit() else (1 << 62, key)
