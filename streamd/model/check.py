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

import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import msgspec.inspect

from ..errors import NotAnAmount, Rejected
from .fields import CURRENCY, bounded, is_currency


class _Bad(Exception):
    """A value the feed must not carry; `path` is filled in on the way out."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.path: list[str] = []


def _fix(value: Any) -> Any:
    # Exact types first: this runs for every field of every event.
    kind = type(value)
    if kind is str or kind is bool or value is None:  # most of a Record's attributes
        return value
    if kind is Decimal:
        try:
            return bounded(value)
        except NotAnAmount as exc:
            raise _Bad(str(exc)) from None
    if kind is datetime:
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        if value.utcoffset():
            return value.astimezone(UTC)
        return value
    if kind is float:
        return _fix(Decimal(repr(value)))
    if kind is int:  # reached only inside a Record's attributes (see `_plan`); bool is no int here
        return _fix(Decimal(value))
    if isinstance(value, msgspec.Struct):
        fixer = _fixers.get(kind)
        if fixer is None:
            fixer = _fixers[kind] = _fixer(kind)
        return fixer(value)
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
                # The currency pattern is the shared object: `_fix` also looks the code up.
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


_fixers: dict[type, Callable[[Any], Any]] = {}


def _fixer(kind: type) -> Callable[[Any], Any]:
    """`_fix` for one Struct type, as one function made from its `_plan`: each field that
    needs a look read and looked at in straight-line code. A loop over the plan cost as
    much again as the looks themselves, for every entity of every event."""
    lines = ["def fix(value):", "    changes = None"]
    scope: dict[str, Any] = {"_fix": _fix, "_Bad": _Bad, "_bad_match": _bad_match,
                             "_bad_currency": _bad_currency, "is_currency": is_currency,
                             "replace": msgspec.structs.replace}
    for i, (name, pattern) in enumerate(_plan(kind)):
        if not name.isidentifier():  # pragma: no cover - every field of the model is one
            raise TypeError(f"{kind.__name__}.{name} is no identifier")
        lines.append(f"    old = value.{name}")
        lines.append("    if old is not None:")
        if pattern is not None:
            scope[f"p{i}"] = pattern
            lines += [f"        if not isinstance(old, str) or not p{i}.search(old):",
                      f"            raise _bad_match({name!r}, old, p{i})"]
            if pattern is CURRENCY:
                lines += ["        if not is_currency(old):",
                          f"            raise _bad_currency({name!r}, old)"]
            continue
        lines += ["        try:",
                  "            new = _fix(old)",
                  "        except _Bad as bad:",
                  f"            bad.path.append({name!r})",
                  "            raise",
                  "        if new is not old:",
                  "            if changes is None:",
                  "                changes = {}",
                  f"            changes[{name!r}] = new"]
    lines.append("    return replace(value, **changes) if changes else value")
    exec("\n".join(lines), scope)  # noqa: S102 - code made here from the type's own fields
    fix: Callable[[Any], Any] = scope["fix"]
    return fix


def checked(entity: Any) -> Any:
    """The entity with amounts, instants and floats made safe, or `Rejected` naming the field."""
    try:
        return _fix(entity)
    except _Bad as bad:
        path = ""
        for part in reversed(bad.path):
            path += part if part.startswith("[") or not path else "." + part
        raise Rejected(f"{path}: {bad.reason}" if path else bad.reason) from None
