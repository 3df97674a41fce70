"""Checks of single wire values that every normalizer makes the same way. Pure; each
raises `Rejected` with a reason naming the field (`field` is the caller's path to it).

- Text: surrounding blanks dropped, an empty string is no value.
- Codes (currency, country) are upper-cased, then must match their ISO pattern.
- Amounts: finite, at most `MAX_INTEGER_DIGITS` before the point (no ledger holds more;
  it keeps `1E+999999` from becoming a huge integer) and `MAX_FRACTION_DIGITS` after it
  (it keeps `1E-999999999` from becoming a billion zeros when written out), counted as
  written, whatever the form: `0.10` has two digits after the point, `1E-3` three;
  `1E+2` becomes `100`, exactly, and a negative zero loses its sign (`-0.00` is `0.00`:
  no consumer should have to tell them apart). `bounded` is that check alone:
  `model/check.py` applies it to every decimal of every entity, so no provider can skip it.
- Instants: RFC 3339 or `YYYY-MM-DD HH:MM:SS`, to UTC (no offset: UTC). Dates:
  `YYYY-MM-DD`, or the date part of a stamp as written (no zone conversion).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal

import msgspec

from ..errors import Rejected

MAX_INTEGER_DIGITS = 38
MAX_FRACTION_DIGITS = 38
CURRENCY = re.compile(r"^[A-Z]{3}$")
COUNTRY = re.compile(r"^[A-Z]{2}$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?$")
#: What decoding a provider's bytes can raise (deep nesting is a RecursionError).
DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


def utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def text(value: str | None) -> str | None:
    """Surrounding blanks dropped; an empty string is no value."""
    return (value.strip() or None) if value is not None else None


def ident(value: str | int | None) -> str | None:
    """An id or code as a string: an int in its decimal digits, a string as sent ("01")."""
    return str(value) if isinstance(value, int) else text(value)


def code(value: str | None, field: str, pattern: re.Pattern[str], what: str) -> str | None:
    got = text(value)
    if got is None:
        return None
    got = got.upper()
    if not pattern.match(got):
        raise Rejected(f"{field}: {value!r} is not {what}")
    return got


def currency(value: str | None, field: str) -> str | None:
    return code(value, field, CURRENCY, "an ISO 4217 code")


class NotAnAmount(ValueError):
    """Why a decimal is no amount the feed may carry (the caller adds the field)."""


#: Longer than this, a refused value is shown by its ends and its length: a reason is
#: logged, and a 900,000-digit number must not be.
_SHOWN = 40


def _shown(value: Decimal) -> str:
    text = str(value)
    if len(text) <= _SHOWN:
        return text
    return f"{text[:16]}…{text[-8:]} ({len(value.as_tuple().digits)} digits)"


def bounded(value: Decimal) -> Decimal:
    """`value` as the feed carries an amount, or `NotAnAmount`.

    Bounded in cost by what was decoded (the body limit): `adjusted()` is O(1) and
    refuses every huge exponent first; only then is `as_tuple()`, linear in the digits
    sent, asked for the exponent."""
    if not value.is_finite():
        raise NotAnAmount(f"{_shown(value)} is not an amount")
    if value and value.adjusted() >= MAX_INTEGER_DIGITS:
        raise NotAnAmount(f"{_shown(value)} is out of range "
                          f"(more than {MAX_INTEGER_DIGITS} digits before the point)")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if exponent < -MAX_FRACTION_DIGITS:
        raise NotAnAmount(f"{_shown(value)} is out of range "
                          f"(more than {MAX_FRACTION_DIGITS} digits after the point)")
    if exponent > 0:
        return Decimal(int(value))  # "1E+2" → 100, exactly (and "-0E+2" → 0)
    return value.copy_abs() if not value and value.is_signed() else value  # "-0.00" → "0.00"


def amount(value: Decimal | None, field: str) -> Decimal | None:
    if value is None:
        return None
    try:
        return bounded(value)
    except NotAnAmount as exc:
        raise Rejected(f"{field}: {exc}") from None


def instant(value: str | None, field: str) -> datetime | None:
    """A stamp as a UTC instant; without an offset it is UTC."""
    got = text(value)
    if got is None:
        return None
    try:
        if STAMP.match(got):
            return utc(datetime.fromisoformat(got))
    except ValueError:
        pass
    except OverflowError:
        raise Rejected(f"{field}: {value!r} is out of range") from None
    raise Rejected(f"{field}: {value!r} is not a date-time")


def day(value: str | None, field: str) -> date | None:
    """A date, or the date part of a stamp as written (no zone conversion)."""
    got = text(value)
    if got is None:
        return None
    try:
        if DATE.match(got):
            return date.fromisoformat(got)
        if STAMP.match(got):
            return datetime.fromisoformat(got).date()
    except ValueError:
        pass
    raise Rejected(f"{field}: {value!r} is not a date")
