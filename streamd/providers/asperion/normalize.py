"""Asperion records → unified entities. Pure: (resource, one record's raw JSON bytes,
received_at) in, a `Normalized` out, or `Rejected` with a reason that names the record
and the field. No sockets, no clock. The mapping table is docs/providers/asperion.md.

- The key is the record's `id` (`record_key` reads it alone, so a record that does not
  normalize can still be tracked by the poller).
- Stamps without an offset are Asperion local time (the source's `timezone`, by default
  `wire.LOCAL_ZONE`) and become UTC; stamps with an offset or `Z` are taken as written. A
  date is the date in that zone, by `model/fields.py`'s one rule (`2026-03-01T00:00:00` is
  the 1st). .NET's `0001-01-01T00:00:00` is no date.
- `time` is `dateLastChange` when the record has one, else when streamd received it.
- Amounts stay `Decimal` from the wire to the feed; the provider's numbers are kept as
  sent (a `net + tax` that differs from `total` is not corrected, nor refused).
- Kind and status follow `model/rules.py`, as for every provider. Lines come from the
  with-lines resource (`wire.LISTING_PATHS`). The fields streamd infers are named, each
  once, in `wire.INFERRED`, with the test that shows what happens when the guess is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from decimal import Decimal
from typing import Any, get_args
from zoneinfo import ZoneInfo

import msgspec

from ...errors import Rejected
from ...model import Address, Invoice, InvoiceLine, Party, PartyRef, Product, rules
from ...model.check import checked
from ...model.entities import Entity, InvoiceStatus
from ...model.fields import (
    COUNTRY,
    DATE,
    DECODE_ERRORS,
    amount,
    code,
    currency,
    day,
    ident,
    instant,
    text,
    utc,
)
from . import wire

#: The default currency of invoices and articles that name none [I]: Asperion is Dutch.
DEFAULT_CURRENCY = "EUR"
#: Status code of a paid invoice: with no `amountOpen`, its `unpaid` is 0.
PAID = 7
#: The business time zone when the source configures none.
ZONE = ZoneInfo(wire.LOCAL_ZONE)
#: .NET's `DateTime.MinValue` (`0001-01-01T00:00:00`) is how .NET APIs write "no date" [I].
_NO_DATE = "0001-01-01"

_UNIFIED: dict[str, InvoiceStatus] = {s: s for s in get_args(InvoiceStatus)}
#: `wire.INVOICE_STATUS`, typed (a unified status the model does not know fails at import).
_STATUS: dict[int, tuple[InvoiceStatus, str]] = {
    code: (_UNIFIED[unified], name) for code, (unified, name) in wire.INVOICE_STATUS.items()}

_decoders: dict[str, msgspec.json.Decoder[Any]] = {
    resource: msgspec.json.Decoder(kind) for resource, kind in wire.RECORD_TYPES.items()}


@dataclass(frozen=True)
class Normalized:
    entity: str  # "party" | "invoice" | "product"
    key: str  # str(record id)
    data: Entity  # the unified entity (Party / Invoice / Product), checked for the feed
    time: datetime  # when the record last changed, UTC: dateLastChange, else received_at


def record_key(raw: bytes) -> str:
    """The record's id as a string, read alone (so a record that does not normalize can
    still be tracked). Raises `Rejected`."""
    try:
        rec = wire.id_decoder.decode(raw)
    except DECODE_ERRORS as exc:  # nested too deeply for the decoder (RecursionError) too
        raise Rejected(f"no usable id: {exc}") from None
    key = str(rec.id)
    if not key:
        raise Rejected("no usable id: `id` is empty")
    return key


def normalize_record(resource: str, raw: bytes, *, received_at: datetime, zone: tzinfo = ZONE) -> Normalized:
    """One record of a list page (its raw JSON bytes; its `_meta` member is ignored) →
    `Normalized`, or `Rejected` with a reason such as 'salesinvoices 17: amountInclVat missing'."""
    decoder = _decoders.get(resource)
    if decoder is None or resource not in wire.RESOURCES:
        raise Rejected(f"unknown resource {resource!r}")
    try:
        rec = decoder.decode(raw)
    except DECODE_ERRORS as exc:
        try:
            where = f"{resource} {record_key(raw)}"
        except Rejected:
            where = resource
        raise Rejected(f"{where}: {exc}") from None
    key = str(rec.id)
    if not key:
        raise Rejected(f"{resource}: `id` is empty")
    try:
        data: Entity
        stamp: datetime | None = None
        if isinstance(rec, wire.Debtor):
            data, stamp = _party(rec, zone)
        elif isinstance(rec, wire.SalesInvoice):
            data = _invoice(rec, zone)
        elif isinstance(rec, wire.Article):
            data, stamp = _product(rec, zone)
        else:  # pragma: no cover - RECORD_TYPES holds only the three
            raise Rejected(f"no mapping for {type(rec).__name__}")
        data = checked(data)
    except Rejected as exc:
        raise Rejected(f"{resource} {key}: {exc.reason}") from None
    return Normalized(entity=wire.RESOURCES[resource], key=key, data=data,
                      time=stamp or utc(received_at))


# ---------------------------------------------------------------- helpers

def _no_date(value: str | None) -> bool:
    return value is not None and value.strip().startswith(_NO_DATE)


def _instant(value: str | None, field: str, zone: tzinfo) -> datetime | None:
    """A stamp as a UTC instant. Without an offset it is Asperion local time (`zone`); a
    date alone is its local midnight."""
    if value is None or _no_date(value):
        return None
    if DATE.match(value.strip()):
        value = value.strip() + "T00:00:00"
    return instant(value, field, naive=zone)


def _date(value: str | None, field: str, zone: tzinfo) -> date | None:
    """The date in `zone` (`2026-03-01T00:00:00` and `2026-03-01` → 2026-03-01)."""
    return None if _no_date(value) else day(value, field, zone)


# ---------------------------------------------------------------- one builder per resource

def _party(d: wire.Debtor, zone: tzinfo) -> tuple[Party, datetime | None]:
    street, postal, city = text(d.street), text(d.postalCode), text(d.city)
    country = code(d.countryCode, "countryCode", COUNTRY, "an ISO 3166-1 alpha-2 country code")
    address = None
    if street or postal or city or country:
        address = Address(line1=street, postal_code=postal, city=city, country=country)
    iban = "".join(d.iban.split()).upper() if d.iban else ""
    updated = _instant(d.dateLastChange, "dateLastChange", zone)
    party = Party(
        roles=["customer"], name=text(d.name), number=ident(d.customerNumber),
        email=text(d.emailAddress), phone=text(d.phoneNumber), vat_number=text(d.vatNumber),
        iban=iban or None, address=address, currency=currency(d.currencyCode, "currencyCode"),
        active=None if d.blocked is None else not d.blocked,
        created_at=_instant(d.dateAdded, "dateAdded", zone), updated_at=updated)
    return party, updated


def _invoice(s: wire.SalesInvoice, zone: tzinfo) -> Invoice:
    total = amount(s.amountInclVat, "amountInclVat")
    if total is None:
        raise Rejected("amountInclVat missing")
    status: InvoiceStatus = "unknown"
    provider_status = None
    if s.status is not None:
        status, provider_status = _STATUS.get(s.status, ("unknown", str(s.status)))
    unpaid = amount(s.amountOpen, "amountOpen")
    if unpaid is None and s.status == PAID:
        unpaid = Decimal(0)
    key, name, number = ident(s.debtorId), text(s.debtorName), ident(s.debtorCustomerNumber)
    lines = s.lines.data if s.lines else []
    return rules.unified(Invoice(
        kind="invoice", direction="receivable", number=ident(s.invoiceNumber),
        party=PartyRef(key=key, name=name, number=number) if key or name or number else None,
        issued=_date(s.date, "date", zone), due=_date(s.paymentDueDate, "paymentDueDate", zone),
        status=status, provider_status=provider_status,
        currency=currency(s.currencyCode, "currencyCode") or DEFAULT_CURRENCY,
        net=amount(s.amountExclVat, "amountExclVat"), tax=amount(s.vatAmount, "vatAmount"),
        total=total, unpaid=unpaid, description=text(s.description),
        lines=[_line(line, f"lines._data[{i}]") for i, line in enumerate(lines)]))


def _line(line: wire.SalesInvoiceLine, at: str) -> InvoiceLine:
    return InvoiceLine(description=text(line.description), net=amount(line.amount, f"{at}.amount"),
                       tax=amount(line.vatAmount, f"{at}.vatAmount"))


def _product(a: wire.Article, zone: tzinfo) -> tuple[Product, datetime | None]:
    updated = _instant(a.dateLastChange, "dateLastChange", zone)
    product = Product(
        name=text(a.description), number=text(a.code), unit=text(a.unit),
        unit_price=amount(a.salesPrice, "salesPrice"),
        currency=currency(a.currencyCode, "currencyCode") or DEFAULT_CURRENCY,
        tax_rate=amount(a.vatPercentage, "vatPercentage"),
        active=None if a.blocked is None else not a.blocked,
        created_at=_instant(a.dateAdded, "dateAdded", zone), updated_at=updated)
    return product, updated
