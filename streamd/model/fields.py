"""Checks of single wire values that every normalizer makes the same way. Pure; each
raises `Rejected` with a reason naming the field (`field` is the caller's path to it).

- Text: surrounding blanks dropped, an empty string is no value.
- Codes (currency, country) are upper-cased, then must match their ISO pattern; a
  currency must also be in ISO 4217 List One (`iso4217`: `XYZ` is refused).
- Amounts: finite, at most `MAX_INTEGER_DIGITS` before the point (no ledger holds more;
  it keeps `1E+999999` from becoming a huge integer) and `MAX_FRACTION_DIGITS` after it
  (it keeps `1E-999999999` from becoming a billion zeros when written out), counted as
  written, whatever the form: `0.10` has two digits after the point, `1E-3` three;
  `1E+2` becomes `100`, exactly, and a negative zero loses its sign (`-0.00` is `0.00`:
  no consumer should have to tell them apart). `bounded` is that check alone:
  `model/check.py` applies it to every decimal of every entity, so no provider can skip it.
- Instants: RFC 3339 or `YYYY-MM-DD HH:MM:SS`, to UTC; a stamp without an offset is in
  the zone the caller names (UTC unless the provider documents otherwise).
- Dates: one rule for every provider. A date is the date in the provider's business time
  zone (the source's `timezone`): `YYYY-MM-DD` as written; a stamp with an offset or `Z`
  is converted to that zone first (Asteria writes 25 December in Stockholm as
  `2021-12-24T23:00:00.000Z`); a stamp without an offset in a date field is local time
  there, its date as written.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal

import msgspec

from ..errors import NotAnAmount, Rejected
from .iso4217 import MINOR_UNITS

MAX_INTEGER_DIGITS = 38
MAX_FRACTION_DIGITS = 38
CURRENCY = re.compile(r"^[A-Z]{3}\Z")
COUNTRY = re.compile(r"^[A-Z]{2}\Z")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?\Z")
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
    """An ISO 4217 code (upper-cased), or `Rejected`: the pattern alone would let `XYZ` in."""
    if type(value) is str and value in MINOR_UNITS:  # as it should be written: looked up, not matched
        return value
    got = code(value, field, CURRENCY, "an ISO 4217 code")
    if got is not None and got not in MINOR_UNITS:
        raise Rejected(f"{field}: {value!r} is not an ISO 4217 currency code")
    return got


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
    # Every amount a ledger holds is written without an exponent ("125.00"): its digits
    # before and after the point are read off that text, with no call to the decimal
    # (this runs for every amount of every event, twice). `as_tuple()`, which builds a
    # tuple of every digit, stays the way for the rest ("1E+2", "1E-7"), after
    # `adjusted()`, O(1), has refused every huge exponent.
    text = str(value)
    if "E" not in text:
        point = text.find(".")
        if point < 0:
            point = len(text)
        # No leading zeros but a lone "0" before the point, so its digits are what
        # `adjusted()` counts: the sign aside, `point` of them.
        if point - (text[0] == "-") > MAX_INTEGER_DIGITS:
            raise NotAnAmount(f"{_shown(value)} is out of range "
                              f"(more than {MAX_INTEGER_DIGITS} digits before the point)")
        exponent = point + 1 - len(text) if point < len(text) else 0
    else:
        if value and value.adjusted() >= MAX_INTEGER_DIGITS:
            raise NotAnAmount(f"{_shown(value)} is out of range "
                              f"(more than {MAX_INTEGER_DIGITS} digits before the point)")
        written = value.as_tuple().exponent
        assert isinstance(written, int)  # finite
        exponent = written
    if exponent < -MAX_FRACTION_DIGITS:
        raise NotAnAmount(f"{_shown(value)} is out of range "
                          f"(more than {MAX_FRACTION_DIGITS} digits after the point)")
    if exponent > 0:
        return Decimal(int(value))  # "1E+2" → 100, exactly (and "-0E+2" → 0)
    return value.copy_abs() if not value and value.is_signed() else value  # "-0.00" → "0.00"


def amount(value: Decimal | None, field: str, within: str = "") -> Decimal | None:
    """`bounded`, or `Rejected` naming the field: `within.field` when it is in a part of the
    payload (the path is written only for a refusal: this runs for every amount)."""
    if value is None:
        return None
    try:
        return bounded(value)
    except NotAnAmount as exc:
        raise Rejected(f"{within}.{field}: {exc}" if within else f"{field}: {exc}") from None


def instant(value: str | None, field: str, naive: tzinfo = UTC) -> datetime | None:
    """A stamp as a UTC instant; without an offset it is in `naive` (UTC unless the
    provider documents its stamps as local time)."""
    if value is None:
        return None
    got = value.strip()  # `text`, written out: this runs for every stamp of every event
    if not got:
        return None
    try:
        if STAMP.match(got):
            t = datetime.fromisoformat(got)
            return (t if t.tzinfo else t.replace(tzinfo=naive)).astimezone(UTC)
    except ValueError:
        pass
    except OverflowError:
        raise Rejected(f"{field}: {value!r} is out of range") from None
    raise Rejected(f"{field}: {value!r} is not a date-time")


def day(value: str | None, field: str, zone: tzinfo) -> date | None:
    """The date in the provider's business time zone `zone`: a date as written; a stamp
    with an offset (or `Z`) converted to `zone` first; one without an offset in a date
    field is local business time (HORISEN's period end `2023-06-30 23:59:59`), its date as
    written."""
    if value is None:
        return None
    try:
        return _day(value, zone)
    except _OutOfRange:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise Rejected(f"{field}: {value!r} is out of range") from None
    except ValueError:
        raise Rejected(f"{field}: {value!r} is not a date") from None


class _OutOfRange(Exception):
    pass


@functools.lru_cache(maxsize=1024)
def _day(value: str, zone: tzinfo) -> date | None:
    """`day` without the field's name, kept for the last 1,024 (value, zone): a ledger's
    dates repeat (due dates, a day's stamps at local midnight), and reading one, its time
    zone included, costs ten times looking it up. Only results are kept: a refusal is
    raised again each time (`lru_cache` keeps no exceptions)."""
    got = value.strip()  # `text`, written out: this runs for every date of every event
    if not got:
        return None
    try:
        if len(got) == 10 and DATE.match(got):  # (ten characters, whatever digits: not a stamp)
            return date.fromisoformat(got)
        if STAMP.match(got):
            t = datetime.fromisoformat(got)
            return (t.astimezone(zone) if t.tzinfo else t).date()
    except OverflowError:
        raise _OutOfRange from None
    raise ValueError(value)
