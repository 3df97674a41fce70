"""Connec! entities → unified events. Pure: bytes and `received_at` in, events out, or
`Rejected` naming the collection, the entity's key when it can be read, and the field. No
sockets, no clock. The mapping table is docs/providers/connec.md.

- Webhook bodies are split (`split_body`); webhook and poller run each entity through
  `entity_event`, whose version is `updated_at` as sent: the same version seen both ways
  is one event (same id).
- `created` when `created_at` and `updated_at` are the same instant, else `updated`.
- Stamps are RFC 3339 (no offset: UTC), converted to UTC. A date is the date in the
  source's `timezone` (UTC unless configured; Connec! writes dates as midnight UTC stamps,
  `2017-01-01T00:00:00Z`), by `model/fields.py`'s one rule.
- Kind and status follow `model/rules.py`, as for every provider: a negative invoice is a
  credit note, an `AUTHORISED` one whose `balance` is between 0 and its total is partially
  paid.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import Any, Literal, TypeVar, get_args

import msgspec

from ...errors import Rejected
from ...model import (
    Address,
    Event,
    Invoice,
    InvoiceLine,
    Link,
    Party,
    PartyRef,
    Product,
    Record,
    Transaction,
    make_event,
    rules,
)
from ...model.check import checked
from ...model.entities import Entity, InvoiceStatus, TransactionStatus
from ...model.fields import COUNTRY as _COUNTRY
from ...model.fields import DECODE_ERRORS as _DECODE_ERRORS
from ...model.fields import amount as _amount
from ...model.fields import code as _code
from ...model.fields import currency as _currency
from ...model.fields import day as _date
from ...model.fields import ident as _ident
from ...model.fields import instant as _instant
from ...model.fields import text as _text
from ...model.fields import utc as _utc
from . import wire

#: More digits than this before or after the point: no amount (as for HORISEN).
#: The version of an account deletion: a redelivered DELETE has the same id.
ACCOUNT_VERSION = "account-webhook"

T = TypeVar("T")
Direction = Literal["receivable", "payable"]
Flow = Literal["in", "out"]
Role = Literal["customer", "supplier"]



def _typed(table: dict[str, str], values: tuple[Any, ...]) -> dict[str, Any]:
    """A wire table, typed: a value the model's Literal does not know fails at import."""
    assert set(table.values()) <= set(values), table
    return table


_INVOICE_STATUS: dict[str, InvoiceStatus] = _typed(wire.INVOICE_STATUS, get_args(InvoiceStatus))
_DIRECTION: dict[str, Direction] = _typed(wire.INVOICE_TYPE, get_args(Direction))
_PAYMENT_STATUS: dict[str, TransactionStatus] = _typed(wire.PAYMENT_STATUS, get_args(TransactionStatus))
_FLOW: dict[str, Flow] = _typed(wire.PAYMENT_TYPE, get_args(Flow))

#: msgspec raises RecursionError for JSON nested deeper than it follows.


class _Key(msgspec.Struct, kw_only=True):
    id: list[wire.IdRef] | str | int | None = None


class _Group(_Key, kw_only=True):
    group_id: str | None = None


class _Head(_Group, kw_only=True):
    created_at: str | None = None
    updated_at: str | None = None


_key_decoder = msgspec.json.Decoder(_Key)
_group_decoder = msgspec.json.Decoder(_Group)
_head_decoder = msgspec.json.Decoder(_Head)
_decoders = {name: msgspec.json.Decoder(kind) for name, kind in wire.RECORD_TYPES.items()}
_generic = msgspec.json.Decoder(dict[str, Any], float_hook=Decimal)
#: Not in a record's `attributes`: they are the event's or the record's own fields.
_NOT_ATTRIBUTES = frozenset({"id", "group_id", "created_at", "updated_at", "name"})


