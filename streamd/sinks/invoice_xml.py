"""An invoice document as XML, for the SFTP sink. Pure: no I/O, no clock.

The format is `docs/horisen-invoice.xsd`, schema version 2 (namespace
`urn:streamd:horisen-invoice:2`, and the root says `schemaVersion="2"`); every document
`render` returns validates against it. The root says which document it is
(`documentId`, `op`, `revision`, `supersedes`: `documents`) and which feed event it came
from (`eventId`, `seq`, ...): a receiver deduplicates on `documentId`.

What the provider sent is written as sent. Two things an accountant needs are derived,
and marked `derived="true"`: a VAT rate (the provider sends amounts only) and, where
the document's own totals say how its conversion rate applies, the VAT and net amounts
in the domestic currency.

Values never reach the text by concatenation: ElementTree escapes them, characters
XML 1.0 cannot carry at all (most C0 controls) become U+FFFD, and amounts are plain
decimal strings ("1000.50", never "1.0005E+3").
"""

from __future__ import annotations

import datetime as dt
import html
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation, localcontext

from msgspec import UNSET

from ..model import Invoice, InvoiceLine
from ..model.entities import given
from ..model.fields import MAX_FRACTION_DIGITS, MAX_INTEGER_DIGITS
from ..store import FeedEvent
from .documents import Document

SCHEMA_VERSION = "2"
NS = f"urn:streamd:horisen-invoice:{SCHEMA_VERSION}"
XSD = "docs/horisen-invoice.xsd"  # relative to the repository root
#: A derived VAT rate has at most this many decimals (in percent: 8.125 %).
RATE_DECIMALS = 3

# Characters outside XML 1.0's Char production.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_DERIVED = {"derived": "true"}
_WIDE = MAX_INTEGER_DIGITS + MAX_FRACTION_DIGITS + 4  # digits any product of two amounts needs


def _text(value: object) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not an amount")
        return format(value, "f")
    if isinstance(value, dt.date):
        return value.isoformat()
    return _NOT_XML.sub("\ufffd", str(value))


def _add(parent: ET.Element, tag: str, value: object, attrs: dict[str, str] | None = None) -> None:
    """A child element holding `value`, unless it is None (or left out: UNSET)."""
    if value is not None and value is not UNSET:
        ET.SubElement(parent, tag, attrs or {}).text = _text(value)


def _attrs(**values: object) -> dict[str, str]:
    return {k: _text(v) for k, v in values.items() if v is not None and v is not UNSET}


def render(event: FeedEvent, invoice: Invoice, doc: Document) -> bytes:
    """Document `doc` of an invoice, as event `event` shows it: UTF-8, with an XML
    declaration. Raises ValueError for an amount that is not finite (the feed never carries
    one) or a negative message count."""
    # Unqualified in the tree; the root's literal `xmlns` attribute puts every element in
    # NS when serialized (ElementTree's default_namespace refuses unqualified attributes,
    # and register_namespace is process-wide state).
    root = ET.Element("Invoice", xmlns=NS)
    root.attrib.update(_attrs(
        schemaVersion=SCHEMA_VERSION, documentId=doc.document_id, op=doc.op, revision=doc.revision,
        supersedes=doc.supersedes, eventId=event.id, seq=event.seq, source=event.source,
        provider=event.provider, tenant=event.tenant, key=event.key))
    _add(root, "Kind", invoice.kind)
    _add(root, "Number", invoice.number)
    _add(root, "Uuid", invoice.uuid)
    _add(root, "Issued", invoice.issued)
    _add(root, "Due", invoice.due)
    if given(invoice.period_start) is not None or given(invoice.period_end) is not None:
        period = ET.SubElement(root, "ServicePeriod")
        _add(period, "Start", invoice.period_start)
        _add(period, "End", invoice.period_end)
    _add(root, "Status", invoice.status)
    _add(root, "ProviderStatus", invoice.provider_status)
    _add(root, "Currency", invoice.currency)
    _add(root, "Net", invoice.net)
    _add(root, "Tax", invoice.tax)
    _add(root, "VatRate", document_rate(invoice), _DERIVED)
    _add(root, "Total", invoice.total)
    _payment(root, invoice)
    _domestic(root, invoice)
    _party(root, invoice)
    _add(root, "Description", invoice.description)
    if invoice.lines:
        lines = ET.SubElement(root, "Lines")
        for line in invoice.lines:
            el = ET.SubElement(lines, "Line")
            _add(el, "Description", line.description)
            _add(el, "Quantity", line.quantity)
            _add(el, "UnitPrice", line.unit_price)
            _add(el, "Net", line.net)
            _add(el, "Tax", line.tax)
            if line.tax_rate is not None:
                _add(el, "VatRate", line.tax_rate)
            else:
                _add(el, "VatRate", vat_rate(line.net, line.tax), _DERIVED)
            _add(el, "Total", line.total)
    _traffic(root, invoice)
    ET.indent(root)
    out: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return out + b"\n"


