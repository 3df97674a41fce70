"""Change detection's pure half: the events a listing emits, and whether its deletions
are too many to make alone. No I/O, no clock (invariant 4): the poller in `source` feeds
it records and the versions `entity_state` holds, and commits what comes out. Versions
and markers are `sources.changes` (shared by the pollers).
"""

from __future__ import annotations

from datetime import datetime, tzinfo

from ...model import Event, event_id, format_time, make_event
from ...model.envelope import Op
from ...sources.changes import chain, was_emitted
from . import wire
from .normalize import ZONE, normalize_record

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