def split_body(body: bytes) -> list[tuple[str, bytes]]:
    """`{"<collection>": [{…}, …] or {…}, …}` → (collection, one entity's exact bytes), in
    body order. Unknown collections, and list items that are no object, are kept:
    `entity_event` refuses them one by one."""
    try:
        collections = wire.body_decoder.decode(body)
    except _DECODE_ERRORS as exc:
        raise Rejected(f"notification: {exc}") from None
    entities: list[tuple[str, bytes]] = []
    for collection, value in collections.items():
        raw = bytes(value)
        if raw.startswith(b"{"):
            entities.append((collection, raw))
        elif raw.startswith(b"["):
            try:
                items = wire.list_decoder.decode(raw)
            except _DECODE_ERRORS as exc:
                raise Rejected(f"notification: {collection!r}: {exc}") from None
            entities.extend((collection, bytes(item)) for item in items)
        else:
            raise Rejected(f"notification: {collection!r} is neither an object nor a list: {raw[:20]!r}")
    return entities


def entity_key(raw: bytes) -> str:
    """The entity's key, read from its `id` alone."""
    try:
        key = _ref_key(_key_decoder.decode(raw).id)
    except _DECODE_ERRORS as exc:
        raise Rejected(f"no usable id: {exc}") from None
    if key is None:
        raise Rejected("no usable id: `id` is missing or empty")
    return key


def entity_tenant(raw: bytes, fallback: str | None) -> str:
    """The entity's group: `group_id`, else the connec id's `realm`, else `fallback`."""
    try:
        head = _group_decoder.decode(raw)
    except _DECODE_ERRORS as exc:
        raise Rejected(f"no usable group: {exc}") from None
    return _tenant(head, fallback)


def entity_event(collection: str, raw: bytes, *, source: str, tenant: str | None,
                 received_at: datetime, zone: tzinfo = UTC) -> Event:
    """One entity → its event, or `Rejected` ("invoices b2d9…: amount.currency missing")."""
    entity = wire.COLLECTIONS.get(collection)
    if entity is None:
        raise Rejected(f"unknown collection {collection!r}")
    try:
        head = _head_decoder.decode(raw)
    except _DECODE_ERRORS as exc:
        try:
            where = f"{collection} {entity_key(raw)}"
        except Rejected:
            where = collection
        raise Rejected(f"{where}: {exc}") from None
    key = _ref_key(head.id)
    if key is None:
        raise Rejected(f"{collection}: no usable id: `id` is missing or empty")
    try:
        group = _tenant(head, tenant)
        created = _instant(head.created_at, "created_at")
        updated = _instant(head.updated_at, "updated_at")
        data: Entity = checked(_build(collection, raw, created, updated, zone))
        return make_event(
            provider=wire.PROVIDER, source=source, tenant=group, entity=entity,
            op="created" if created is not None and created == updated else "updated", key=key,
            time=updated or _utc(received_at), data=data, version=_text(head.updated_at), raw=raw)
    except Rejected as exc:
        raise Rejected(f"{collection} {key}: {exc.reason}") from None
    except RecursionError:
        raise Rejected(f"{collection} {key}: nested too deeply") from None


def account_event(kind: Literal["group", "user"], group_id: str, user_id: str | None, *, source: str,
                  received_at: datetime) -> Event:
    """`DELETE groups/:id` ("group"), `DELETE groups/:group_id/users/:id` ("user") → `deleted`."""
    group = _text(group_id)
    if group is None:
        raise Rejected(f"{kind} deletion: the group id is empty")
    if kind == "group":
        key = group
    elif kind == "user":
        user = _text(user_id)
        if user is None:
            raise Rejected(f"user deletion in group {group}: the user id is empty")
        key = user
    else:
        raise Rejected(f"unknown account webhook {kind!r}")
    return make_event(provider=wire.PROVIDER, source=source, tenant=group, entity=kind, op="deleted",
                      key=key, time=_utc(received_at), data=Record(attributes={"group_id": group}),
                      version=ACCOUNT_VERSION)


# ---------------------------------------------------------------- builders

