"""Asteria payloads → unified events. Pure: (topic, payload bytes, received_at) in,
events out, or `Rejected` with a reason. No sockets, no clock. The mapping table is
docs/providers/asteria.md.

- The key is `_id` (else `id`); the tenant is `companyId`.
- `updatedAt` (else `createdAt`) gives the event's `time` and its version, so the same
  change seen by websocket and by webhook gets the same id. No stamp: the content
  is the version, and `time` is when streamd received it.
- `*_CREATE` → created, `*_UPDATE` → updated, `*_REMOVE` → deleted with the key (a
  REMOVE body carries only `_id`: the tenant is empty unless it says `companyId`).
- Every amount goes through `fields.amount` (at most 38 digits before the point and 38
  after, whatever the form) before any arithmetic, and a refusal names Asteria's field
  (`sums.original.invoiceTotal`). A generic record's numbers are checked the same way
  by `make_event`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal, localcontext
from typing import Any, Literal

import msgspec

from ...errors import Rejected
from ...model import (
    BankAccount,
    Event,
    Invoice,
    Link,
    Op,
    Party,
    PartyRef,
    PaymentRef,
    Product,
    Record,
    Transaction,
    make_event,
)
from ...model.entities import Entity
from ...model.fields import DECODE_ERRORS, MAX_FRACTION_DIGITS, MAX_INTEGER_DIGITS, amount
from . import wire

PROVIDER = "asteria"
OPS: dict[str, Op] = {"CREATE": "created", "UPDATE": "updated", "REMOVE": "deleted"}

_decoders = {kind: wire.decoder(kind) for _, kind in wire.FAMILIES.values()}
_removed = wire.decoder(wire.Removed)
_generic = msgspec.json.Decoder(dict[str, Any], float_hook=Decimal)
_DROP = {"_id", "id", "companyId", "createdAt", "updatedAt", "__v"}


def normalize_frame(message: bytes, *, source: str, received_at: datetime) -> list[Event]:
    """One websocket frame (see wire.parse_frame) → events."""
    try:
        topic, data = wire.parse_frame(message)
    except DECODE_ERRORS as exc:  # deep nesting (a RecursionError) included
        raise Rejected(f"malformed frame: {exc}") from None
    return normalize(topic, data, source=source, received_at=received_at)


def normalize(topic: str, data: bytes, *, source: str, received_at: datetime) -> list[Event]:
    if topic not in wire.TOPIC_SET:
        raise Rejected(f"unknown topic {topic!r}")
    family, action = wire.split_topic(topic)
    op = OPS[action]
    try:
        if op == "deleted":
            return [_removed_event(family, _removed.decode(data), data, source, received_at)]
        if family in wire.GENERIC:
            return [_generic_event(family, op, _generic.decode(data), data, source, received_at)]
        entity, kind = wire.FAMILIES[family]
        payload = _decoders[kind].decode(data)
        key = payload.key
        if not key:
            raise Rejected(f"{topic}: no _id or id")
        build = _BUILDERS[family]
        return [_event(entity, op, key, payload, build(family, payload), data, source, received_at)]
    except DECODE_ERRORS as exc:
        raise Rejected(f"{topic}: {exc}") from None
    except ArithmeticError as exc:  # amounts are bounded before any arithmetic: a last guard
        raise Rejected(f"{topic}: a number out of range ({type(exc).__name__})") from None


# ---------------------------------------------------------------- helpers

def _instant(value: str | None, field: str) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Rejected(f"{field}: {value!r} is not a date-time") from None
    try:
        return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise Rejected(f"{field}: {value!r} is out of range") from None


def _date(value: str | None, field: str) -> date | None:
    t = _instant(value, field)
    return t.astimezone(UTC).date() if t else None


def _sum(s: wire.Sum | None, at: str) -> tuple[Decimal | None, Decimal | None]:
    """A `Sum`'s amount (`invoiceTotal`, else `total`) and tax, checked, each named by
    its path (`at` is the Sum's own, e.g. "sums.original")."""
    if s is None:
        return None, None
    field = "invoiceTotal" if s.invoiceTotal is not None else "total"
    return amount(s.amount, f"{at}.{field}"), amount(s.tax, f"{at}.tax")


def _difference(a: Decimal, b: Decimal) -> Decimal:
    """a - b, exactly: the default context keeps 28 digits, and two amounts within the
    bounds can need 77 (a net rounded to 1E+38 would be refused as out of range)."""
    with localcontext() as ctx:
        ctx.prec = MAX_INTEGER_DIGITS + MAX_FRACTION_DIGITS + 2
        return a - b


_RATE_PLACES = Decimal(1).scaleb(-MAX_FRACTION_DIGITS)


def _rate(converted: Decimal | None, total: Decimal) -> Decimal | None:
    """converted / total to 28 significant digits (a quotient is rarely exact), rounded to
    at most 38 places after the point so that it stays within the amounts' bounds; none
    when there is no total to divide by, or the rate rounds to 0 or exceeds the bounds."""
    if converted is None or not total:
        return None
    rate = converted / total
    if rate.adjusted() >= MAX_INTEGER_DIGITS:
        return None
    exponent = rate.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if exponent < -MAX_FRACTION_DIGITS:  # then at most 27 digits are left: quantize cannot fail
        rate = rate.quantize(_RATE_PLACES)
    return rate or None


def _currency(code: str | None) -> str | None:
    return code.strip().upper() if code else None


def _required_currency(code: str | None, field: str) -> str:
    if not code:
        raise Rejected(f"{field}: a currency is required")
    return code.strip().upper()


def _event(entity: str, op: Op, key: str, payload: wire.Base, data: Entity, raw: bytes,
           source: str, received_at: datetime) -> Event:
    stamp = payload.updatedAt or payload.createdAt
    return make_event(provider=PROVIDER, source=source, tenant=payload.companyId or "", entity=entity,
                      op=op, key=key, time=_instant(stamp, "updatedAt") or received_at, data=data,
                      version=stamp or None, raw=raw)


def _removed_event(family: str, payload: wire.Removed, raw: bytes, source: str,
                   received_at: datetime) -> Event:
    if not payload.key:
        raise Rejected(f"{family}_REMOVE: no _id or id")
    entity = wire.GENERIC.get(family) or wire.FAMILIES[family][0]
    return make_event(provider=PROVIDER, source=source, tenant=payload.companyId or "", entity=entity,
                      op="deleted", key=payload.key,
                      time=_instant(payload.updatedAt, "updatedAt") or received_at, data=None,
                      version=payload.updatedAt, raw=raw)


def _generic_event(family: str, op: Op, body: dict[str, Any], raw: bytes, source: str,
                   received_at: datetime) -> Event:
    key = body.get("_id") or body.get("id")
    if not isinstance(key, str) or not key:
        raise Rejected(f"{family}: no _id or id")
    created, updated = body.get("createdAt"), body.get("updatedAt")
    stamp = updated if isinstance(updated, str) else created if isinstance(created, str) else None
    name = next((body[k] for k in ("name", "title", "username", "number", "key")
                 if isinstance(body.get(k), str)), None)
    record = Record(name=name, attributes={k: v for k, v in body.items() if k not in _DROP},
                    created_at=_instant(created if isinstance(created, str) else None, "createdAt"),
                    updated_at=_instant(updated if isinstance(updated, str) else None, "updatedAt"))
    company = body.get("companyId")
    return make_event(provider=PROVIDER, source=source,
                      tenant=company if isinstance(company, str) else "", entity=wire.GENERIC[family],
                      op=op, key=key, time=_instant(stamp, "updatedAt") or received_at,
                      data=record, version=stamp, raw=raw)


# ---------------------------------------------------------------- one builder per family

def _party(family: str, p: wire.Client) -> Party:
    roles: list[Any] = {"CUSTOMER": ["customer"], "SUPPLIER": ["supplier"]}.get((p.type or "").upper(), [])
    return Party(roles=roles, name=p.name, number=p.meta.clientNumber if p.meta else None,
                 email=p.email, phone=p.phone, vat_number=p.vatNumber,
                 registration_number=p.orgNumber, active=p.active,
                 created_at=_instant(p.createdAt, "createdAt"),
                 updated_at=_instant(p.updatedAt, "updatedAt"))


_INVOICE_KIND: dict[str, Literal["invoice", "credit_note", "order"]] = {
    "INVOICE": "invoice", "CREDIT": "credit_note", "ORDER": "order"}
_INVOICE_STATUS = {"PAID": "paid", "UNPAID": "open", "PROCESSING": "open", "OVERDUE": "open",
                   "SENT": "open", "DRAFT": "draft", "PARTIALLY_PAID": "partially_paid"}


def _invoice(family: str, p: wire.Invoice) -> Invoice:
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
    return Invoice(
        kind=_INVOICE_KIND.get((p.type or "INVOICE").upper(), "invoice"),
        direction="payable" if (p.clientType or "").upper() == "SUPPLIER" else "receivable",
        number=p.meta.invoiceNumber if p.meta else None,
        party=PartyRef(key=p.clientId, name=contact.name if contact else None,
                       number=p.meta.clientNumber if p.meta else None),
        issued=_date(p.dates.invoiceSent, "dates.invoiceSent") if p.dates else None,
        due=_date(p.dates.invoiceDue, "dates.invoiceDue") if p.dates else None,
        paid=_date(p.dates.invoicePaid, "dates.invoicePaid") if p.dates else None,
        status=status, provider_status=raw_status,
        currency=_required_currency(original.currency, "sums.original.currency"),
        net=_difference(total, tax) if tax is not None else None, tax=tax, total=total,
        converted_currency=_currency(system.currency) if system else None,
        converted_tax=converted_tax, converted_total=converted_total,
        conversion_rate=_rate(converted_total, total),
        payments=_payments(p.payments),
        created_at=_instant(p.createdAt, "createdAt"), updated_at=_instant(p.updatedAt, "updatedAt"))


def _payments(payments: list[wire.Payment]) -> list[PaymentRef]:
    refs = []
    for i, x in enumerate(payments):
        paid = amount(x.total, f"payments[{i}].total")
        if paid is not None:
            refs.append(PaymentRef(date=_date(x.date, "payments.date"), amount=paid,
                                   currency=_currency(x.currency or x.currencty)))
    return refs


_TX_KIND = {"DEPOSIT": "deposit", "WITHDRAWAL": "withdrawal", "TRANSFER": "transfer",
            "PAYMENT": "payment"}
_TX_STATUS: dict[str, Any] = {"PAID": "completed", "COMPLETED": "completed", "BOOKED": "completed",
              "UNPAID": "pending", "PENDING": "pending", "CANCELED": "cancelled",
              "CANCELLED": "cancelled"}
_LINK_ENTITY = {"INVOICE_PAYMENT": "invoice", "INVOICE": "invoice", "TRANSACTION": "transaction"}


def _transaction(family: str, p: wire.Transaction) -> Transaction:
    original = p.sums.original if p.sums else None
    system = p.sums.system if p.sums else None
    if original is None or original.amount is None or not original.currency:
        raise Rejected(f"{family}: sums.original needs total and currency")
    total, _ = _sum(original, "sums.original")
    assert total is not None
    converted, _ = _sum(system, "sums.system")
    kind_raw = (p.type or "").upper()
    kind: Any = "bank_transaction" if family == "BANK_TRANSACTION" else _TX_KIND.get(kind_raw, "payment")
    direction: Any = {"DEPOSIT": "in", "WITHDRAWAL": "out"}.get(kind_raw)
    links = []
    for i, link in enumerate(p.links):
        if not link.id:
            continue
        lsum = link.sums.original if link.sums else None
        links.append(Link(entity=_LINK_ENTITY.get((link.type or "").upper(), "unknown"), key=link.id,
                          type=(link.type or "").lower() or None,
                          amount=_sum(lsum, f"links[{i}].sums.original")[0],
                          currency=_currency(lsum.currency) if lsum else None))
    return Transaction(
        kind=kind, direction=direction, date=_date(p.paymentDate, "paymentDate"),
        status=_TX_STATUS.get((p.status or "").upper(), "unknown"), provider_status=p.status,
        amount=total, currency=_required_currency(original.currency, "sums.original.currency"),
        converted_amount=converted,
        converted_currency=_currency(system.currency) if system else None,
        reference=p.reference, description=p.description,
        party=PartyRef(key=next((x.clientId for x in p.links if x.clientId), None))
        if any(x.clientId for x in p.links) else None,
        bank_account=p.bankAccountId, links=links,
        created_at=_instant(p.createdAt, "createdAt"), updated_at=_instant(p.updatedAt, "updatedAt"))


def _bank_account(family: str, p: wire.BankAccount) -> BankAccount:
    return BankAccount(name=p.name, number=p.account or p.number, iban=p.iban, bic=p.bic,
                       clearing=p.clearing, bank=p.bank, currency=_currency(p.currency), active=p.active,
                       created_at=_instant(p.createdAt, "createdAt"),
                       updated_at=_instant(p.updatedAt, "updatedAt"))


def _product(family: str, p: wire.Product) -> Product:
    return Product(name=p.name, number=p.number, description=p.description, unit=p.unit,
                   unit_price=_sum(p.price, "price")[0],
                   currency=_currency(p.price.currency) if p.price else None,
                   tax_rate=amount(p.taxRate, "taxRate"),
                   active=p.active, created_at=_instant(p.createdAt, "createdAt"),
                   updated_at=_instant(p.updatedAt, "updatedAt"))


_BUILDERS: dict[str, Any] = {
    "CLIENT": _party, "INVOICE": _invoice, "TRANSACTION": _transaction,
    "BANK_TRANSACTION": _transaction, "BANK_ACCOUNT": _bank_account, "PRODUCT": _product,
}
