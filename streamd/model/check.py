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

from ..errors import Rejected

_ZERO_EXP = Decimal(1)


def _fix(value: Any, path: str) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise Rejected(f"{path}: {value} is not an amount")
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent > 0:
            return value.quantize(_ZERO_EXP)
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        if value.utcoffset():
            return value.astimezone(UTC)
        return value
    if isinstance(value, float):
        return _fix(Decimal(repr(value)), path)
    if isinstance(value, msgspec.Struct):
        changes = {}
        for name in value.__struct_fields__:
            old = getattr(value, name)
            new = _fix(old, f"{path}.{name}" if path else name)
            if new is not old:
                changes[name] = new
        return msgspec.structs.replace(value, **changes) if changes else value
    if isinstance(value, list):
        fixed = [_fix(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return fixed if any(a is not b for a, b in zip(fixed, value, strict=True)) else value
    if isinstance(value, dict):
        fixed_d = {k: _fix(v, f"{path}.{k}") for k, v in value.items()}
        return fixed_d if any(fixed_d[k] is not value[k] for k in value) else value
    return value


def checked(entity: Any) -> Any:
    """The entity with amounts, instants and floats made safe, or `Rejected` naming the field."""
    return _fix(entity, "")


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
