"""The synthetic provider's wire format, and a deterministic generator of it.

A record is one JSON object::

    {"tenant": "acme", "entity": "invoice", "op": "updated", "key": "inv-000042",
     "version": "2026-01-01T00:00:42.000Z", "time": "2026-01-01T00:00:42.000Z",
     "data": { …a unified entity, amounts as decimal strings… }}

`record(seed, n, …)` is a pure function of its arguments: the same n gives the
same bytes, so tests can recompute exactly which events a run must contain.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec

from ...model import Invoice, InvoiceLine, Party, PartyRef, PaymentRef, Transaction
from ...model.envelope import format_time

_enc = msgspec.json.Encoder(decimal_format="string")

_NAMES = ["Stanton Cruickshank", "Jaylan Schuster", "Annabell Ortiz", "Nordlys AB", "Van Dijk BV",
          "Kowalski Sp. z o.o.", "Brightwater Ltd", "Müller & Söhne GmbH"]
_CURRENCIES = ["EUR", "SEK", "USD", "GBP", "NOK"]


def _party_key(tenant: str, i: int) -> str:
    return f"{tenant}-party-{i:05d}"


def record(seed: int, n: int, tenants: list[str], epoch: datetime, *, step: timedelta = timedelta(seconds=1),
           malformed: bool = False) -> bytes:
    """The n-th record of a run, stamped `epoch + n * step`. Every 10 records: 2 parties,
    5 invoices (new or updated), 3 transactions paying earlier invoices."""
    rng = random.Random(seed * 1_000_003 + n)
    tenant = tenants[n % len(tenants)]
    t = epoch + n * step
    stamp = format_time(t)
    slot = n % 10
    currency = _CURRENCIES[rng.randrange(len(_CURRENCIES))]
    data: Party | Invoice | Transaction
    if slot < 2:
        i = n // 10 * 2 + slot
        entity, op, key = "party", "created", _party_key(tenant, i)
        data = Party(roles=["customer"] if slot == 0 else ["supplier"], name=_NAMES[i % len(_NAMES)],
                     number=str(1000 + i), email=f"billing{i}@example.com", currency=currency,
                     active=True, created_at=t, updated_at=t)
    elif slot < 7:
        inv = n // 10 * 5 + (slot - 2)
        # Every third invoice slot revisits an earlier invoice: an update, not a create.
        if inv % 3 == 2 and inv >= 5:
            inv -= 5
            op = "updated"
        else:
            op = "created"
        key = f"inv-{inv:06d}"
        entity = "invoice"
        net = Decimal(rng.randrange(1000, 500000)) / 100
        tax = (net * Decimal("0.25")).quantize(Decimal("0.01"))
        paid = op == "updated"
        data = Invoice(direction="receivable", number=f"{2026}{inv:06d}",
                       party=PartyRef(key=_party_key(tenant, inv % 7), name=_NAMES[inv % len(_NAMES)]),
                       issued=(epoch + timedelta(days=inv % 30)).date(),
                       due=(epoch + timedelta(days=inv % 30 + 30)).date(),
                       paid=t.date() if paid else None, status="paid" if paid else "open",
                       currency=currency, net=net, tax=tax, total=net + tax,
                       unpaid=Decimal("0.00") if paid else net + tax,
                       lines=[InvoiceLine(description="Consulting", quantity=Decimal(1),
                                          unit_price=net, net=net, tax=tax, total=net + tax)],
                       payments=[PaymentRef(date=t.date(), amount=net + tax, currency=currency)]
                       if paid else [],
                       created_at=t, updated_at=t)
    else:
        i = n // 10 * 3 + (slot - 7)
        entity, op, key = "transaction", "created", f"trx-{i:06d}"
        amount = Decimal(rng.randrange(100, 900000)) / 100
        data = Transaction(kind="payment", direction="in", date=t.date(), status="completed",
                           amount=amount, currency=currency, reference=f"RF{i:08d}",
                           created_at=t, updated_at=t)
    body: dict[str, object] = {"tenant": tenant, "entity": entity, "op": op, "key": key,
                               "version": stamp, "time": stamp, "data": data}
    if malformed:
        # A record a real peer might send: an amount that is not a number.
        body = {**body, "data": {"direction": "receivable", "currency": currency, "total": "12,50"},
                "entity": "invoice"}
    return _enc.encode(body)


def epoch_now(now: datetime) -> datetime:
    return now.replace(microsecond=0, tzinfo=now.tzinfo or UTC)
