"""Asteria payloads → unified events. Pure: (topic, payload bytes, received_at) in,
events out, or `Rejected` with a reason. No sockets, no clock. The mapping table is
docs/providers/asteria.md.

- The key is `_id` (else `id`); the tenant is `companyId`. A `*_REMOVE` body holds only
  `_id`: its tenant is the one `tenant_of(entity, key)` knows (the source keeps the tenant
  of every record it has seen, `tenants.py`); with none known the event's tenant is empty
  (rendered `null`: not known) and `tenant_unknown` says so to the caller.
- `updatedAt` (else `createdAt`) gives the event's `time` and its version, so the same
  change seen by websocket and by webhook gets the same id. No stamp: the content
  is the version, and `time` is when streamd received it.
- `*_CREATE` → created, `*_UPDATE` → updated, `*_REMOVE` → deleted with the key.
- Values go through `model/fields.py` like every provider's: amounts (at most 38 digits
  before the point and 38 after, whatever the form) before any arithmetic, a refusal
  naming Asteria's field (`sums.original.invoiceTotal`); currencies against ISO 4217; a
  date is the date in the source's `timezone` (Stockholm unless configured): a due date of
  25 December, stamped at local midnight `2021-12-24T23:00:00.000Z`, stays the 25th.
- The only arithmetic is `net = invoiceTotal − tax`, exact (or refused). No rate is
  derived: Asteria sends none with an invoice's sums.
- Kind and status follow `model/rules.py`, as for every provider.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, tzinfo
from decimal import Context, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgspec
from msgspec import UNSET

from ...errors import Rejected
from ...model import (
    BankAccount,
    Event,
    Invoice,
    InvoiceRef,
    Link,
    Op,
    Party,
    PartyRef,
    PaymentRef,
    Product,
    Record,
    Transaction,
    make_event,
    rules,
)
from ...model.entities import Entity
from ...model.fields import (
    DECODE_ERRORS,
    MAX_FRACTION_DIGITS,
    MAX_INTEGER_DIGITS,
    amount,
    currency,
    day,
    instant,
    text,
)
from . import wire

PROVIDER = "asteria"
#: A topic's action → the op of its events (`model.OPS` are the ops themselves).
ACTIONS: dict[str, Op] = {"CREATE": "created", "UPDATE": "updated", "REMOVE": "deleted"}
#: The business time zone when the source configures none.
ZONE = ZoneInfo(wire.TIMEZONE)
#: (entity, key) → the tenant the source knows the record by, or None.
TenantOf = Callable[[str, str], str | None]

_decoders = {kind: wire.decoder(kind) for _, kind in wire.FAMILIES.values()}
_removed = wire.decoder(wire.Removed)
_generic = msgspec.json.Decoder(dict[str, Any], float_hook=Decimal)
_DROP = {"_id", "id", "companyId", "createdAt", "updatedAt", "__v"}


def _no_tenant(entity: str, key: str) -> str | None:
    return None


def normalize_frame(message: bytes, *, source: str, received_at: datetime, zone: tzinfo = ZONE,
                    tenant_of: TenantOf = _no_tenant) -> list[Event]:
    """One websocket frame (see wire.parse_frame) → events."""
    try:
        topic, data = wire.parse_frame(message)
    except DECODE_ERRORS as exc:  # deep nesting (a RecursionError) included
        raise Rejected(f"malformed frame: {exc}") from None
    return normalize(topic, data, source=source, received_at=received_at, zone=zone, tenant_of=tenant_of)


def normalize(topic: str, data: bytes, *, source: str, received_at: datetime, zone: tzinfo = ZONE,
              tenant_of: TenantOf = _no_tenant) -> list[Event]:
    typed = _TYPED.get(topic)
    try:
        if typed is not None:  # nearly every frame: one lookup says how to read it
            family, op, entity, decode, build = typed
            payload = decode(data)
            key = payload.key
            if not key:
                raise Rejected(f"{topic}: no _id or id")
            tenant = text(payload.companyId) or tenant_of(entity, key) or ""
            return [_event(entity, op, key, tenant, payload, build(family, payload, zone), data,
                           source, received_at)]
        if topic not in wire.TOPIC_SET:
            raise Rejected(f"unknown topic {topic!r}")
        family, action = wire.split_topic(topic)
        op = ACTIONS[action]
        if op == "deleted":
            return [_removed_event(family, _removed.decode(data), data, source, received_at, tenant_of)]
        return [_generic_event(family, op, _generic.decode(data), data, source, received_at, tenant_of)]
    except DECODE_ERRORS as exc:
        raise Rejected(f"{topic}: {exc}") from None
    except ArithmeticError as exc:  # amounts are bounded before any arithmetic: a last guard
        raise Rejected(f"{topic}: a number out of range ({type(exc).__name__})") from None


def tenant_unknown(ev: Event) -> bool:
    """An event whose tenant neither the payload nor what streamd has seen could tell."""
    return not ev.tenant


# ---------------------------------------------------------------- helpers

def _sum(s: wire.Sum | None, at: str) -> tuple[Decimal | None, Decimal | None]:
    """A `Sum`'s amount (`invoiceTotal`, else `total`) and tax, checked, each named by
    its path (`at` is the Sum's own, e.g. "sums.original")."""
    if s is None:
        return None, None
    if s.invoiceTotal is not None:
        return amount(s.invoiceTotal, "invoiceTotal", at), amount(s.tax, "tax", at)
    return amount(s.total, "total", at), amount(s.tax, "tax", at)


#: Wide enough for the difference of two amounts within the bounds (77 digits), and
#: Inexact trapped: a result is never rounded, it is refused. One context made once (a
#: `localcontext()` per invoice cost as much as the rest of the subtraction tenfold).
_EXACT = Context(prec=MAX_INTEGER_DIGITS + MAX_FRACTION_DIGITS + 2,
                 traps=[InvalidOperation, DivisionByZero, Overflow, Inexact])


def _difference(a: Decimal, b: Decimal, field: str) -> Decimal:
    """a - b, exactly: the default context keeps 28 digits, and two amounts within the
    bounds can need 77."""
    try:
        return _EXACT.subtract(a, b)
    except Inexact:  # pragma: no cover - cannot happen within the bounds
        raise Rejected(f"{field}: {a} - {b} cannot be computed exactly") from None


def _required_currency(value: str | None, field: str) -> str:
    got = currency(value, field)
    if got is None:
        raise Rejected(f"{field}: a currency is required")
    return got


def _event(entity: str, op: Op, key: str, tenant: str, payload: wire.Base, data: Entity, raw: bytes,
           source: str, received_at: datetime) -> Event:
    stamp = payload.updatedAt or payload.createdAt
    # The builder has read the stamp already (every entity keeps both): not read again.
    if stamp is payload.updatedAt:
        time = getattr(data, "updated_at", None) if stamp else None
    else:
        time = getattr(data, "created_at", None)
    return make_event(provider=PROVIDER, source=source, tenant=tenant, entity=entity,
                      op=op, key=key, time=time or received_at, data=data,
                      version=stamp or None, raw=raw)


def _removed_event(family: str, payload: wire.Removed, raw: bytes, source: str,
                   received_at: datetime, tenant_of: TenantOf) -> Event:
    if not payload.key:
        raise Rejected(f"{family}_REMOVE: no _id or id")
    entity = wire.GENERIC.get(family) or wire.FAMILIES[family][0]
    tenant = text(payload.companyId) or tenant_of(entity, payload.key) or ""
    return make_event(provider=PROVIDER, source=source, tenant=tenant, entity=entity,
                      op="deleted", key=payload.key,
                      time=instant(payload.updatedAt, "updatedAt") or received_at, data=None,
                      version=payload.updatedAt, raw=raw)


def _generic_event(family: str, op: Op, body: dict[str, Any], raw: bytes, source: str,
                   received_at: datetime, tenant_of: TenantOf) -> Event:
    key = body.get("_id") or body.get("id")
    if not isinstance(key, str) or not key:
        raise Rejected(f"{family}: no _id or id")
    created, updated = body.get("createdAt"), body.get("updatedAt")
    stamp = updated if isinstance(updated, str) else created if isinstance(created, str) else None
    name = next((body[k] for k in ("name", "title", "username", "number", "key")
                 if isinstance(body.get(k), str)), None)
    record = Record(name=name, attributes={k: v for k, v in body.items() if k not in _DROP},
                    created_at=instant(created if isinstance(created, str) else None, "createdAt"),
                    updated_at=instant(updated if isinstance(updated, str) else None, "updatedAt"))
    company = body.get("companyId")
    entity = wire.GENERIC[family]
    tenant = (text(company) if isinstance(company, str) else None) or tenant_of(entity, key) or ""
    return make_event(provider=PROVIDER, source=source, tenant=tenant, entity=entity,
                      op=op, key=key, time=instant(stamp, "updatedAt") or received_at,
                      data=record, version=stamp, raw=raw)


# ---------------------------------------------------------------- one builder per family

def _party(family: str, p: wire.Client, zone: tzinfo) -> Party:
    roles: list[Any] = {"CUSTOMER": ["customer"], "SUPPLIER": ["supplier"]}.get((p.type or "").upper(), [])
    return Party(roles=roles, name=p.name, number=p.meta.clientNumber if p.meta else None,
                 email=p.email, phone=p.phone, vat_number=p.vatNumber,
                 registration_number=p.orgNumber, active=p.active,
                 created_at=instant(p.createdAt, "createdAt"),
                 updated_at=instant(p.updatedAt, "updatedAt"))


_INVOICE_KIND: dict[str, Literal["invoice", "credit_note", "order"]] = {
    "INVOICE": "invoice", "CREDIT": "credit_note", "ORDER": "order"}
_INVOICE_STATUS = {"PAID": "paid", "UNPAID": "open", "PROCESSING": "open", "OVERDUE": "open",
                   "SENT": "open", "DRAFT": "draft", "PARTIALLY_PAID": "partially_paid"}


def _invoice(family: str, p: wire.Invoice, zone: tzinfo) -> Invoice:
    original = p.sums.original if p.sums else None
    system = p.sums.system if p.sums else None
    if original is None or original.amount is None or not original.currency:
        raise Rejected("INVOICE: sums.original needs invoiceTotal and currency")
    total, tax = _sum(original, "sums.original")
    assert total is not None
    converted_total, converted_tax = _sum(system, "sums.system")
    raw_status = p.info.status if p.info else None
    status: Any = "cancelled" if p.canceled else _INVOICE_STATUS.get((raw_status or "").upper(), "unknown")
    contact = p.contact.general if p.contact and p.contact.general else None
    dates = p.dates
    invoice = Invoice(
        kind=_INVOICE_KIND.get((p.type or "INVOICE").upper(), "invoice"),
        direction="payable" if (p.clientType or "").upper() == "SUPPLIER" else "receivable",
        number=p.meta.invoiceNumber if p.meta else None,
        party=PartyRef(key=p.clientId, name=contact.name if contact else None,
                       number=p.meta.clientNumber if p.meta else None),
        issued=day(dates.invoiceSent, "dates.invoiceSent", zone) if dates else None,
        due=day(dates.invoiceDue, "dates.invoiceDue", zone) if dates else None,
        paid=day(dates.invoicePaid, "dates.invoicePaid", zone) if dates else None,
        status=status, provider_status=raw_status,
        currency=_required_currency(original.currency, "sums.original.currency"),
        net=_difference(total, tax, "sums.original") if tax is not None else None, tax=tax, total=total,
        converted_currency=currency(system.currency, "sums.system.currency") if system else None,
        converted_tax=converted_tax, converted_total=converted_total,
        payments=_payments(p.payments, zone) if p.payments else [],
        created_at=instant(p.createdAt, "createdAt"), updated_at=instant(p.updatedAt, "updatedAt"),
        # Fields added later: UNSET (left out of the entity) when Asteria does not say.
        forecast=UNSET if p.info is None or p.info.isForecast is None else p.info.isForecast,
        active=UNSET if p.active is None else p.active,
        credits=UNSET if p.credits is None else _credits(p.credits))
    return rules.unified(invoice)


def _credits(credits: list[str | wire.Credit]) -> list[InvoiceRef]:
    """What a credit note credits: invoice numbers (the import schema's `{"number": …}`,
    the events' bare strings). Blank ones are dropped."""
    refs = []
    for c in credits:
        number = text(c if isinstance(c, str) else c.number)
        if number is not None:
            refs.append(InvoiceRef(number=number))
    return refs


def _payments(payments: list[wire.Payment], zone: tzinfo) -> list[PaymentRef]:
    refs = []
    for i, x in enumerate(payments):
        paid = amount(x.total, f"payments[{i}].total")
        if paid is not None:
            code = x.currency if x.currency is not None else x.currencty
            refs.append(PaymentRef(date=day(x.date, f"payments[{i}].date", zone), amount=paid,
                                   currency=currency(code, f"payments[{i}].currency")))
    return refs


_TX_KIND = {"DEPOSIT": "deposit", "WITHDRAWAL": "withdrawal", "TRANSFER": "transfer",
            "PAYMENT": "payment"}
_TX_STATUS: dict[str, Any] = {"PAID": "completed", "COMPLETED": "completed", "BOOKED": "completed",
              "UNPAID": "pending", "PENDING": "pending", "CANCELED": "cancelled",
              "CANCELLED": "cancelled"}
_TX_DIRECTION = {"DEPOSIT": "in", "WITHDRAWAL": "out"}
_LINK_ENTITY = {"INVOICE_PAYMENT": "invoice", "INVOICE": "invoice", "TRANSACTION": "transaction"}


def _transaction(family: str, p: wire.Transaction, zone: tzinfo) -> Transaction:
    original = p.sums.original if p.sums else None
    system = p.sums.system if p.sums else None
    if original is None or original.amount is None or not original.currency:
        raise Rejected(f"{family}: sums.original needs total and currency")
    total, _ = _sum(original, "sums.original")
    assert total is not None
    converted, _ = _sum(system, "sums.system")
    kind_raw = (p.type or "").upper()
    kind: Any = "bank_transaction" if family == "BANK_TRANSACTION" else _TX_KIND.get(kind_raw, "payment")
    direction: Any = _TX_DIRECTION.get(kind_raw)
    links = []
    party = None
    for i, link in enumerate(p.links):
        if party is None and link.clientId:
            party = PartyRef(key=link.clientId)  # the first link's party that names one
        if not link.id:
            continue
        lsum = link.sums.original if link.sums else None
        links.append(Link(entity=_LINK_ENTITY.get((link.type or "").upper(), "unknown"), key=link.id,
                          type=(link.type or "").lower() or None,
                          amount=_sum(lsum, f"links[{i}].sums.original")[0],
                          currency=currency(lsum.currency, f"links[{i}].sums.original.currency")
                          if lsum else None))
    return Transaction(
        kind=kind, direction=direction, date=day(p.paymentDate, "paymentDate", zone),
        status=_TX_STATUS.get((p.status or "").upper(), "unknown"), provider_status=p.status,
        amount=total, currency=_required_currency(original.currency, "sums.original.currency"),
        converted_amount=converted,
        converted_currency=currency(system.currency, "sums.system.currency") if system else None,
        reference=p.reference, description=p.description,
        party=party,
        bank_account=p.bankAccountId, links=links,
        created_at=instant(p.createdAt, "createdAt"), updated_at=instant(p.updatedAt, "updatedAt"))


def _bank_account(family: str, p: wire.BankAccount, zone: tzinfo) -> BankAccount:
    return BankAccount(name=p.name, number=p.account or p.number, iban=p.iban, bic=p.bic,
                       clearing=p.clearing, bank=p.bank, currency=currency(p.currency, "currency"),
                       active=p.active, created_at=instant(p.createdAt, "createdAt"),
                       updated_at=instant(p.updatedAt, "updatedAt"))


def _product(family: str, p: wire.Product, zone: tzinfo) -> Product:
    return Product(name=p.name, number=p.number, description=p.description, unit=p.unit,
                   unit_price=_sum(p.price, "price")[0],
                   currency=currency(p.price.currency, "price.currency") if p.price else None,
                   tax_rate=amount(p.taxRate, "taxRate"),
                   active=p.active, created_at=instant(p.createdAt, "createdAt"),
                   updated_at=instant(p.updatedAt, "updatedAt"))


_BUILDERS: dict[str, Any] = {
    "CLIENT": _party, "INVOICE": _invoice, "TRANSACTION": _transaction,
    "BANK_TRANSACTION": _transaction, "BANK_ACCOUNT": _bank_account, "PRODUCT": _product,
}


def _typed(topic: str) -> tuple[str, Op, str, Callable[[bytes], Any], Callable[[str, Any, tzinfo], Entity]]:
    family, action = wire.split_topic(topic)
    entity, kind = wire.FAMILIES[family]
    return family, ACTIONS[action], entity, _decoders[kind].decode, _BUILDERS[family]


#: A typed family's creations and updates (every topic but the removals and the generic
#: families): its family, op, entity, payload decoder and builder, by topic.
_TYPED = {topic: _typed(topic) for topic in wire.TOPICS
          if wire.split_topic(topic)[0] in wire.FAMILIES and not topic.endswith("_REMOVE")}
