"""Change detection's pure half: versions, and the events a listing emits. No I/O, no
clock (invariant 4): the poller in `source` feeds it records and the versions
`entity_state` holds, and commits what comes out.

Versions (what the event id is derived from) are chained: `poll:<h(previous version)>#
<h(content)>`. A replay after a crash has the same previous version, so the same id;
a record that changes A → B → A gets three ids, so the return to A is not taken for a
duplicate of the first A. `entity_state` also holds two kinds of marker: a tombstone
(`deleted:<last version>`) so that a record deleted and created again chains on, and
`rejected:<hash of the bytes>:<c|u>` for a record that does not normalize, so the same
bad record is dead-lettered once, not at every poll.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from ...model import Event, event_id, format_time, make_event
from ...model.envelope import Op
from . import wire
from .normalize import normalize_record

PROVIDER = wire.PROVIDER


def chain(previous: str) -> str:
    return "poll:" + hashlib.sha256(previous.encode()).hexdigest()[:16]


def is_live(version: str) -> bool:
    """The record exists at the provider as far as the last listing knows."""
    return bool(version) and not version.startswith("deleted:")


def was_emitted(version: str) -> bool:
    """An event for this record is in the feed (so the next change is an update)."""
    return version.startswith("poll:") or (version.startswith("rejected:") and version.endswith(":u"))


def same_content(previous: str, version: str) -> bool:
    return previous.startswith("poll:") and previous.rpartition("#")[2] == version.rpartition("#")[2]


def rejected_marker(raw: bytes, previous: str) -> str:
    """The state of a record that does not normalize: its bytes' hash (the same bad record
    is dead-lettered once, not every poll) and whether an earlier version was emitted."""
    return f"rejected:{hashlib.sha256(raw).hexdigest()[:16]}:{'u' if was_emitted(previous) else 'c'}"


def record_event(resource: str, raw: bytes, *, source: str, tenant: str, previous: str,
                 received_at: datetime) -> Event:
    """The event a listing emits for a record whose last known version is `previous`."""
    n = normalize_record(resource, raw, received_at=received_at)
    op: Op = "updated" if was_emitted(previous) else "created"
    return make_event(provider=PROVIDER, source=source, tenant=tenant, entity=n.entity, op=op,
                      key=n.key, time=n.time, data=n.data, version=chain(previous), raw=raw)


def deletion_event(*, source: str, tenant: str, entity: str, key: str, previous: str,
                   data: bytes | None, received_at: datetime) -> Event:
    version = "deleted:" + previous
    return Event(id=event_id(PROVIDER, tenant, entity, key, version), source=source,
                 provider=PROVIDER, tenant=tenant, entity=entity, op="deleted", key=key,
                 time=format_time(received_at), data=data or b"null", version=version)
