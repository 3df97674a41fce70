"""What an event's version is made of: values, never the bytes that happen to carry them.

The id of an event hashes its version (`envelope`), and the version holds a digest of
the entity. Were that a digest of the feed's JSON, the id would change with anything
that changes the bytes but not the record:

- the model growing: a field added with its default (`Invoice.traffic = []`) is in every
  entity's JSON, so every record would look changed after the upgrade that added it;
- the same value written two ways by the same provider: `100.0` and `100` (a webhook and
  a poller of Connec!), `…10:00:00Z` and `…10:00:00.000Z` as a stamp.

So the digest is of a canonical form of the entity's *values*:

- a Struct is an object of its fields whose values are not their defaults (a field added
  with a default leaves every record that does not use it as it was), keys sorted;
- a decimal is written in full without trailing zeros (`100.0`, `100` and `1E+2` are
  `100`; `-0.00` is `0`), an instant in UTC with no trailing zeros in its fraction
  (`2026-11-21T18:00:37.100+01:00` is `2026-11-21T17:00:37.1Z`), a date as `YYYY-MM-DD`;
- a `Record`'s attributes are kept whole (`null` included): there the provider's fields
  are the data. Their numbers are decimals already (`check`).

`stamp` does the same for a provider's update stamp: one that reads as an RFC 3339
instant is that instant, written as above (`2020-06-26T08:12:44.119Z` stays as it is,
`2020-06-26T10:12:44.1190+02:00` becomes it); anything else (an opaque counter) is kept
as written.

Pure; entities are `check.checked` before they get here (the bounds keep every decimal
to 38 + 38 digits, so writing one in full is bounded).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Context, Decimal
from typing import Any

import msgspec

from .fields import MAX_FRACTION_DIGITS, MAX_INTEGER_DIGITS, STAMP

_json = msgspec.json.Encoder(order="sorted")
_EXACT = Context(prec=MAX_INTEGER_DIGITS + MAX_FRACTION_DIGITS + 2)  # normalize() never rounds
_MISSING = object()
_defaults: dict[type, tuple[tuple[str, Any], ...]] = {}


def _fields(kind: type) -> tuple[tuple[str, Any], ...]:
    """(name, default) of a Struct's fields; `_MISSING` for a required one. Once per type."""
    fields = _defaults.get(kind)
    if fields is None:
        out = []
        for f in msgspec.structs.fields(kind):
            if f.default is not msgspec.NODEFAULT:
                default = f.default
            elif f.default_factory is not msgspec.NODEFAULT:
                default = f.default_factory()
            else:
                default = _MISSING
            out.append((f.name, default))
        fields = _defaults[kind] = tuple(out)
    return fields


def decimal_text(value: Decimal) -> str:
    """A decimal's value, written one way: in full, no exponent, no trailing zeros."""
    if not value:
        return "0"
    return format(value.normalize(_EXACT), "f")


def instant_text(value: dt.datetime) -> str:
    """An instant in UTC (no offset: UTC), its fraction of a second without trailing zeros
    (`…:07.597Z`, `…:00Z`): the stamp most providers write, written one way."""
    t = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    whole = t.replace(tzinfo=None).isoformat(timespec="seconds")
    fraction = f"{t.microsecond:06d}".rstrip("0")
    return f"{whole}.{fraction}Z" if fraction else f"{whole}Z"


def _value(value: Any) -> Any:
    kind = type(value)
    if kind is Decimal:
        return decimal_text(value)
    if kind is dt.datetime:
        return instant_text(value)
    if kind is dt.date:
        return value.isoformat()
    if isinstance(value, msgspec.Struct):
        return {name: _value(v) for name, default in _fields(kind)
                if (v := getattr(value, name)) != default}
    if kind is list:
        return [_value(v) for v in value]
    if kind is dict:
        return {k: _value(v) for k, v in value.items()}
    return value


def canonical(entity: Any) -> bytes:
    """The entity's values as canonical JSON (see the module docstring)."""
    return _json.encode(_value(entity))


def digest(entity: Any) -> str:
    """SHA-256 of `canonical(entity)`, in hex: what versions carry."""
    return hashlib.sha256(canonical(entity)).hexdigest()


def stamp(version: str) -> str:
    """A provider's update stamp, canonical when it is an instant (see the module docstring)."""
    text = version.strip()
    if not STAMP.match(text):
        return text
    try:
        return instant_text(dt.datetime.fromisoformat(text))
    except (ValueError, OverflowError):  # 2026-02-30; or before year 1 once in UTC
        return text
