"""Asperion records → unified entities. Pure: (resource, one record's raw JSON bytes,
received_at) in, a `Normalized` out, or `Rejected` with a reason that names the record
and the field. No sockets, no clock. The mapping table is docs/providers/asperion.md.

- The key is the record's `id` (`record_key` reads it alone, so a record that does not
  normalize can still be tracked by the poller).
- Stamps without an offset are Asperion local time (`wire.LOCAL_ZONE`) and become UTC;
  stamps with an offset or `Z` are taken as written. Date-only fields keep the date as
  written, with no zone conversion.
- `time` is `dateLastChange` when the record has one, else when streamd received it.
- Amounts stay `Decimal` from the wire to the feed; the provider's numbers are kept as
  sent (a `net + tax` that differs from `total` is not corrected, nor refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

import msgspec

from ...errors import Rejected
from ...model import Address, Invoice, Party, PartyRef, Product
from ...model.check import checked
from ...model.entities import Entity, InvoiceStatus
from ...model.fields import COUNTRY, DECODE_ERRORS, amount, code, currency, ident, text, utc
from . import wire

#: The default currency of invoices and articles that name none [I]: Asperion is Dutch.
DEFAULT_CURRENCY = "EUR"
#: Status code of a paid invoice: with no `amountOpen`, its `unpaid` is 0.
PAID = 7
_LOCAL = ZoneInfo(wire.LOCAL_ZONE)
#: .NET's `DateTime.MinValue` (`0001-01-01T00:00:00`) is how .NET APIs write "no date" [I].
_NO_DATE = date(1, 1, 1)

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


def normalize_record(resource: str, raw: bytes, *, received_at: datetime) -> Normalized:
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
            data, stamp = _party(rec)
        elif isinstance(rec, wire.SalesInvoice):
            data = _invoice(rec)
        elif isinstance(rec, wire.Article):
            data, stamp = _product(rec)
        else:  # pragma: no cover - RECORD_TYPES holds only the three
            raise Rejected(f"no mapping for {type(rec).__name__}")
        data = checked(data)
    except Rejected as exc:
        raise Rejected(f"{resource} {key}: {exc.reason}") from None
    return Normalized(entity=wire.RESOURCES[resource], key=key, data=data,
                      time=stamp or utc(received_at))


# ---------------------------------------------------------------- helpers

def _parse(value: str, field: str) -> datetime | None:
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise Rejected(f"{field}: {value!r} is not a date-time") from None
    return None if t.date() == _NO_DATE else t


def _instant(value: str | None, field: str) -> datetime | None:
    """A stamp as a UTC instant. Without an offset it is Asperion local time."""
    if value is None or not value.strip():
        return None
    t = _parse(value.strip(), field)
    if t is None:
        return None
    try:
        return (t if t.tzinfo else t.replace(tzinfo=_LOCAL)).astimezone(UTC)
    except OverflowError:
        raise Rejected(f"{field}: {value!r} is out of range") from None


def _date(value: str | None, field: str) -> date | None:
    """The date part as written (`2026-03-01T00:00:00` and `2026-03-01` → 2026-03-01)."""
    if value is None or not value.strip():
        return None
    t = _parse(value.strip(), field)
    return t.date() if t else None


# ---------------------------------------------------------------- one builder per resource

def _party(d: wire.Debtor) -> tuple[Party, datetime | None]:
    street, postal, city = text(d.street), text(d.postalCode), text(d.city)
    country = code(d.countryCode, "countryCode", COUNTRY, "an ISO 3166-1 alpha-2 country code")
    address = None
    if street or postal or city or country:
        address = Address(line1=street, postal_code=postal, city=city, country=country)
    iban = "".join(d.iban.split()).upper() if d.iban else ""
    updated = _instant(d.dateLastChange, "dateLastChange")
    party = Party(
        roles=["customer"], name=text(d.name), number=ident(d.customerNumber),
        email=text(d.emailAddress), phone=text(d.phoneNumber), vat_number=text(d.vatNumber),
        iban=iban or None, address=address, currency=currency(d.currencyCode, "currencyCode"),
        active=None if d.blocked is None else not d.blocked,
        created_at=_instant(d.dateAdded, "dateAdded"), updated_at=updated)
    return party, updated


def _invoice(s: wire.SalesInvoice) -> Invoice:
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
    kind: Literal["invoice", "credit_note"] = "credit_note" if total < 0 else "invoice"
    return Invoice(
        kind=kind, direction="receivable", number=ident(s.invoiceNumber),
        party=PartyRef(key=key, name=name, number=number) if key or name or number else None,
        issued=_date(s.date, "date"), due=_date(s.paymentDueDate, "paymentDueDate"),
        status=status, provider_status=provider_status,
        currency=currency(s.currencyCode, "currencyCode") or DEFAULT_CURRENCY,
        net=amount(s.amountExclVat, "amountExclVat"), tax=amount(s.vatAmount, "vatAmount"),
        total=total, unpaid=unpaid, description=text(s.description))


def _product(a: wire.Article) -> tuple[Product, datetime | None]:
    updated = _instant(a.dateLastChange, "dateLastChange")
    product = Product(
        name=text(a.description), number=text(a.code), unit=text(a.unit),
        unit_price=amount(a.salesPrice, "salesPrice"),
        currency=currency(a.currencyCode, "currencyCode") or DEFAULT_CURRENCY,
        tax_rate=amount(a.vatPercentage, "vatPercentage"),
        active=None if a.blocked is None else not a.blocked,
        created_at=_instant(a.dateAdded, "dateAdded"), updated_at=updated)
    return product, updated
