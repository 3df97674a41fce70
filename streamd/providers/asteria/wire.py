"""Asteria's partner-gateway wire format: topics, framing, payload shapes.

What is documented (seed `000_…`): the topics of `PARTNER_WEBHOOK_ENUM`; webhook
deliveries as `POST` with `x-asteria-topic: <TOPIC>` and a JSON body; the
CLIENT_UPDATE, INVOICE_UPDATE and TRANSACTION_UPDATE bodies; `*_REMOVE` bodies
holding only `{"_id": …}`. What is inferred ([inferred] in docs/providers/asteria.md) is
marked here: the websocket framing, and the shapes of the other entities.

Payload Structs accept unknown fields (Asteria adds fields freely); amounts are
`Decimal`, so JSON numbers are read digit for digit, never through a float. They are
`gc=False`: decoded from JSON, they hold only strings, numbers, lists and other such
Structs, so they can never be part of a reference cycle, and the collector need not
track the many made per second (1 % fewer instructions per seed-shaped frame, counted
with callgrind).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

#: Asteria is Swedish: the business time zone its dates are read in, unless the source's
#: `timezone` says otherwise (its stamps are UTC: `2021-12-24T23:00:00.000Z`).
TIMEZONE = "Europe/Stockholm"

#: PARTNER_WEBHOOK_ENUM, in the seed's order.
TOPICS: tuple[str, ...] = (
    "CLIENT_CREATE", "CLIENT_UPDATE", "CLIENT_REMOVE",
    "INVOICE_CREATE", "INVOICE_UPDATE", "INVOICE_REMOVE",
    "PRODUCT_CREATE", "PRODUCT_UPDATE", "PRODUCT_REMOVE",
    "VOUCHER_CREATE", "VOUCHER_UPDATE", "VOUCHER_REMOVE",
    "BANK_ACCOUNT_CREATE", "BANK_ACCOUNT_UPDATE", "BANK_ACCOUNT_REMOVE",
    "BANK_TRANSACTION_CREATE", "BANK_TRANSACTION_UPDATE", "BANK_TRANSACTION_REMOVE",
    "TAG_UPDATE", "TAG_REMOVE",
    "INTEGRATION_CREATE", "INTEGRATION_UPDATE", "INTEGRATION_REMOVE",
    "TRANSACTION_CREATE", "TRANSACTION_UPDATE", "TRANSACTION_REMOVE",
    "USER_CREATE", "USER_UPDATE", "USER_REMOVE",
)
TOPIC_SET = frozenset(TOPICS)


def split_topic(topic: str) -> tuple[str, str]:
    """"BANK_ACCOUNT_UPDATE" -> ("BANK_ACCOUNT", "UPDATE")."""
    family, _, action = topic.rpartition("_")
    return family, action


# ---------------------------------------------------------------- framing [I]

class Frame(msgspec.Struct, gc=False):
    topic: str
    data: msgspec.Raw


_frame_decoder = msgspec.json.Decoder(Frame)
_encoder = msgspec.json.Encoder(decimal_format="number")


def parse_frame(message: bytes | str) -> tuple[str, bytes]:
    """One websocket text frame -> (topic, the payload's own bytes).

    The framing is not public: this assumes one JSON object per frame,
    `{"topic": "INVOICE_UPDATE", "data": {…}}`. If the real gateway frames
    differently, this function and `encode_frame` are the only change.
    Raises msgspec.DecodeError / ValidationError for a malformed frame, one that is
    not UTF-8 included: JSON is UTF-8 (RFC 8259), and msgspec checks the strings it
    reads but not those it skips (an unknown field's), nor the bytes it keeps raw."""
    if isinstance(message, bytes):
        _check_utf8(message)
    frame = _frame_decoder.decode(message)
    return frame.topic, bytes(frame.data)


def _check_utf8(message: bytes) -> None:
    """Raises msgspec.DecodeError, naming the first bad byte, unless `message` is UTF-8."""
    if not message.isascii():  # one fast pass for most frames
        try:
            message.decode()
        except UnicodeDecodeError as exc:
            raise msgspec.DecodeError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None


def encode_frame(topic: str, data: bytes) -> bytes:
    return b'{"topic":' + _encoder.encode(topic) + b',"data":' + data + b"}"


# ---------------------------------------------------------------- payloads

class Sum(msgspec.Struct, kw_only=True, gc=False):
    total: Decimal | None = None
    invoiceTotal: Decimal | None = None  # noqa: N815 - Asteria's field names
    tax: Decimal | None = None
    currency: str | None = None

    @property
    def amount(self) -> Decimal | None:
        return self.invoiceTotal if self.invoiceTotal is not None else self.total


class Sums(msgspec.Struct, kw_only=True, gc=False):
    original: Sum | None = None
    system: Sum | None = None


class Base(msgspec.Struct, kw_only=True, gc=False):
    """What every entity payload has: Mongo-style ids, the company, the stamps."""

    mongo_id: str | None = msgspec.field(default=None, name="_id")
    id: str | None = None
    companyId: str | None = None  # noqa: N815
    createdAt: str | None = None  # noqa: N815
    updatedAt: str | None = None  # noqa: N815
    active: bool | None = None

    @property
    def key(self) -> str | None:
        return self.mongo_id or self.id


class Removed(msgspec.Struct, gc=False):
    """A `*_REMOVE` body: only the id (sometimes more, which is ignored)."""

    mongo_id: str | None = msgspec.field(default=None, name="_id")
    id: str | None = None
    companyId: str | None = None  # noqa: N815
    updatedAt: str | None = None  # noqa: N815

    @property
    def key(self) -> str | None:
        return self.mongo_id or self.id


class ClientMeta(msgspec.Struct, gc=False):
    clientNumber: str | None = None  # noqa: N815
    source: str | None = None


class Client(Base, kw_only=True):
    type: str | None = None  # CUSTOMER | SUPPLIER
    name: str | None = None
    meta: ClientMeta | None = None
    # [I] beyond the seed's example:
    email: str | None = None
    phone: str | None = None
    vatNumber: str | None = None  # noqa: N815
    orgNumber: str | None = None  # noqa: N815


class InvoiceMeta(msgspec.Struct, gc=False):
    invoiceNumber: str | None = None  # noqa: N815
    clientNumber: str | None = None  # noqa: N815
    source: str | None = None


class InvoiceDates(msgspec.Struct, gc=False):
    invoiceSent: str | None = None  # noqa: N815
    invoiceDue: str | None = None  # noqa: N815
    invoicePaid: str | None = None  # noqa: N815


class InvoiceInfo(msgspec.Struct, gc=False):
    status: str | None = None
    isForecast: bool | None = None  # noqa: N815


class ContactGeneral(msgspec.Struct, gc=False):
    name: str | None = None
    email: str | None = None


class Contact(msgspec.Struct, gc=False):
    general: ContactGeneral | None = None


class Payment(msgspec.Struct, kw_only=True, gc=False):
    date: str | None = None
    total: Decimal | None = None
    currency: str | None = None
    currencty: str | None = None  # sic: the seed's import schema spells it so
    rate: Decimal | None = None


class Credit(msgspec.Struct, kw_only=True, gc=False):
    """The import schema's `credits` item: an invoice number this invoice credits."""

    number: str | None = None


class Invoice(Base, kw_only=True):
    type: str | None = None  # "invoice" in events; INVOICE | ORDER | CREDIT on import
    clientType: str | None = None  # noqa: N815 - CUSTOMER | SUPPLIER
    clientId: str | None = None  # noqa: N815
    meta: InvoiceMeta | None = None
    dates: InvoiceDates | None = None
    info: InvoiceInfo | None = None
    contact: Contact | None = None
    canceled: bool | None = None
    # Invoice numbers this one credits: strings in the events (`["test"]`), objects in the
    # import schema (`[{"number": …}]`).
    credits: list[str | Credit] | None = None
    sums: Sums | None = None
    payments: list[Payment] = []


class Link(msgspec.Struct, kw_only=True, gc=False):
    type: str | None = None
    id: str | None = None
    clientId: str | None = None  # noqa: N815
    reference: str | None = None
    sums: Sums | None = None


class TransactionMeta(msgspec.Struct, gc=False):
    tags: list[str] = []
    categories: list[str] = []


class Transaction(Base, kw_only=True):
    type: str | None = None  # DEPOSIT | WITHDRAWAL | …
    status: str | None = None  # UNPAID | PAID | …
    paymentDate: str | None = None  # noqa: N815
    sums: Sums | None = None
    links: list[Link] = []
    meta: TransactionMeta | None = None
    # [I] a bank transaction names its account and carries the bank's text
    bankAccountId: str | None = None  # noqa: N815
    description: str | None = None
    reference: str | None = None


class BankAccount(Base, kw_only=True):
    """[I] after the seed's accounts API: account, number, clearing."""

    name: str | None = None
    account: str | None = None
    number: str | None = None
    clearing: str | None = None
    iban: str | None = None
    bic: str | None = None
    bank: str | None = None
    currency: str | None = None


class Product(Base, kw_only=True):
    """[I]"""

    name: str | None = None
    number: str | None = None
    description: str | None = None
    unit: str | None = None
    price: Sum | None = None
    taxRate: Decimal | None = None  # noqa: N815


#: Topic families that have no unified entity of their own: they become a `Record`
#: whose attributes are the payload (amounts as decimal strings).
GENERIC: dict[str, str] = {
    "VOUCHER": "voucher", "TAG": "tag", "INTEGRATION": "integration", "USER": "user",
}

#: Topic family -> (unified entity name, payload Struct).
FAMILIES: dict[str, tuple[str, type[Base]]] = {
    "CLIENT": ("party", Client),
    "INVOICE": ("invoice", Invoice),
    "TRANSACTION": ("transaction", Transaction),
    "BANK_TRANSACTION": ("transaction", Transaction),
    "BANK_ACCOUNT": ("bank_account", BankAccount),
    "PRODUCT": ("product", Product),
}


def decoder(kind: type[Any]) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(kind, float_hook=Decimal)
