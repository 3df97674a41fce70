"""Checks every entity passes before it becomes an event (in `make_event`).

Decoding wire bytes with msgspec validates types and patterns, but a normalizer
may also build entities by hand. Whatever the path, the feed only ever holds:
- amounts that are finite decimals (no NaN, no Infinity) within `fields.bounded`'s
  digits (38 before the point, 38 after: a normalizer that forgot to call
  `fields.amount`, or the synthetic provider's entities decoded whole, cannot let a
  900,000-digit total or `1E-999999999` through), without a positive exponent ("1E+2"
  is written "100");
- no floats anywhere, not even in a `Record`'s free-form attributes (a float is
  turned into the decimal of its shortest repr);
- no JSON numbers in a `Record`'s attributes at all: an integer there becomes a decimal
  too (`100` is written `"100"`). Which attribute is an amount only the provider knows,
  and a consumer must not get `"25.50"` beside `100`, nor an integer past 2^53 that a
  float-based parser rounds. Typed fields that count (`TrafficLine.messages`) stay
  integers: only free-form values are walked as numbers;
- a negative zero without its sign (`-0.00` is `0.00`);
- instants in UTC (a naive datetime is taken as UTC);
- currencies and countries that match their ISO patterns (the Structs' own constraints),
  and currencies that are in ISO 4217 List One (`iso4217`): `XYZ` fits the pattern only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import msgspec
import msgspec.inspect

from ..errors import NotAnAmount, Rejected
from .canonical import decimal_text, instant_text, twin_of
from .fields import CURRENCY, MAX_FRACTION_DIGITS, MAX_INTEGER_DIGITS, bounded
from .iso4217 import MINOR_UNITS

#: A walk's result: the entity made safe, and its values in the canonical form (`canonical`).
Walked = tuple[Any, Any]

_json = msgspec.json.Encoder(order="sorted")


class _Bad(Exception):
    """A value the feed must not carry; `path` is filled in on the way out."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.path: list[str] = []


def _amount(value: Decimal) -> Decimal:
    try:
        return bounded(value)
    except NotAnAmount as exc:
        raise _Bad(str(exc)) from None


def _decimal(value: Decimal) -> Walked:
    """(`bounded(value)`, `decimal_text` of it), the decimal's text read once for both:
    every amount of every event comes here. Anything but a plain amount within the
    bounds ("125.00", "-3", "0.10") takes the two functions themselves."""
    if value.is_finite():
        text = str(value)
        if "E" not in text:
            negative = text[0] == "-"
            point = text.find(".")
            if point < 0:
                if len(text) - negative <= MAX_INTEGER_DIGITS and value:
                    return value, text
            elif point - negative <= MAX_INTEGER_DIGITS and len(text) - point - 1 <= MAX_FRACTION_DIGITS \
                    and value:
                return value, text.rstrip("0").rstrip(".")
    fixed = _amount(value)
    return fixed, decimal_text(fixed)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if value.utcoffset():
        return value.astimezone(UTC)
    return value


def _walk(value: Any) -> Walked:
    """(`value` made safe, its canonical form). Exact types first: this runs for every
    value of every event that is not a plain field of a Struct."""
    kind = type(value)
    if kind is str or kind is bool or value is None:  # most of a Record's attributes
        return value, value
    if kind is Decimal:
        return _decimal(value)
    if isinstance(value, msgspec.Struct):
        walker = _walkers.get(kind)
        if walker is None:
            walker = _walkers[kind] = _walker(kind)
        return walker(value)
    if kind is list:
        fixed_l, canon_l = [], []
        changed = False
        for i, v in enumerate(value):
            try:
                f, c = _walk(v)
            except _Bad as bad:
                bad.path.append(f"[{i}]")
                raise
            changed = changed or f is not v
            fixed_l.append(f)
            canon_l.append(c)
        return (fixed_l if changed else value), canon_l
    if kind is dict:
        fixed_d, canon_d = {}, {}
        changed = False
        for k, v in value.items():
            try:
                f, c = _walk(v)
            except _Bad as bad:
                bad.path.append(str(k))
                raise
            changed = changed or f is not v
            fixed_d[k] = f
            canon_d[k] = c
        return (fixed_d if changed else value), canon_d
    if kind is datetime:
        fixed_t = _utc(value)
        return fixed_t, instant_text(fixed_t)
    if kind is date:
        return value, value.isoformat()
    if kind is float:
        return _walk(Decimal(repr(value)))
    if kind is int:  # reached only inside a Record's attributes (see `_plan`); bool is no int here
        return _walk(Decimal(value))
    return value, value


