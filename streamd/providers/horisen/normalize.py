"""HORISEN finance documents → unified entities. Pure: one document's raw JSON bytes (an
item of a documents-export page), its traffic-report rows and `received_at` in, a
`NormalizedDocument` out, or `Rejected` with a reason that names the document (its id when
it can be read) and the field. No sockets, no clock. The mapping table is
docs/providers/horisen.md.

- The key is the document's `id` (`document_key` reads it alone, so a document that does
  not normalize can still be tracked by the poller).
- Stamps (`statusDt`, `insertDt`) are `YYYY-MM-DD HH:MM:SS`, read as UTC, or RFC 3339 with
  an offset or `Z` (converted to UTC). HORISEN writes no zone and documents none; UTC is
  what a server-side stamp without a zone most often is, and nothing streamd decides
  depends on it being right: the poller's cursor compares HORISEN's stamps only with
  each other, so a platform on local time shifts `time` and `updated_at` by its offset
  and loses no change. A date is the date in the source's `timezone` (Zurich unless
  configured): as written, unless it is a stamp with an offset (`model/fields.py`).
- Kind and status follow `model/rules.py`, as for every provider: a negative `total` is a
  credit note; `paymentStatus` says paid or partially paid, else an open document with a
  `totalUnpaid` between 0 and `total` is partially paid.
- `time` is `statusDt`, else `insertDt`, else when streamd received the document.
- Amounts stay `Decimal` from the wire to the feed, as sent (`net + tax` that differs from
  `total` is neither corrected nor refused). A document whose `total` is below zero is a
  credit note (HORISEN lists no document type).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import localcontext
from typing import get_args
from zoneinfo import ZoneInfo

import msgspec

from ...errors import Rejected
from ...model import Address, Invoice, InvoiceLine, Party, PartyRef, TrafficLine, rules
from ...model.check import checked
from ...model.entities import InvoiceStatus
from ...model.fields import COUNTRY as _COUNTRY
from ...model.fields import DECODE_ERRORS as _DECODE_ERRORS
from ...model.fields import MAX_FRACTION_DIGITS, MAX_INTEGER_DIGITS
from ...model.fields import amount as _amount
from ...model.fields import code as _code
from ...model.fields import currency as _currency
from ...model.fields import day as _date
from ...model.fields import ident as _ident
from ...model.fields import instant as _instant
from ...model.fields import text as _text
from ...model.fields import utc as _utc
from . import wire

#: An amount with more digits than this before the point, or after it, is refused: no
#: ledger holds one (SQL's decimal(38) is the widest), and it keeps `1E+999999` from
#: becoming a huge integer and `1E-999999` from becoming a huge string.


#: The business time zone when the source configures none.
ZONE = ZoneInfo(wire.TIMEZONE)
_UNIFIED: dict[str, InvoiceStatus] = {s: s for s in get_args(InvoiceStatus)}
#: `wire.DOCUMENT_STATUS`, typed (a unified status the model does not know fails at import).
_STATUS: dict[str, InvoiceStatus] = {k: _UNIFIED[v] for k, v in wire.DOCUMENT_STATUS.items()}


class _Id(msgspec.Struct):
    id: int | str


_id_decoder = msgspec.json.Decoder(_Id)


@dataclass(frozen=True)
class NormalizedDocument:
    key: str  # str(document id)
    invoice: Invoice  # checked for the feed, traffic lines included when given
    party: tuple[str, Party] | None  # (str(bizPartnerId), the customer); None without bizPartnerId
    time: datetime  # UTC: statusDt, else insertDt, else received_at
    status_dt: str | None  # `statusDt` as sent (the poller's changed-since cursor); None when blank


def document_key(raw: bytes) -> str:
    """The document's id as a string, read alone. Raises `Rejected`."""
    try:
        key = str(_id_decoder.decode(raw).id)
    except _DECODE_ERRORS as exc:
        raise Rejected(f"document: no usable id: {exc}") from None
    if not key.strip():
        raise Rejected("document: no usable id: `id` is empty")
    return key


def normalize_document(
    raw: bytes, traffic: Sequence[bytes] | None, *, received_at: datetime, zone: tzinfo = ZONE
) -> NormalizedDocument:
    """One document (and its traffic-report rows, when fetched) → `NormalizedDocument`, or
    `Rejected` with a reason such as "document 123: currencyCode: 'EURO' is not an ISO 4217 code"."""
    try:
        doc = wire.document_decoder.decode(raw)
    except _DECODE_ERRORS as exc:
        try:
            where = f"document {document_key(raw)}"
        except Rejected:
            where = "document"
        raise Rejected(f"{where}: {exc}") from None
    key = str(doc.id)
    if not key.strip():
        raise Rejected("document: no usable id: `id` is empty")
    try:
        lines: list[TrafficLine] = []
        for i, row in enumerate(traffic or ()):
            try:
                lines.append(_traffic(row))
            except Rejected as exc:
                raise Rejected(f"traffic[{i}]: {exc.reason}") from None
        invoice = checked(_invoice(doc, lines, zone))
        party_key = _ident(doc.bizPartnerId)
        party = (party_key, checked(_party(doc))) if party_key is not None else None
    except Rejected as exc:
        raise Rejected(f"document {key}: {exc.reason}") from None
    time = invoice.updated_at or invoice.created_at or _utc(received_at)
    return NormalizedDocument(key=key, invoice=invoice, party=party, time=time,
                              status_dt=doc.statusDt if _text(doc.statusDt) else None)


