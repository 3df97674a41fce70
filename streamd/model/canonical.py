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
  `100`; `-0.00` is `0`); an instant in UTC as msgspec writes it
  (`2026-11-21T18:00:37.100+01:00` is `2026-11-21T17:00:37.100000Z`), a date as
  `YYYY-MM-DD`;
- a `Record`'s attributes are kept whole (`null` included): there the provider's fields
  are the data. Their numbers are decimals already (`check`).

`stamp` does the same for a provider's update stamp: one that reads as an RFC 3339
instant is that instant in UTC, its fraction without trailing zeros, the way most
providers write one (`2020-06-26T08:12:44.119Z` stays as it is,
`2020-06-26T10:12:44.1190+02:00` becomes it); anything else (an opaque counter) is kept
as written.

This module is the form: how each value is written, and each Struct's twin. The walk
that writes an entity in it is `check`'s, the same walk that checks the entity (one pass
per event, not two): `check.canonical(entity)`, `check.digest(entity)`. The bounds it
checks first keep every decimal to 38 + 38 digits, so writing one in full is bounded.
Pure.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Context, Decimal
from typing import Any

import msgspec
import msgspec.inspect

from .fields import MAX_FRACTION_DIGITS, MAX_INTEGER_DIGITS, STAMP

_plain = msgspec.json.Encoder()
_EXACT = Context(prec=MAX_INTEGER_DIGITS + MAX_FRACTION_DIGITS + 2)  # normalize() never rounds


#: Written one way per value by msgspec itself: instants are UTC once `check`ed, so
#: `…10:00:00Z` and `…10:00:00.000Z` are one datetime, one text.
_PLAIN = (msgspec.inspect.StrType, msgspec.inspect.BoolType, msgspec.inspect.IntType,
          msgspec.inspect.NoneType, msgspec.inspect.LiteralType, msgspec.inspect.DateType,
          msgspec.inspect.DateTimeType)


def _plain_type(t: Any) -> bool:
    """A field type whose values need nothing done to be written one way."""
    info = msgspec.inspect.type_info(t)
    types = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    return all(isinstance(x.type if isinstance(x, msgspec.inspect.Metadata) else x, _PLAIN) for x in types)


def twin_of(kind: type) -> tuple[type, tuple[bool, ...]]:
    """How to write one Struct type canonically: a twin Struct that leaves out fields at
    their defaults (msgspec's `omit_defaults`, in C), and which fields are written as they
    are (strings, booleans, integers, dates and (UTC) instants: True) or need a value made
    canonical first (decimals, nested Structs, lists, dicts: False). `check`'s walk builds
    the twin, field by field, on its way through the entity."""
    fields: list[tuple[str, Any, Any]] = []
    plain: list[bool] = []
    for f in msgspec.structs.fields(kind):
        if f.default_factory is not msgspec.NODEFAULT:
            default: Any = msgspec.field(default_factory=f.default_factory)
        else:  # a required field is never None: None as its twin's default omits nothing
            default = None if f.default is msgspec.NODEFAULT else f.default
        fields.append((f.name, Any, default))
        plain.append(_plain_type(f.type))
    return msgspec.defstruct(f"Canonical{kind.__name__}", fields, omit_defaults=True), tuple(plain)


def decimal_text(value: Decimal) -> str:
    """A decimal's value, written one way: in full, no exponent, no trailing zeros."""
    if not value:
        return "0"
    text = str(value)
    if "E" in text:  # tiny amounts only: `check` writes out every positive exponent
        return format(value.normalize(_EXACT), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def instant_text(value: dt.datetime) -> str:
    """An instant in UTC (no offset: UTC), its fraction of a second without trailing zeros
    (`…:07.597Z`, `…:00Z`): the stamp most providers write, written one way."""
    t = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    text = _plain.encode(t).decode()[1:-2]  # msgspec: "YYYY-MM-DDTHH:MM:SS[.ffffff]Z"
    return (text.rstrip("0").rstrip(".") if "." in text else text) + "Z"


#: A stamp already written the canonical way (most of Asteria's and Connec!'s).
_CANONICAL_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d*[1-9])?Z\Z")


def stamp(version: str) -> str:
    """A provider's update stamp, canonical when it is an instant (see the module docstring)."""
    text = version.strip()
    if _CANONICAL_STAMP.match(text) or not STAMP.match(text):
        return text  # (an impossible date such as 2026-02-30 is kept as written either way)
    try:
        return instant_text(dt.datetime.fromisoformat(text))
    except (ValueError, OverflowError):  # 2026-02-30; or before year 1 once in UTC
        return text
