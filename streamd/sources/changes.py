"""Versions for pollers: what a poller stores in `entity_state` and derives event ids from.
Pure: no I/O, no clock (invariant 4).

A version is chained: `poll:<h(previous version)>#<h(content)>`. A replay after a crash
has the same previous version, so the same id; a record that changes A → B → A gets
three ids, so the return to A is not taken for a duplicate of the first A.
`entity_state` also holds two kinds of marker: a tombstone (`deleted:<last version>`),
so that a record deleted and created again chains on, and `rejected:<hash of the
bytes>:<c|u>` for a record that does not normalize, so the same bad record is
dead-lettered once, not at every poll.
"""

from __future__ import annotations

import hashlib


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


def rejected_marker(raw: bytes, previous: str) -> str:
    """The state of a record that does not normalize: its bytes' hash (the same bad record
    is dead-lettered once, not every poll) and whether an earlier version was emitted."""
    return f"rejected:{hashlib.sha256(raw).hexdigest()[:16]}:{'u' if was_emitted(previous) else 'c'}"