_SAFE = (msgspec.inspect.StrType, msgspec.inspect.BoolType, msgspec.inspect.IntType,
         msgspec.inspect.NoneType, msgspec.inspect.LiteralType, msgspec.inspect.DateType)
_plans: dict[type, tuple[tuple[str, re.Pattern[str] | None], ...]] = {}


def _bare(t: msgspec.inspect.Type) -> msgspec.inspect.Type:
    return t.type if isinstance(t, msgspec.inspect.Metadata) else t


def _plan(kind: type) -> tuple[tuple[str, re.Pattern[str] | None], ...]:
    """The fields of a Struct that need a look: amounts, instants and nested values (to
    fix), and constrained strings (ISO currency, country: to match). Other strings,
    booleans, integers and dates never do. Computed once per type."""
    plan = _plans.get(kind)
    if plan is None:
        info = msgspec.inspect.type_info(kind)
        assert isinstance(info, msgspec.inspect.StructType)
        entries: list[tuple[str, re.Pattern[str] | None]] = []
        for f in info.fields:
            types = tuple(_bare(t) for t in (
                f.type.types if isinstance(f.type, msgspec.inspect.UnionType) else (f.type,)))
            patterns = [t.pattern for t in types if isinstance(t, msgspec.inspect.StrType) and t.pattern]
            if patterns:
                # The currency pattern is the shared object: the walk also looks the code up.
                entries.append((f.name, CURRENCY if patterns[0] == CURRENCY.pattern
                                else re.compile(patterns[0])))
            elif not all(isinstance(t, _SAFE) for t in types):
                entries.append((f.name, None))
        plan = _plans[kind] = tuple(entries)
    return plan


def _bad_match(name: str, old: Any, pattern: re.Pattern[str]) -> _Bad:
    bad = _Bad(f"{old!r} does not match {pattern.pattern}")
    bad.path.append(name)
    return bad


def _bad_currency(name: str, old: str) -> _Bad:
    bad = _Bad(f"{old!r} is not an ISO 4217 currency code")
    bad.path.append(name)
    return bad


_walkers: dict[type, Callable[[Any], Walked]] = {}


