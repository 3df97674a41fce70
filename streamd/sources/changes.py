"""Versions for pollers: what a poller stores in `entity_state` and derives event ids from.
Pure: no I/O, no clock (invariant 4).

A version is chained: `poll:<h(previous version)>#<h(content)>`. A replay after a crash
has the same previous version, so the same id; a record that changes A → B → A gets
three ids, so the return to A is not taken for a duplicate of the first A.
`entity_state` also holds two kinds of marker: a tombstone (`deleted:<last version>`),
so that a record deleted and created again chains on, and `rejected:<hash of the
bytes>:<c|u>` for a record that does not normalize, so the same bad record is
dead-lettered once, not at every poll.

The content half is the digest of the entity's values (`model.canonical`), so a model
that grows a field leaves it alone. What an older streamd stored may still carry a digest
made another way (of the feed's bytes, before values were hashed): when the digests
disagree, `same_values` decides from the stored state itself, and `restamp` gives the
version to store instead, so that an upgrade emits nothing for a record that did not
change at the provider, and looks at its stored state once.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import msgspec

from ..errors import Rejected
from ..model import entity_type
from ..model.check import digest
from ..model.fields import DECODE_ERRORS


def chain(previous: str) -> str:
    """The version after `previous`; `make_event` appends `#<h(data)>`."""
    return "poll:" + hashlib.sha256(previous.encode()).hexdigest()[:16]


def is_live(version: str) -> bool:
    """The record exists at the provider as far as the last listing knows."""
    return bool(version) and not version.startswith("deleted:")


def was_emitted(version: str) -> bool:
    """An event for this record is in the feed (so the next change is an update)."""
    return version.startswith("poll:") or (version.startswith("rejected:") and version.endswith(":u"))


def same_content(previous: str, version: str) -> bool:
    return previous.startswith("poll:") and previous.rpartition("#")[2] == version.rpartition("#")[2]


def same_values(stored: bytes | None, entity: str, version: str) -> bool:
    """Whether `stored` (the state kept beside an emitted version whose digest differs from
    `version`'s) holds the values `version` digests: read with today's model, fields it
    lacks at their defaults. A state that no longer reads is a change."""
    if not stored or stored == b"null":
        return False
    try:
        values = digest(msgspec.json.decode(stored, type=entity_type(entity)))  # checked on the way
    except (*DECODE_ERRORS, Rejected):
        return False
    return values[:16] == version.rpartition("#")[2]


def restamp(previous: str, version: str) -> str:
    """`previous`, its chain kept, with the digest `version` carries: what to store for a
    record `same_values` found unchanged."""
    return previous.rpartition("#")[0] + "#" + version.rpartition("#")[2]


def rejected_marker(raw: bytes, previous: str) -> str:
    """The state of a record that does not normalize: its bytes' hash (the same bad record
    is dead-lettered once, not every poll) and whether an earlier version was emitted."""
    return f"rejected:{hashlib.sha256(raw).hexdigest()[:16]}:{'u' if was_emitted(previous) else 'c'}"


class Refusal(NamedTuple):
    """A record a listing could not take: the pure half says why and with what context; the
    source makes it a dead letter with the record's bytes (`ctx.dead_letter(*refusal)`)."""

    reason: str
    raw: bytes
    context: dict[str, str]