def _payment(root: ET.Element, invoice: Invoice) -> None:
    if invoice.unpaid is None and given(invoice.paid_amount) is None and invoice.paid is None:
        return
    el = ET.SubElement(root, "Payment")
    _add(el, "Paid", invoice.paid_amount)
    _add(el, "Unpaid", invoice.unpaid)
    _add(el, "PaidOn", invoice.paid)


def _domestic(root: ET.Element, invoice: Invoice) -> None:
    if invoice.converted_currency is None or invoice.converted_total is None:
        return
    rate = invoice.conversion_rate
    direction = rate_direction(invoice.total, rate, invoice.converted_total)
    el = ET.SubElement(root, "Domestic", _attrs(currency=invoice.converted_currency, rate=rate,
                                                 direction=direction))
    tax, net = invoice.converted_tax, invoice.converted_net
    tax_derived = net_derived = False
    if tax is None and direction is not None and rate is not None and invoice.tax is not None:
        tax = _convert(invoice.tax, rate, direction, invoice.converted_total)
        tax_derived = tax is not None
    if net is None and tax is not None:
        with localcontext() as ctx:
            ctx.prec = _WIDE
            net = invoice.converted_total - tax
        net_derived = True
    _add(el, "Net", net, _DERIVED if net_derived else None)
    _add(el, "Tax", tax, _DERIVED if tax_derived else None)
    _add(el, "Total", invoice.converted_total)


def _party(root: ET.Element, invoice: Invoice) -> None:
    party = invoice.party
    if party is None or party == type(party)():
        return
    p = ET.SubElement(root, "Party", _attrs(key=party.key, number=party.number))
    _add(p, "Name", party.name)
    _add(p, "VatNumber", party.vat_number)
    a = given(party.address)
    if a is not None and a != type(a)():
        el = ET.SubElement(p, "Address")
        _add(el, "Line1", a.line1)
        _add(el, "Line2", a.line2)
        _add(el, "PostalCode", a.postal_code)
        _add(el, "City", a.city)
        _add(el, "Region", a.region)
        _add(el, "Country", a.country)


def _traffic(root: ET.Element, invoice: Invoice) -> None:
    if not invoice.traffic and not invoice.traffic_missing:
        return
    reports = ET.SubElement(root, "TrafficReports", {"missing": "true"} if invoice.traffic_missing else {})
    for row in invoice.traffic:
        el = ET.SubElement(reports, "Traffic")
        _add(el, "Pricing", row.pricing)
        _add(el, "Country", row.country)
        _add(el, "Operator", row.operator)
        _add(el, "MCC", row.mcc)
        _add(el, "MNC", row.mnc)
        if row.messages is not None and row.messages < 0:
            raise ValueError(f"{row.messages} is not a message count")
        _add(el, "Messages", row.messages)
        _add(el, "UnitPrice", row.unit_price)
        _add(el, "Amount", row.amount)
        _add(el, "Currency", row.currency)


# ---------------------------------------------------------------- derived values

