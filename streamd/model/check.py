"""Checks every entity passes before it becomes an event (in `make_event`).

Decoding wire bytes with msgspec validates types and patterns, but a normalizer
may also build entities by hand. Whatever the path, the feed only ever holds:
- amounts that are finite decimals (no NaN, no Infinity), without a positive
  exponent ("1E+2" is written "100");
- no floats anywhere, not even in a `Record`'s free-form attributes (a float is
  turned into the decimal of its shortest repr);
- instants in UTC (a naive datetime is taken as UTC);
- currencies and countries that match their ISO patterns (re-validated after encoding).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import msgspec.inspect

from ..errors import Rejected

_ZERO_EXP = Decimal(1)


class _Bad(Exception):
    """A value the feed must not carry; `path` is filled in on the way out."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.path: list[str] = []


def _fix(value: Any) -> Any:
    # Exact types first: this runs for every field of every event.
    kind = type(value)
    if kind is Decimal:
        if not value.is_finite():
            raise _Bad(f"{value} is not an amount")
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent > 0:
            return value.quantize(_ZERO_EXP)
        return value
    if kind is datetime:
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        if value.utcoffset():
            return value.astimezone(UTC)
        return value
    if kind is float:
        return _fix(Decimal(repr(value)))
    if isinstance(value, msgspec.Struct):
        changes: dict[str, Any] | None = None
        for name in _plan(kind):
            old = getattr(value, name)
            if old is None:
                continue
            try:
                new = _fix(old)
            except _Bad as bad:
                bad.path.append(name)
                raise
            if new is not old:
                if changes is None:
                    changes = {}
                changes[name] = new
        return msgspec.structs.replace(value, **changes) if changes else value
    if kind is list:
        fixed = []
        changed = False
        for i, v in enumerate(value):
            try:
                f = _fix(v)
            except _Bad as bad:
                bad.path.append(f"[{i}]")
                raise
            changed = changed or f is not v
            fixed.append(f)
        return fixed if changed else value
    if kind is dict:
        fixed_d = {}
        changed = False
        for k, v in value.items():
            try:
                f = _fix(v)
            except _Bad as bad:
                bad.path.append(str(k))
                raise
            changed = changed or f is not v
            fixed_d[k] = f
        return fixed_d if changed else value
    return value


_SAFE = (msgspec.inspect.StrType, msgspec.inspect.BoolType, msgspec.inspect.IntType,
         msgspec.inspect.NoneType, msgspec.inspect.LiteralType, msgspec.inspect.DateType)
_plans: dict[type, tuple[str, ...]] = {}


def _plan(kind: type) -> tuple[str, ...]:
    """The fields of a Struct that can need a fix (amounts, instants, nested values);
    strings, booleans, integers and dates never do. Computed once per type."""
    plan = _plans.get(kind)
    if plan is None:
        info = msgspec.inspect.type_info(kind)
        assert isinstance(info, msgspec.inspect.StructType)

        def safe(t: msgspec.inspect.Type) -> bool:
            if isinstance(t, msgspec.inspect.UnionType):
                return all(safe(x) for x in t.types)
            return isinstance(t, _SAFE)

        plan = _plans[kind] = tuple(f.name for f in info.fields if not safe(f.type))
    return plan


def checked(entity: Any) -> Any:
    """The entity with amounts, instants and floats made safe, or `Rejected` naming the field."""
    try:
        return _fix(entity)
    except _Bad as bad:
        path = ""
        for part in reversed(bad.path):
            path += part if part.startswith("[") or not path else "." + part
        raise Rejected(f"{path}: {bad.reason}" if path else bad.reason) from None


_decoders: dict[type, msgspec.json.Decoder[Any]] = {}


def validate_encoded(body: bytes, kind: type) -> None:
    """Re-validate an encoded entity against its Struct's constraints (ISO patterns)."""
    dec = _decoders.get(kind)
    if dec is None:
        dec = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        dec.decode(body)
    except msgspec.ValidationError as exc:
        raise Rejected(str(exc).replace("`", "")) from None
