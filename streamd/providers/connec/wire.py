"""Maestrano Connec! (API v2) and Maestrano's account webhooks: the wire format.

Documented (the provider's own documents; see docs/providers/connec.md) [D]: REST under
`/api/v2/{group_id}/{collection}` with HTTP Basic (api id / api key) and
`Accept: application/vnd.api+json`; paging `$top`/`$skip`, `$orderby`, the filter
`$filter=updated_at gt '2017-01-01T00:00:00Z'`; list answers `{"<collection>": [...],
"pagination": {"next": "<url>"}}`; webhook notifications POSTed to
`notifications_path` (optionally `/<tenant>`), a body keyed by collection holding only
the subscribed ones; the account webhooks `DELETE groups_path` and `DELETE
group_users_path`, HTTP Basic; entity ids as lists of `{"provider", "id", "realm"}`;
the invoice fields below. Seen in Maestrano's SDKs [C]: the other entities' field
names. Inferred [I], each one constant or Struct field here: `group_id` on entities,
`pagination.total`, and that `updated_at` moves on every change.

Structs accept unknown fields (Connec! adds fields freely); amounts are `Decimal`.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

PROVIDER = "connec"
#: The `provider` of the id entry Connec! itself assigns [D].
CONNEC_ID = "connec"
ACCEPT = "application/vnd.api+json"
NOTIFICATIONS_PATH = "/maestrano/connec/notifications"
GROUPS_PATH = "/maestrano/account/groups/{id}"
GROUP_USERS_PATH = "/maestrano/account/groups/{group_id}/users/{id}"
API_PATH = "/api/v2/{group_id}/{collection}"
MAX_TOP = 500  # the largest `$top` [I]

#: Collection (the key of a notification body, the path of a list) -> unified entity.
COLLECTIONS: dict[str, str] = {
    "invoices": "invoice",
    "organizations": "party",
    "people": "party",
    "payments": "transaction",
    "items": "product",
    "accounts": "account",
    "company": "company",
    "tax_codes": "tax_code",
}
#: Invoice `status` [D] -> unified status.
INVOICE_STATUS: dict[str, str] = {
    "DRAFT": "draft",
    "AUTHORISED": "open",
    "PAID": "paid",
    "VOIDED": "cancelled",
}
#: Invoice `type` [D] -> direction (CUSTOMER: we billed a customer).
INVOICE_TYPE: dict[str, str] = {"CUSTOMER": "receivable", "SUPPLIER": "payable"}
#: Payment `type` [C] -> direction of the money (CUSTOMER: a customer paid us).
PAYMENT_TYPE: dict[str, str] = {"CUSTOMER": "in", "SUPPLIER": "out"}
#: Payment `status` [I] -> unified status; another value is "unknown".
PAYMENT_STATUS: dict[str, str] = {
    "ACTIVE": "completed",
    "INACTIVE": "cancelled",
    "VOIDED": "cancelled",
    "DRAFT": "pending",
    "PENDING": "pending",
}


class IdRef(msgspec.Struct, kw_only=True):
    provider: str | None = None
    id: str | int | None = None
    realm: str | None = None


class Amount(msgspec.Struct, kw_only=True):
    net_amount: Decimal | None = None
    tax_amount: Decimal | None = None
    total_amount: Decimal | None = None
    tax_rate: Decimal | None = None
    currency: str | None = None


class Address(msgspec.Struct, kw_only=True):
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    region: str | None = None
    postal_code: str | None = None
    country: str | None = None


class Addresses(msgspec.Struct, kw_only=True):
    billing: Address | None = None
    shipping: Address | None = None


class Email(msgspec.Struct, kw_only=True):
    address: str | None = None


class Phone(msgspec.Struct, kw_only=True):
    landline: str | None = None
    mobile: str | None = None


class _Entity(msgspec.Struct, kw_only=True):
    id: list[IdRef] = []
    group_id: str | None = None  # [I]
    created_at: str | None = None
    updated_at: str | None = None


class InvoiceLine(msgspec.Struct, kw_only=True):
    line_number: int | None = None
    description: str | None = None
    quantity: Decimal | None = None
    unit_price: Amount | None = None
    total_price: Amount | None = None
    item_id: list[IdRef] | str | None = None


class Invoice(_Entity, kw_only=True):
    transaction_number: str | None = None
    transaction_date: str | None = None
    due_date: str | None = None
    status: str | None = None
    type: str | None = None
    title: str | None = None
    balance: Decimal | None = None
    amount: Amount | None = None
    person_id: list[IdRef] | str | None = None
    organization_id: list[IdRef] | str | None = None
    lines: list[InvoiceLine] = []


class Organization(_Entity, kw_only=True):
    name: str | None = None
    reference: str | None = None
    is_customer: bool | None = None
    is_supplier: bool | None = None
    tax_number: str | None = None
    status: str | None = None
    email: Email | None = None
    phone: Phone | None = None
    address: Addresses | None = None


class Person(_Entity, kw_only=True):
    first_name: str | None = None
    last_name: str | None = None
    reference: str | None = None
    is_customer: bool | None = None
    is_supplier: bool | None = None
    email: Email | None = None
    phone_work: Phone | None = None
    address_work: Addresses | None = None
    organization_id: list[IdRef] | str | None = None


class LinkedTransaction(msgspec.Struct, kw_only=True):
    id: list[IdRef] | str | None = None
    # The linked record's class ("Invoice", …), `class` on the wire.
    kind: str | None = msgspec.field(default=None, name="class")
    applied_amount: Decimal | None = None


class PaymentLine(msgspec.Struct, kw_only=True):
    amount: Decimal | None = None
    linked_transactions: list[LinkedTransaction] = []


class Payment(_Entity, kw_only=True):
    transaction_date: str | None = None
    type: str | None = None  # CUSTOMER (money in) | SUPPLIER (money out)
    status: str | None = None
    payment_reference: str | None = None
    amount: Amount | None = None
    person_id: list[IdRef] | str | None = None
    organization_id: list[IdRef] | str | None = None
    payment_lines: list[PaymentLine] = []


class Item(_Entity, kw_only=True):
    code: str | None = None
    name: str | None = None
    description: str | None = None
    status: str | None = None
    sale_price: Amount | None = None
    unit: str | None = None


class Pagination(msgspec.Struct, kw_only=True):
    next: str | None = None
    total: int | None = None  # [I]


class Ids(msgspec.Struct, kw_only=True):
    """Just the ids and the change stamp, to key an entity whether or not it normalizes."""

    id: list[IdRef] | str | int | None = None
    group_id: str | None = None
    updated_at: str | None = None


#: Each collection's Struct; the others (accounts, company, tax_codes) are kept as records.
RECORD_TYPES: dict[str, type[_Entity]] = {
    "invoices": Invoice,
    "organizations": Organization,
    "people": Person,
    "payments": Payment,
    "items": Item,
}

body_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
pagination_decoder = msgspec.json.Decoder(Pagination)
ids_decoder = msgspec.json.Decoder(Ids)
