"""The events a HORISEN listing emits: pure (invariant 4), fed by the poller in `source`.

Every change to a document is an event: a listing's document is compared with what the
feed last said of it as a whole normalized invoice, less the fields in `NOISE` (each
named with the reason it is no change to the document). Amounts are compared by value
(`487.5` is `487.50`).

An invoice's version is `poll:<h(previous)>~<h(compared)>#<h(data)>`: chained like
every poller's (`sources.changes`), and carrying the hash of the compared part, so that
a listing finds an unchanged document from its stored version alone. When the hashes
differ, the stored invoice is compared field by field (`same_document`), on the fields
it has: a version an older streamd wrote (another hash, or a model with fewer fields) is
then no change, and only the stored version is brought up to date (`restamped`).
Parties (from `bizPartner`) change on their whole content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any

import msgspec

from ...model import Event, Invoice, TrafficLine, make_event
from ...model.envelope import Op
from ...model.fields import DECODE_ERRORS
from ...sources.changes import chain, was_emitted
from . import wire
from .normalize import ZONE, NormalizedDocument, normalize_document

PROVIDER = wire.PROVIDER

#: Fields of the normalized invoice that a change is not judged on, and why. A dotted name
#: is a field of a nested struct.
NOISE: dict[str, str] = {
    "updated_at": "`statusDt` moves with every change, also with those that are none to the "
                  "document (`syncStatus`); what changed is compared instead",
    "traffic": "traffic reports are fetched once, for the `created`; a listing holds none",
    "traffic_missing": "says whether those reports came, not what the document holds",
    "party.name": "`bizPartner` is the customer's master data as it is today, sent with each "
                  "of its documents: a change there is the party's (`party.updated`), not a "
                  "correction of every invoice of that customer",
    "party.number": "`bizPartnerExternalRefId`: the customer's id in the platform owner's "
                    "system, master data like `bizPartner`",
    "party.vat_number": "`bizPartner.vatNumber`: master data, as `party.name`",
    "party.address": "`bizPartner`'s address and country: master data, as `party.name`",
}
#: Document fields streamd does not map at all, so no change to them is an event.
UNMAPPED: dict[str, str] = {
    "syncStatus": "HORISEN's bookkeeping of its own synchronisation, not the document's",
    "items[].id": "an item's row id: the line is compared by what it bills",
    "bizPartner.briefName": "a short name for screens; the party has one name",
    "paymentStatusDate": "mapped (to `paid`) only once paid in full: before that, the payment it "
                         "dates shows in `totalPaid` and `totalUnpaid`",
}

_TOP = frozenset(k for k in NOISE if "." not in k)
_NESTED: dict[str, frozenset[str]] = {}
for _name in NOISE:
    if "." in _name:
        _parent, _child = _name.split(".", 1)
        _NESTED[_parent] = _NESTED.get(_parent, frozenset()) | {_child}


def canonical(value: Decimal) -> str:
    """The same string for the same number: 10, 10.0 and 1E+1 are "10"; -0.00 is "0"."""
    if not value:
        return "0"
    text = format(value, "f")  # no exponent: 1E+1 is "10"
    # The fraction's trailing zeros are no part of the value (10.50 is 10.5, 10.0 is 10).
    return text.rstrip("0").rstrip(".") if "." in text else text


def _canon(value: Any) -> Any:
    # The exact types msgspec.to_builtins makes (type(), not isinstance: a few µs a
    # document, on every document of every listing).
    kind = type(value)
    if kind is Decimal:
        return canonical(value)
    if kind is dict:
        return {k: _canon(v) for k, v in value.items()}
    if kind is list:
        return [_canon(v) for v in value]
    return value


def compared(invoice: Invoice) -> dict[str, Any]:
    """The part of an invoice a change is judged on, as JSON-like values, amounts canonical."""
    tree: dict[str, Any] = msgspec.to_builtins(invoice, builtin_types=(Decimal,))
    for name in _TOP:
        tree.pop(name, None)
    for parent, children in _NESTED.items():
        inner = tree.get(parent)
        if isinstance(inner, dict):
            tree[parent] = {k: v for k, v in inner.items() if k not in children}
    return {k: _canon(v) for k, v in tree.items()}


def compared_hash(invoice: Invoice) -> str:
    return hashlib.sha256(msgspec.json.encode(compared(invoice))).hexdigest()[:16]


def compared_of(version: str) -> str | None:
    """The compared hash an emitted version carries; None for a marker (no `~`)."""
    if not version.startswith("poll:"):
        return None
    return version.partition("#")[0].partition("~")[2] or None


def unchanged(previous: str, n: NormalizedDocument) -> bool:
    """The document is what the feed last said of it, by the stored version alone."""
    return was_emitted(previous) and compared_of(previous) == compared_hash(n.invoice)


def _pruned(tree: Any, shape: Any) -> Any:
    """`tree` with only the keys `shape` has, at every level (lists element by element)."""
    if isinstance(tree, dict) and isinstance(shape, dict):
        return {k: _pruned(v, shape[k]) for k, v in tree.items() if k in shape}
    if isinstance(tree, list) and isinstance(shape, list):
        return [_pruned(v, shape[i]) if i < len(shape) else v for i, v in enumerate(tree)]
    return tree


def same_document(stored: bytes | None, invoice: Invoice) -> bool:
    """Whether `invoice` is the invoice stored as the feed's last word on it, compared on the
    fields the stored one has (one written by an older streamd may have fewer)."""
    if not stored:
        return False
    try:
        shape = msgspec.json.decode(stored)
        before = msgspec.json.decode(stored, type=Invoice)
    except DECODE_ERRORS:
        return False
    return bool(_pruned(compared(invoice), shape) == _pruned(compared(before), shape))


def restamped(previous: str, n: NormalizedDocument) -> str:
    """`previous` carrying the compared hash of `n`, which it is the same document as."""
    head, _, data = previous.partition("#")
    return f"{head.partition('~')[0]}~{compared_hash(n.invoice)}#{data}"


def invoice_event(n: NormalizedDocument, *, source: str, tenant: str, previous: str,
                  traffic: Sequence[TrafficLine] | None = None, traffic_missing: bool = False) -> Event:
    """`created` (or `updated` when an earlier version was emitted) for a document;
    `traffic` replaces the invoice's traffic lines (an update carries the ones its
    `created` had: traffic reports are fetched once, for new invoices), `traffic_missing`
    says they could not be fetched."""
    invoice: Invoice = n.invoice
    if traffic is not None or traffic_missing:
        invoice = msgspec.structs.replace(invoice, traffic=list(traffic or ()),
                                          traffic_missing=traffic_missing)
    op: Op = "updated" if was_emitted(previous) else "created"
    return make_event(provider=PROVIDER, source=source, tenant=tenant, entity="invoice", op=op,
                      key=n.key, time=n.time, data=invoice,
                      version=f"{chain(previous)}~{compared_hash(n.invoice)}")


def party_event(n: NormalizedDocument, *, source: str, tenant: str, previous: str) -> Event | None:
    if n.party is None:
        return None
    key, party = n.party
    op: Op = "updated" if was_emitted(previous) else "created"
    return make_event(provider=PROVIDER, source=source, tenant=tenant, entity="party", op=op,
                      key=key, time=n.time, data=party, version=chain(previous))


def renormalized(raw: bytes, *, source: str, tenant: str, previous: str, received_at: datetime,
                 zone: tzinfo = ZONE, reports: bool = True) -> list[Event]:
    """A dead-lettered document taken again (`streamd dlq retry`): the invoice as it is,
    without traffic reports (the ones that never came are why it was dead-lettered), and,
    when the source fetches `reports`, saying so (`traffic_missing`)."""
    n = normalize_document(raw, None, received_at=received_at, zone=zone)
    return [invoice_event(n, source=source, tenant=tenant, previous=previous, traffic_missing=reports)]
