"""The events a HORISEN listing emits: pure (invariant 4), fed by the poller in `source`.

An invoice's version is `poll:<h(previous)>~<h(watch)>#<h(data)>`: chained like every
poller's (`sources.changes`), and carrying the hash of what a change is judged on
(`NormalizedDocument.watch`: status, paymentStatus, totalUnpaid, paymentStatusDate),
so a listing compares that part alone: a new `syncStatus` emits nothing, a payment
emits `updated`. Parties (from `bizPartner`) change on their whole content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, tzinfo

import msgspec

from ...model import Event, Invoice, TrafficLine, make_event
from ...model.envelope import Op
from ...sources.changes import chain, was_emitted
from . import wire
from .normalize import NormalizedDocument, normalize_document

PROVIDER = wire.PROVIDER


def watch_hash(n: NormalizedDocument) -> str:
    return hashlib.sha256(msgspec.json.encode(n.watch)).hexdigest()[:16]


def watch_of(version: str) -> str | None:
    """The watch hash an emitted version carries; None for a marker or an older version."""
    if not version.startswith("poll:"):
        return None
    head = version.partition("#")[0]
    return head.partition("~")[2] or None


def unchanged(previous: str, n: NormalizedDocument) -> bool:
    return was_emitted(previous) and watch_of(previous) == watch_hash(n)


def invoice_event(n: NormalizedDocument, *, source: str, tenant: str, previous: str,
                  traffic: Sequence[TrafficLine] | None = None) -> Event:
    """`created` (or `updated` when an earlier version was emitted) for a document;
    `traffic` replaces the invoice's traffic lines (an update carries the ones its
    `created` had: traffic reports are fetched once, for new invoices)."""
    invoice: Invoice = n.invoice
    if traffic is not None:
        invoice = msgspec.structs.replace(invoice, traffic=list(traffic))
    op: Op = "updated" if was_emitted(previous) else "created"
    return make_event(provider=PROVIDER, source=source, tenant=tenant, entity="invoice", op=op,
                      key=n.key, time=n.time, data=invoice,
                      version=f"{chain(previous)}~{watch_hash(n)}")


def party_event(n: NormalizedDocument, *, source: str, tenant: str, previous: str) -> Event | None:
    if n.party is None:
        return None
    key, party = n.party
    op: Op = "updated" if was_emitted(previous) else "created"
    return make_event(provider=PROVIDER, source=source, tenant=tenant, entity="party", op=op,
                      key=key, time=n.time, data=party, version=chain(previous))


def renormalized(raw: bytes, *, source: str, tenant: str, previous: str,
                 received_at: datetime, zone: tzinfo) -> list[Event]:
    """A dead-lettered document taken again (`streamd dlq retry`): the invoice as it is,
    without traffic reports (the ones that never came are why it was dead-lettered)."""
    n = normalize_document(raw, None, received_at=received_at, zone=zone)
    return [invoice_event(n, source=source, tenant=tenant, previous=previous)]
