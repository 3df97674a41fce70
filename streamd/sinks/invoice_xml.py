"""An invoice event as an XML document, for the SFTP sink. Pure: no I/O, no clock.

The format is `docs/horisen-invoice.xsd` (namespace `urn:streamd:horisen-invoice:1`);
every document `render` returns validates against it. The root's attributes say which
feed event it came from (`eventId`, `seq`, …): a receiver deduplicates on `eventId`.

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
from decimal import Decimal

from ..model import Invoice
from ..store import FeedEvent

NS = "urn:streamd:horisen-invoice:1"
XSD = "docs/horisen-invoice.xsd"  # relative to the repository root

# Characters outside XML 1.0's Char production.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(value: object) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not an amount")
        return format(value, "f")
    if isinstance(value, dt.date):
        return value.isoformat()
    return _NOT_XML.sub("\ufffd", str(value))


def _add(parent: ET.Element, tag: str, value: object) -> None:
    """A child element holding `value`, unless it is None."""
    if value is not None:
        ET.SubElement(parent, tag).text = _text(value)


def _attrs(**values: object) -> dict[str, str]:
    return {k: _text(v) for k, v in values.items() if v is not None}


def render(event: FeedEvent, invoice: Invoice) -> bytes:
    """The document for one invoice event: UTF-8, with an XML declaration.
    Raises ValueError for an amount that is not finite (the feed never carries one) or a
    negative message count."""
    # Unqualified in the tree; the root's literal `xmlns` attribute puts every element in
    # NS when serialized (ElementTree's default_namespace refuses unqualified attributes,
    # and register_namespace is process-wide state).
    root = ET.Element("Invoice", xmlns=NS)
    root.attrib.update(_attrs(
        eventId=event.id, seq=event.seq, source=event.source, provider=event.provider,
        tenant=event.tenant, key=event.key))
    _add(root, "Number", invoice.number)
    _add(root, "Issued", invoice.issued)
    _add(root, "Due", invoice.due)
    _add(root, "Status", invoice.status)
    _add(root, "ProviderStatus", invoice.provider_status)
    _add(root, "Currency", invoice.currency)
    _add(root, "Net", invoice.net)
    _add(root, "Tax", invoice.tax)
    _add(root, "Total", invoice.total)
    _add(root, "Unpaid", invoice.unpaid)
    if invoice.converted_currency is not None and invoice.converted_total is not None:
        conv = ET.SubElement(root, "Converted", _attrs(
            currency=invoice.converted_currency, rate=invoice.conversion_rate))
        conv.text = _text(invoice.converted_total)
    party = invoice.party
    if party is not None and (party.key, party.number, party.name) != (None, None, None):
        p = ET.SubElement(root, "Party", _attrs(key=party.key, number=party.number))
        _add(p, "Name", party.name)
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
            _add(el, "Total", line.total)
    if invoice.traffic:
        reports = ET.SubElement(root, "TrafficReports")
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
    ET.indent(root)
    out: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return out + b"\n"


#: The root's start tag, or as much of it as `head` holds.
_ROOT = re.compile(rb"<(?:\w+:)?Invoice\b([^>]*)")
_EVENT_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
#: `render` writes attributes in double quotes, escaping `"` in values (as `&quot;`).
_ATTR = re.compile(rb'\s([\w:]+)\s*=\s*"([^"<]*)"')


@dataclass(frozen=True)
class Root:
    """What the root of a document `render` wrote says about its event."""

    event_id: str
    provider: str | None
    tenant: str | None
    key: str | None


def root_of(head: bytes) -> Root | None:
    """The root's event attributes, from the first bytes of a document `render` wrote;
    None for anything else (no such root in `head`, or no `eventId` on it). An attribute
    beyond `head` (a root over 4 KiB) is None."""
    m = _ROOT.search(head)
    if m is None:
        return None
    attrs = {k.decode("ascii", "replace"): html.unescape(v.decode("utf-8", "replace"))
             for k, v in _ATTR.findall(m.group(1))}
    event_id = attrs.get("eventId")
    if not event_id or not _EVENT_ID.fullmatch(event_id):
        return None  # not an id `render` wrote: nothing from it reaches a log
    return Root(event_id, attrs.get("provider"), attrs.get("tenant"), attrs.get("key"))


def event_id_of(head: bytes) -> str | None:
    """The root's `eventId` from the first bytes of a document `render` wrote, if found."""
    root = root_of(head)
    return root.event_id if root else None


def same_invoice(root: Root, event: FeedEvent) -> bool:
    """Whether a document with this root is of `event`'s invoice (another version of it):
    the same provider, tenant and key, as `render` writes them."""
    return (root.provider, root.tenant, root.key) == (
        _text(event.provider), _text(event.tenant), _text(event.key))