def vat_rate(net: Decimal | None, tax: Decimal | None) -> Decimal | None:
    """The VAT rate, in percent, with the fewest decimals (up to `RATE_DECIMALS`) that gives
    `tax` from `net` when rounded to `tax`'s decimals (half up or half even): 19 for 234.57
    on 1234.56, 8.1 for 81.00 on 1000.00. None when no such rate exists or `net` is zero."""
    if net is None or tax is None or not net.is_finite() or not tax.is_finite() or not net:
        return None
    exponent = tax.as_tuple().exponent
    if not isinstance(exponent, int):
        return None
    quantum = Decimal(1).scaleb(exponent)
    with localcontext() as ctx:
        ctx.prec = _WIDE
        try:
            exact = tax / net * 100
            for places in range(RATE_DECIMALS + 1):
                step = Decimal(1).scaleb(-places)
                guess = exact.quantize(step, ROUND_HALF_EVEN)
                for rate in (guess, guess - step, guess + step):
                    product = net * rate / 100
                    if any(product.quantize(quantum, rounding) == tax
                           for rounding in (ROUND_HALF_UP, ROUND_HALF_EVEN)):
                        return rate.normalize() if rate else Decimal(0)
        except InvalidOperation:
            return None
    return None


def document_rate(invoice: Invoice) -> Decimal | None:
    """The document's VAT rate: its lines' one rate when they agree, else (no lines with
    amounts) the rate of its totals; None for lines of several rates."""
    rates = {line.tax_rate if line.tax_rate is not None else vat_rate(line.net, line.tax)
             for line in invoice.lines if _billed(line)}
    if rates:
        return rates.pop() if len(rates) == 1 and None not in rates else None
    return vat_rate(invoice.net, invoice.tax)


def _billed(line: InvoiceLine) -> bool:
    return line.tax_rate is not None or bool(line.net)


def rate_direction(total: Decimal, rate: Decimal | None, converted: Decimal) -> str | None:
    """How `rate` turns `total` into `converted`, as the document's own totals show it:
    "multiply", "divide", or None when neither gives `converted` (rounded to its
    decimals)."""
    if rate is None or not rate.is_finite() or not rate:
        return None
    for direction in ("multiply", "divide"):
        if _convert(total, rate, direction, converted) == converted:
            return direction
    return None


def _convert(amount: Decimal, rate: Decimal, direction: str, like: Decimal) -> Decimal | None:
    """`amount` converted at `rate`, rounded half up to the decimals of `like`."""
    exponent = like.as_tuple().exponent
    if not isinstance(exponent, int):
        return None
    with localcontext() as ctx:
        ctx.prec = _WIDE
        try:
            value = amount * rate if direction == "multiply" else amount / rate
            return value.quantize(Decimal(1).scaleb(exponent), ROUND_HALF_UP)
        except InvalidOperation:
            return None


# ---------------------------------------------------------------- reading a root back

#: The root's start tag, or as much of it as `head` holds.
_ROOT = re.compile(rb"<(?:\w+:)?Invoice\b([^>]*)")
_ID = re.compile(r"[0-9A-Za-z_-]{1,80}")
#: `render` writes attributes in double quotes, escaping `"` in values (as `&quot;`).
_ATTR = re.compile(rb'\s([\w:]+)\s*=\s*"([^"<]*)"')


@dataclass(frozen=True)
class Root:
    """What the root of a document `render` wrote says of itself."""

    document_id: str | None  # None: written before documents had one (schema 1)
    event_id: str


def root_of(head: bytes) -> Root | None:
    """The root's ids, from the first bytes of a document `render` wrote; None for anything
    else (no such root in `head`, or no `eventId` on it)."""
    m = _ROOT.search(head)
    if m is None:
        return None
    attrs = {k.decode("ascii", "replace"): html.unescape(v.decode("utf-8", "replace"))
             for k, v in _ATTR.findall(m.group(1))}
    event_id = attrs.get("eventId")
    if not event_id or not _ID.fullmatch(event_id):
        return None  # not an id `render` wrote: nothing from it reaches a log
    document_id = attrs.get("documentId")
    return Root(document_id if document_id and _ID.fullmatch(document_id) else None, event_id)