def _walker(kind: type) -> Callable[[Any], Walked]:
    """`_walk` for one Struct type, as one function made from its `_plan` and its
    canonical twin (`canonical.twin_of`): the fields unpacked at once by msgspec, each that
    needs a look looked at in straight-line code, the twin made from the values as fixed.
    A loop over the fields with a call per value cost as much again as the looks
    themselves; and the check and the canonical form were two walks of every entity of
    every event (docs/benchmarks.md)."""
    twin, plain = twin_of(kind)
    plan = dict(_plan(kind))
    names = [f.name for f in msgspec.structs.fields(kind)]
    for name in names:
        if not name.isidentifier():  # pragma: no cover - every field of the model is one
            raise TypeError(f"{kind.__name__}.{name} is no identifier")
    vs = [f"v{i}" for i in range(len(names))]
    cs = list(vs)  # what the twin gets: the value itself, unless made canonical below
    lines = ["def walk(value):", "    changes = None"]
    if names:
        lines.append(f"    {', '.join(vs)}, = astuple(value)")
    scope: dict[str, Any] = {"astuple": msgspec.structs.astuple, "_walk": _walk, "_Bad": _Bad,
                             "_bad_match": _bad_match, "_bad_currency": _bad_currency,
                             "ISO4217": MINOR_UNITS, "replace": msgspec.structs.replace,
                             "Decimal": Decimal, "datetime": datetime, "_decimal": _decimal,
                             "_utc": _utc, "twin": twin, "UNSET": msgspec.UNSET, "UTC": UTC}
    for i, name in enumerate(names):
        v = vs[i]
        if name in plan and plan[name] is not None:  # a constrained string: match, keep
            pattern = plan[name]
            scope[f"p{i}"] = pattern
            if pattern is CURRENCY:
                # A code in ISO 4217's list matches the pattern (a test pins it): looked
                # up first, matched only to say why one that is not there is refused.
                lines += [f"    if {v} is not None and not (type({v}) is str and {v} in ISO4217):",
                          f"        if not isinstance({v}, str) or not p{i}.search({v}):",
                          f"            raise _bad_match({name!r}, {v}, p{i})",
                          f"        raise _bad_currency({name!r}, {v})"]
                continue
            lines += [f"    if {v} is not None:",
                      f"        if not isinstance({v}, str) or not p{i}.search({v}):",
                      f"            raise _bad_match({name!r}, {v}, p{i})"]
            continue
        if name not in plan and plain[i]:
            continue  # nothing to check, written as it is
        c = cs[i] = f"c{i}"
        # None, UNSET (a field added later, left out) and an empty list are written as
        # they are and need no look: most of an entity's fields that are not plain.
        lines += [f"    {c} = {v}",
                  f"    if {v} is not None and {v} is not UNSET and ({v} or type({v}) is not list):"]
        if plain[i]:  # an instant: made UTC, then written as it is
            lines += [f"        if type({v}) is datetime and {v}.tzinfo is UTC:",
                      f"            new = {v}",
                      "        else:",
                      f"            new = _utc({v}) if type({v}) is datetime else _walk({v})[0]"]
        else:
            lines += ["        try:",  # a decimal, the common case, without `_walk`'s tests
                      f"            new, canon = _decimal({v}) if type({v}) is Decimal else _walk({v})",
                      "        except _Bad as bad:",
                      f"            bad.path.append({name!r})",
                      "            raise"]
        lines += [f"        if new is not {v}:",
                  "            if changes is None:",
                  "                changes = {}",
                  f"            changes[{name!r}] = new",
                  f"        {c} = {'new' if plain[i] else 'canon'}"]
    lines.append(f"    return (replace(value, **changes) if changes else value), twin({', '.join(cs)})")
    exec("\n".join(lines), scope)  # noqa: S102 - code made here from the type's own fields
    walk: Callable[[Any], Walked] = scope["walk"]
    return walk


def _rejected(bad: _Bad) -> Rejected:
    path = ""
    for part in reversed(bad.path):
        path += part if part.startswith("[") or not path else "." + part
    return Rejected(f"{path}: {bad.reason}" if path else bad.reason)


def walked(entity: Any) -> tuple[Any, bytes]:
    """(the entity with amounts, instants and floats made safe, its canonical JSON: the
    values `digest` hashes), or `Rejected` naming the field. One walk for both."""
    try:
        fixed, canon = _walk(entity)
    except _Bad as bad:
        raise _rejected(bad) from None
    return fixed, _json.encode(canon)


def checked(entity: Any) -> Any:
    """The entity with amounts, instants and floats made safe, or `Rejected` naming the field."""
    return walked(entity)[0]


def canonical(entity: Any) -> bytes:
    """The entity's values as canonical JSON (`canonical`'s module docstring); checked first."""
    return walked(entity)[1]


def digest(entity: Any) -> str:
    """SHA-256 of `canonical(entity)`, in hex: what versions carry."""
    return hashlib.sha256(canonical(entity)).hexdigest()