def normalize_traffic(raw: bytes) -> TrafficLine:
    """One traffic-report row → `TrafficLine`, or `Rejected` ("traffic row: …")."""
    try:
        line: TrafficLine = checked(_traffic(raw))
    except Rejected as exc:
        raise Rejected(f"traffic row: {exc.reason}") from None
    return line


def traffic_rows(raw: bytes) -> list[bytes]:
    """The traffic-report answer `{"data": [rows]}` → each row's raw bytes."""
    try:
        answer = wire.traffic_reports_decoder.decode(raw)
    except _DECODE_ERRORS as exc:
        raise Rejected(f"traffic reports: {exc}") from None
    return [bytes(row) for row in answer.data]


# ---------------------------------------------------------------- builders

def _invoice(doc: wire.Document, traffic: list[TrafficLine], zone: tzinfo) -> Invoice:
    currency = _currency(doc.currencyCode, "currencyCode")
    if currency is None:
        raise Rejected("currencyCode missing")
    total = _amount(doc.total, "total")
    if total is None:
        raise Rejected("total missing")
    unpaid = _amount(doc.totalUnpaid, "totalUnpaid")
    status, payment = _text(doc.status), _text(doc.paymentStatus)
    unified: InvoiceStatus = _STATUS.get(status.lower(), "unknown") if status else "unknown"
    paid_on = _date(doc.paymentStatusDate, "paymentStatusDate", zone)
    paying = payment.lower() if payment else None
    if unified == "open" and paying in ("paid", "partially_paid"):
        unified = "paid" if paying == "paid" else "partially_paid"
    converted = _currency(doc.domesticCurrencyCode, "domesticCurrencyCode")
    start = _date(doc.periodStart, "periodStart", zone)
    end = _date(doc.periodEnd, "periodEnd", zone)
    party_key = _ident(doc.bizPartnerId)
    party = None
    if party_key is not None:
        bp = doc.bizPartner or wire.BizPartner()
        party = PartyRef(key=party_key, name=_text(bp.name), number=_text(doc.bizPartnerExternalRefId),
                         vat_number=_text(bp.vatNumber), address=_address(bp))
    invoice = Invoice(
        kind="invoice", direction="receivable",
        number=_text(doc.documentNumber), uuid=_text(doc.documentUuid), party=party,
        issued=_date(doc.documentDate, "documentDate", zone), due=_date(doc.dueDate, "dueDate", zone),
        period_start=start, period_end=end, paid=paid_on if paying == "paid" else None,
        status=unified,
        provider_status=f"{status or '-'}/{payment or '-'}" if status or payment else None,
        currency=currency, net=_amount(doc.amountNoVat, "amountNoVat"),
        tax=_amount(doc.amountVat, "amountVat"), total=total, unpaid=unpaid,
        paid_amount=_amount(doc.totalPaid, "totalPaid"), converted_currency=converted,
        converted_total=_amount(doc.domesticTotal, "domesticTotal") if converted else None,
        conversion_rate=_amount(doc.domesticCurrencyRate, "domesticCurrencyRate") if converted else None,
        description=f"Period {start.isoformat()} – {end.isoformat()}" if start and end else None,
        lines=[_line(item, f"items[{i}]") for i, item in enumerate(doc.items)],
        traffic=traffic,
        created_at=_instant(doc.insertDt, "insertDt"), updated_at=_instant(doc.statusDt, "statusDt"))
    return rules.unified(invoice)


def _line(item: wire.Item, at: str) -> InvoiceLine:
    net, tax = _amount(item.totalNoVat, f"{at}.totalNoVat"), _amount(item.totalVat, f"{at}.totalVat")
    total = None
    if net is not None and tax is not None:
        with localcontext() as ctx:  # wide enough for any two amounts `_amount` lets through
            ctx.prec = MAX_INTEGER_DIGITS + MAX_FRACTION_DIGITS + 2
            total = net + tax
    return InvoiceLine(
        description=_text(item.name), quantity=_amount(item.quantity, f"{at}.quantity"),
        unit_price=_amount(item.price, f"{at}.price"), net=net, tax=tax, total=total)


def _address(bp: wire.BizPartner) -> Address | None:
    line1, postal, city = _text(bp.address), _text(bp.zip), _text(bp.city)
    country = _code(bp.countryCode, "bizPartner.countryCode", _COUNTRY, "an ISO 3166-1 alpha-2 code")
    if line1 or postal or city or country:
        return Address(line1=line1, postal_code=postal, city=city, country=country)
    return None


def _party(doc: wire.Document) -> Party:
    bp = doc.bizPartner or wire.BizPartner()
    return Party(
        roles=["customer"], name=_text(bp.name), number=_text(doc.bizPartnerExternalRefId),
        email=_text(bp.email), vat_number=_text(bp.vatNumber),
        registration_number=_text(bp.registrationNumber), address=_address(bp))


def _traffic(raw: bytes) -> TrafficLine:
    try:
        row = wire.traffic_report_decoder.decode(raw)
    except _DECODE_ERRORS as exc:
        raise Rejected(str(exc)) from None
    if row.messageCount is not None and row.messageCount < 0:
        raise Rejected(f"messageCount: {row.messageCount} is negative")
    return TrafficLine(
        pricing=_text(row.pricingConditionName), country=_text(row.countryName),
        operator=_text(row.operatorName), mcc=_ident(row.mcc), mnc=_ident(row.mnc),
        messages=row.messageCount, unit_price=_amount(row.pricePerMessage, "pricePerMessage"),
        amount=_amount(row.totalAmount, "totalAmount"),
        currency=_currency(row.sellCurrencyCode, "sellCurrencyCode"))