def _build(collection: str, raw: bytes, created: datetime | None, updated: datetime | None,
           zone: tzinfo) -> Entity:
    decoder = _decoders.get(collection)
    try:
        record = decoder.decode(raw) if decoder else _generic.decode(raw)
    except _DECODE_ERRORS as exc:
        raise Rejected(str(exc)) from None
    build: Any = _BUILDERS.get(collection, _record)
    entity: Entity = build(record, zone)
    return msgspec.structs.replace(entity, created_at=created, updated_at=updated)


def _record(body: dict[str, Any], zone: tzinfo) -> Record:
    name = body.get("name")
    return Record(name=_text(name) if isinstance(name, str) else None,
                  attributes={k: v for k, v in body.items() if k not in _NOT_ATTRIBUTES})


def _invoice(inv: wire.Invoice, zone: tzinfo) -> Invoice:
    amount = inv.amount or wire.Amount()
    currency, total = _money(amount)
    return rules.unified(Invoice(
        kind="invoice", direction=_kind(inv.type, _DIRECTION) or "receivable",
        number=_text(inv.transaction_number), party=_party_ref(inv.organization_id, inv.person_id),
        issued=_date(inv.transaction_date, "transaction_date", zone),
        due=_date(inv.due_date, "due_date", zone),
        status=_INVOICE_STATUS.get(_upper(inv.status) or "", "unknown"),
        provider_status=_text(inv.status), currency=currency,
        net=_amount(amount.net_amount, "amount.net_amount"),
        tax=_amount(amount.tax_amount, "amount.tax_amount"),
        total=total, unpaid=_amount(inv.balance, "balance"), description=_text(inv.title),
        lines=[_line(line, f"lines[{i}]") for i, line in enumerate(inv.lines)]))


def _line(line: wire.InvoiceLine, at: str) -> InvoiceLine:
    unit, price = line.unit_price or wire.Amount(), line.total_price or wire.Amount()
    return InvoiceLine(
        description=_text(line.description), product=_ref_key(line.item_id),
        quantity=_amount(line.quantity, f"{at}.quantity"),
        unit_price=_amount(unit.net_amount, f"{at}.unit_price.net_amount"),
        net=_amount(price.net_amount, f"{at}.total_price.net_amount"),
        tax=_amount(price.tax_amount, f"{at}.total_price.tax_amount"),
        tax_rate=_amount(unit.tax_rate, f"{at}.unit_price.tax_rate"),
        total=_amount(price.total_amount, f"{at}.total_price.total_amount"))


def _organization(org: wire.Organization, zone: tzinfo) -> Party:
    return Party(
        roles=_roles(org.is_customer, org.is_supplier), name=_text(org.name), number=_text(org.reference),
        email=_text(org.email.address) if org.email else None, phone=_phone(org.phone),
        vat_number=_text(org.tax_number), address=_address(org.address, "address.billing"),
        active=_active(org.status))


def _person(person: wire.Person, zone: tzinfo) -> Party:
    name = " ".join(n for n in (_text(person.first_name), _text(person.last_name)) if n)
    return Party(
        roles=_roles(person.is_customer, person.is_supplier), name=name or None,
        number=_text(person.reference), email=_text(person.email.address) if person.email else None,
        phone=_phone(person.phone_work), address=_address(person.address_work, "address_work.billing"))


def _payment(pay: wire.Payment, zone: tzinfo) -> Transaction:
    currency, total = _money(pay.amount or wire.Amount())
    links: list[Link] = []
    for i, line in enumerate(pay.payment_lines):
        line_amount = _amount(line.amount, f"payment_lines[{i}].amount")
        for j, linked in enumerate(line.linked_transactions):
            at = f"payment_lines[{i}].linked_transactions[{j}]"
            applied = _amount(linked.applied_amount, f"{at}.applied_amount")
            key = _ref_key(linked.id)
            if key is None:  # nothing to point at
                continue
            cls = _text(linked.kind)
            links.append(Link(entity=_entity_name(cls), key=key, type=cls,
                              amount=line_amount if applied is None else applied, currency=currency))
    return Transaction(
        kind="payment", direction=_kind(pay.type, _FLOW),
        date=_date(pay.transaction_date, "transaction_date", zone),
        status=_PAYMENT_STATUS.get(_upper(pay.status) or "", "unknown"),
        provider_status=_text(pay.status), amount=total, currency=currency,
        reference=_text(pay.payment_reference), party=_party_ref(pay.organization_id, pay.person_id),
        links=links)


