"""The simulated Connec! list endpoint's query language: `$filter` and `$orderby`
(simulator.py), pure functions of their text and an entity (records.py).

Documented [D]: `$filter=updated_at gt '2017-01-01T00:00:00Z'` and `$orderby`. Inferred
[I]: the operators `ge`, `lt`, `le`, `eq`, `created_at` too, clauses joined by `and`,
times compared as instants (any RFC 3339 offset or fraction), `asc`/`desc` after an
(optionally dotted) field, nulls first. Anything else is refused (BadQuery: a 400).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from .records import Entity, instant

FILTER_FIELDS = ("created_at", "updated_at")
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le, "eq": operator.eq}
_CLAUSE = re.compile(r"\s*([A-Za-z_]\w*)\s+([A-Za-z]+)\s+'([^']*)'\s*")
_AND = re.compile(r"and(?=\s)", re.IGNORECASE)
_ORDER = re.compile(r"\s*([A-Za-z_][\w.]*)(?:\s+(asc|desc))?\s*", re.IGNORECASE)


class BadQuery(ValueError):
    """A `$filter` or `$orderby` the simulator does not understand."""


def predicate(text: str) -> Callable[[Entity], bool]:
    """`$filter`: clauses `<created_at|updated_at> <gt|ge|lt|le|eq> '<RFC 3339>'` joined by
    `and`; BadQuery if it is not that."""
    tests: list[tuple[str, Callable[[Any, Any], bool], datetime]] = []
    pos = 0
    while True:
        m = _CLAUSE.match(text, pos)
        if m is None:
            raise BadQuery(f"cannot read $filter {text!r}: expected <field> <op> '<value>' at {pos}")
        name, op, value = m[1], m[2].lower(), m[3]
        if name not in FILTER_FIELDS:
            raise BadQuery(f"cannot filter on {name!r}: only on {' or '.join(FILTER_FIELDS)}")
        if op not in OPERATORS:
            raise BadQuery(f"unknown $filter operator {op!r}: one of {', '.join(OPERATORS)}")
        try:
            tests.append((name, OPERATORS[op], instant(value)))
        except ValueError:
            raise BadQuery(f"{value!r} is not an RFC 3339 time") from None
        if m.end() == len(text):
            break
        a = _AND.match(text, m.end())
        if a is None:
            raise BadQuery(f"cannot read $filter {text!r}: expected 'and' at {m.end()}")
        pos = a.end()

    def test(e: Entity) -> bool:
        try:
            return all(isinstance(e.get(name), str) and compare(instant(e[name]), bound)
                       for name, compare, bound in tests)
        except ValueError:  # a corrupted stamp matches nothing
            return False

    return test


def ordering(text: str) -> tuple[str, bool]:
    """`$orderby` as (field, descending): `field`, `field asc` or `field desc`; a dotted
    field reaches into an object (`amount.total_amount`)."""
    m = _ORDER.fullmatch(text)
    if m is None:
        raise BadQuery(f"cannot read $orderby {text!r}: expected '<field> [asc|desc]'")
    return m[1], (m[2] or "asc").lower() == "desc"


def sort_key(path: str) -> Callable[[Entity], tuple[int, int, Any]]:
    """Missing and null first, then numbers, text, booleans, anything else by its repr."""
    parts = path.split(".")

    def key(e: Entity) -> tuple[int, int, Any]:
        value: Any = e
        for part in parts:
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            return (0, 0, 0)
        if isinstance(value, bool):
            return (1, 2, value)
        if isinstance(value, int | float | Decimal):
            return (1, 0, value)
        return (1, 1, value) if isinstance(value, str) else (1, 3, repr(value))

    return key
