"""Deletions a source holds back for a person to confirm: what it keeps in `source_state`
and what `streamd deletions` reads and writes there. Pure.

A source whose provider spec says `holds_deletions` (Asperion: a listing that loses more
than its bound, providers/asperion/deletions.py) keeps each hold under
`deletions.<tenant>.<resource>.held`; `streamd deletions confirm` writes the
confirmation beside it (`.confirmed`), naming the hold it confirms, and the source
deletes at its next listing that still finds the records gone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

PREFIX = "deletions."


class Hold(msgspec.Struct, frozen=True, kw_only=True):
    """Deletions held for one tenant and resource."""

    id: str  # a confirmation names the hold it confirms: a later hold needs its own
    since: str  # RFC 3339: the first listing that held them
    deleting: int  # records the latest listing found gone
    known: int  # records known before it


class Confirmation(msgspec.Struct, frozen=True, kw_only=True):
    hold: str  # the id of the hold confirmed
    at: str


def keys(tenant: str, resource: str) -> tuple[str, str]:
    """The `source_state` keys of a hold and of its confirmation."""
    base = f"{PREFIX}{tenant}.{resource}."
    return base + "held", base + "confirmed"


def parse_key(key: str) -> tuple[str, str, str] | None:
    """(tenant, resource, "held" | "confirmed") of a key `keys` made."""
    if not key.startswith(PREFIX):
        return None
    parts = key[len(PREFIX):].rsplit(".", 2)
    if len(parts) != 3 or parts[2] not in ("held", "confirmed"):
        return None
    return parts[0], parts[1], parts[2]


def read_hold(value: Any) -> Hold | None:
    try:
        return None if value is None else msgspec.convert(value, Hold)
    except msgspec.ValidationError:
        return None


def read_confirmation(value: Any) -> Confirmation | None:
    try:
        return None if value is None else msgspec.convert(value, Confirmation)
    except msgspec.ValidationError:
        return None


def command(source: str, tenant: str, resource: str) -> str:
    return f"streamd deletions confirm {source} --tenant {tenant} --resource {resource}"


def holds(progress: Mapping[str, Any]) -> dict[tuple[str, str], tuple[Hold, Confirmation | None]]:
    """The holds in a source's progress, with their confirmations (for the CLI)."""
    out: dict[tuple[str, str], tuple[Hold, Confirmation | None]] = {}
    for key, value in progress.items():
        parsed = parse_key(key)
        hold = read_hold(value) if parsed is not None and parsed[2] == "held" else None
        if parsed is not None and hold is not None:
            tenant, resource, _ = parsed
            confirmation = read_confirmation(progress.get(keys(tenant, resource)[1]))
            out[(tenant, resource)] = (hold, confirmation)
    return out