def _item(item: wire.Item, zone: tzinfo) -> Product:
    price = item.sale_price or wire.Amount()
    return Product(
        name=_text(item.name), number=_text(item.code), description=_text(item.description),
        unit=_text(item.unit), unit_price=_amount(price.net_amount, "sale_price.net_amount"),
        currency=_currency(price.currency, "sale_price.currency"),
        tax_rate=_amount(price.tax_rate, "sale_price.tax_rate"), active=_active(item.status))


_BUILDERS = {"invoices": _invoice, "organizations": _organization, "people": _person,
             "payments": _payment, "items": _item}


# ---------------------------------------------------------------- helpers

def _ref_key(value: list[wire.IdRef] | str | int | None) -> str | None:
    """The `connec` entry's id; else the first entry's `<provider>:<id>`; a plain id as is."""
    if not isinstance(value, list):
        return _ident(value)
    first = None
    for ref in value:
        ident = _ident(ref.id)
        if ident is None:
            continue
        provider = _text(ref.provider)
        if provider == wire.CONNEC_ID:
            return ident
        if first is None:
            first = f"{provider}:{ident}" if provider else ident
    return first


def _tenant(head: _Group, fallback: str | None) -> str:
    refs = head.id if isinstance(head.id, list) else []
    realms = (_text(r.realm) for r in refs if _text(r.provider) == wire.CONNEC_ID and _ident(r.id))
    group = _text(head.group_id) or next(filter(None, realms), None) or _text(fallback)
    if group is None:
        raise Rejected("no group: no `group_id`, no `realm` on the connec id, and no tenant given")
    return group


def _money(amount: wire.Amount) -> tuple[str, Decimal]:
    """`amount`'s currency and total, both required."""
    currency = _currency(amount.currency, "amount.currency")
    total = _amount(amount.total_amount, "amount.total_amount")
    if currency is None or total is None:
        raise Rejected(f"amount.{'currency' if currency is None else 'total_amount'} missing")
    return currency, total


def _kind(value: str | None, table: dict[str, T]) -> T | None:
    """`type` through `table`, case-insensitively; another value is refused."""
    kind = _upper(value)
    if kind is not None and kind not in table:
        raise Rejected(f"type: {value!r} is not one of {', '.join(table)}")
    return table[kind] if kind else None


def _party_ref(organization: list[wire.IdRef] | str | None,
               person: list[wire.IdRef] | str | None) -> PartyRef | None:
    key = _ref_key(organization) or _ref_key(person)
    return PartyRef(key=key) if key else None


def _roles(customer: bool | None, supplier: bool | None) -> list[Role]:
    flags: tuple[tuple[Role, bool | None], ...] = (("customer", customer), ("supplier", supplier))
    return [role for role, flag in flags if flag]


def _entity_name(cls: str | None) -> str:
    """`Invoice` → `invoice`, `CreditNote` → `credit_note`; `unknown` without a class."""
    if cls is None:
        return "unknown"
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", cls).lower()


def _phone(phone: wire.Phone | None) -> str | None:
    return (_text(phone.landline) or _text(phone.mobile)) if phone else None


def _active(status: str | None) -> bool | None:
    value = _upper(status)
    return None if value is None else value != "INACTIVE"


def _address(addresses: wire.Addresses | None, field: str) -> Address | None:
    a = addresses.billing if addresses else None
    if a is None:
        return None
    address = Address(line1=_text(a.line1), line2=_text(a.line2), postal_code=_text(a.postal_code),
                      city=_text(a.city), region=_text(a.region),
                      country=_code(a.country, f"{field}.country", _COUNTRY, "an ISO 3166-1 alpha-2 code"))
    return None if address == Address() else address






def _upper(value: str | None) -> str | None:
    text = _text(value)
    return text.upper() if text else None











