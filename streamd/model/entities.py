"""The unified entities carried in the feed's `data`. Pure data; `docs/model.md` documents
every field and each provider's mapping table says which wire field fills it.

Rules that keep consumers safe:
- Money is `Decimal`, encoded as a JSON string ("125.00"), always beside an ISO 4217
  `currency`. A float never enters the model.
- Dates are `date` ("2021-12-25"); instants are `datetime` in UTC (RFC 3339).
- New fields are only ever added with a default (msgspec schema evolution), so a
  consumer written against an older streamd keeps decoding. A field added to an entity
  that existing events already carry defaults to `UNSET` and is left out of the JSON
  until a provider sends it: a record the provider did not change keeps its content, so
  its content hash and event id (`envelope`) stay what they were.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

_T = TypeVar("_T")


def given(value: _T | UnsetType) -> _T | None:
    """A field added later, read as None when the event leaves it out (UNSET)."""
    return None if isinstance(value, UnsetType) else value


Currency = Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}\\Z", description="ISO 4217 code")]
Country = Annotated[str, msgspec.Meta(pattern="^[A-Z]{2}\\Z", description="ISO 3166-1 alpha-2")]


class _Entity(msgspec.Struct, frozen=True, kw_only=True):
    # Unknown fields are ignored, not refused: a consumer decoding with an older model
    # keeps working when a newer streamd adds a field (always with a default).
    pass


class Address(_Entity, frozen=True, kw_only=True):
    line1: str | None = None
    line2: str | None = None
    postal_code: str | None = None
    city: str | None = None
    region: str | None = None
    country: Country | None = None


class PartyRef(_Entity, frozen=True, kw_only=True):
    """A pointer from one entity to a party: the key, and what is known of it."""

    key: str | None = None
    name: str | None = None
    number: str | None = None
    # What the referring record says of the party's tax identity and where it is (for VAT:
    # reverse charge turns on the customer's country and VAT number). Added later: UNSET
    # (left out) unless the provider says.
    vat_number: str | None | UnsetType = UNSET
    address: Address | None | UnsetType = UNSET


class Party(_Entity, frozen=True, kw_only=True):
    """A customer or supplier (or both)."""

    roles: list[Literal["customer", "supplier"]] = []
    name: str | None = None
    number: str | None = None
    email: str | None = None
    phone: str | None = None
    vat_number: str | None = None
    registration_number: str | None = None
    iban: str | None = None
    address: Address | None = None
    currency: Currency | None = None
    active: bool | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


class InvoiceLine(_Entity, frozen=True, kw_only=True):
    description: str | None = None
    product: str | None = None
    quantity: Decimal | None = None
    unit_price: Decimal | None = None
    net: Decimal | None = None
    tax: Decimal | None = None
    tax_rate: Decimal | None = None  # percent: "25" is 25 %
    total: Decimal | None = None


class TrafficLine(_Entity, frozen=True, kw_only=True):
    """Messaging traffic billed on an invoice (HORISEN's traffic reports): one row per
    pricing condition, destination country and operator."""

    pricing: str | None = None  # the pricing condition's name
    country: str | None = None  # the destination country, as the provider names it
    operator: str | None = None
    mcc: str | None = None  # mobile country code, digits as sent ("262")
    mnc: str | None = None  # mobile network code, digits as sent ("01")
    messages: int | None = None
    unit_price: Decimal | None = None
    amount: Decimal | None = None
    currency: Currency | None = None


class PaymentRef(_Entity, frozen=True, kw_only=True):
    """A payment recorded against an invoice."""

    key: str | None = None
    date: dt.date | None = None
    amount: Decimal
    currency: Currency | None = None
    reference: str | None = None


class InvoiceRef(_Entity, frozen=True, kw_only=True):
    """A pointer to an invoice: its key where the provider gives it, else its number."""

    key: str | None = None
    number: str | None = None


InvoiceStatus = Literal["draft", "open", "partially_paid", "paid", "cancelled", "unknown"]
InvoiceKind = Literal["invoice", "credit_note", "order"]


class Invoice(_Entity, frozen=True, kw_only=True):
    kind: InvoiceKind = "invoice"
    # receivable: we billed a customer (sales); payable: a supplier billed us (purchase)
    direction: Literal["receivable", "payable"]
    number: str | None = None
    # The provider's globally unique id of the document (HORISEN's documentUuid). This
    # and the other fields marked "later" are UNSET (left out) unless the provider says.
    uuid: str | None | UnsetType = UNSET
    party: PartyRef | None = None
    issued: dt.date | None = None
    due: dt.date | None = None
    # The service period the document bills, first and last day (later).
    period_start: dt.date | None | UnsetType = UNSET
    period_end: dt.date | None | UnsetType = UNSET
    paid: dt.date | None = None
    status: InvoiceStatus = "unknown"
    provider_status: str | None = None
    currency: Currency
    net: Decimal | None = None
    tax: Decimal | None = None
    total: Decimal
    unpaid: Decimal | None = None
    # Amount paid so far, as the provider sums it (later).
    paid_amount: Decimal | None | UnsetType = UNSET
    converted_currency: Currency | None = None
    converted_net: Decimal | None = None
    converted_tax: Decimal | None = None
    converted_total: Decimal | None = None
    conversion_rate: Decimal | None = None  # converted_total = total * conversion_rate
    description: str | None = None
    lines: list[InvoiceLine] = []
    payments: list[PaymentRef] = []
    # Traffic billed by the invoice, where the provider reports it (HORISEN).
    traffic: list[TrafficLine] = []
    # The provider has traffic reports for this invoice that could not be fetched (a
    # dead-lettered invoice taken again): `traffic` is empty for that reason alone (later).
    traffic_missing: bool | UnsetType = UNSET
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    # Added later: in the JSON only when the provider says (see the module's docstring).
    # True: a forecast, an invoice expected but not issued (Asteria `info.isForecast`).
    forecast: bool | UnsetType = UNSET
    # False: the provider no longer counts the invoice (Asteria `active: false`).
    active: bool | UnsetType = UNSET
    # What a credit note credits (Asteria `credits`: invoice numbers).
    credits: list[InvoiceRef] | UnsetType = UNSET


class Link(_Entity, frozen=True, kw_only=True):
    """What a transaction settles or relates to (an invoice, a bill, another transaction)."""

    entity: str
    key: str
    type: str | None = None
    amount: Decimal | None = None
    currency: Currency | None = None


TransactionStatus = Literal["pending", "completed", "cancelled", "unknown"]


class Transaction(_Entity, frozen=True, kw_only=True):
    """A payment or a bank transaction."""

    kind: Literal["payment", "bank_transaction", "deposit", "withdrawal", "transfer", "other"]
    direction: Literal["in", "out"] | None = None
    date: dt.date | None = None
    status: TransactionStatus = "unknown"
    provider_status: str | None = None
    amount: Decimal
    currency: Currency
    converted_amount: Decimal | None = None
    converted_currency: Currency | None = None
    reference: str | None = None
    description: str | None = None
    party: PartyRef | None = None
    bank_account: str | None = None
    links: list[Link] = []
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


class BankAccount(_Entity, frozen=True, kw_only=True):
    name: str | None = None
    number: str | None = None
    iban: str | None = None
    bic: str | None = None
    clearing: str | None = None
    bank: str | None = None
    currency: Currency | None = None
    active: bool | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


class Product(_Entity, frozen=True, kw_only=True):
    name: str | None = None
    number: str | None = None
    description: str | None = None
    unit: str | None = None
    unit_price: Decimal | None = None
    currency: Currency | None = None
    tax_rate: Decimal | None = None  # percent: "25" is 25 %
    active: bool | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


class Record(_Entity, frozen=True, kw_only=True):
    """Anything a provider adds beyond the entities above (voucher, tag, integration,
    user, group, traffic report…). The event's `entity` names the kind. Amounts in
    `attributes` are decimal strings, never JSON numbers with a fraction."""

    name: str | None = None
    attributes: dict[str, Any] = {}
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


#: entity name → its Struct. Any other entity name carries a `Record`.
ENTITIES: dict[str, type[_Entity]] = {
    "party": Party,
    "invoice": Invoice,
    "transaction": Transaction,
    "bank_account": BankAccount,
    "product": Product,
}

Entity = Party | Invoice | Transaction | BankAccount | Product | Record


def entity_type(entity: str) -> type[_Entity]:
    return ENTITIES.get(entity, Record)
