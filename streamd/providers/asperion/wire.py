"""Asperion REST API v1 wire format: the list envelope, records, tokens, problem details.

Documented (seed `001_…`, ../shared/providers.md): `_data` / `_meta` with absolute
`nextPage` URLs, `totalCount` and `pageCount`; `page`, `pageSize`, `orderby`;
`X-Tenant-Id`; the OAuth2 token endpoint. Seen in third-party clients ([C]): the
resource paths, the debtor and sales-invoice field names, the with-lines resource's
`lines` (`{"_data": [{id, description, amount, vatAmount, vatCode, ledgerAccountId}]}`),
problem-details errors. No paid date: neither the API's documents nor its clients show
one, so an Asperion invoice's `paid` is null. Inferred ([I]): the article fields, that
stamps without an offset are Amsterdam local time (`LOCAL_ZONE`), and the fields named
in `INFERRED`, each once, with the test that shows what a wrong guess would do.

Record Structs accept unknown fields (Asperion adds fields freely); amounts are
`Decimal`, so JSON numbers are read digit for digit, never through a float.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

PROVIDER = "asperion"
#: Stamps without an offset (`"2026-03-01T10:15:00"`) are Asperion's local time [I].
LOCAL_ZONE = "Europe/Amsterdam"
#: The largest `pageSize` the API accepts [D, seed: "pageSize (max 100)" in our notes].
MAX_PAGE_SIZE = 100
#: Headers naming the tenant; the second spelling appears on one documentation page [D].
TENANT_HEADER = "X-Tenant-Id"
TENANT_HEADER_ALT = "X-TenantId"

#: resource path (`/v1/<resource>`) -> unified entity name.
RESOURCES: dict[str, str] = {
    "debtors": "party",
    "salesinvoices": "invoice",
    "articles": "product",
}
#: Where a resource is listed, and each of its records fetched (`/<path>/<id>`), when
#: that is not its own path: invoices with their lines [C]. (`/<path>/<id>` follows the
#: seed's `GET /objects/{id}` [D] for every collection.)
LISTING_PATHS: dict[str, str] = {"salesinvoices": "salesinvoiceswithlines"}

#: The fields streamd reads that neither the seed nor a client shows, each named here
#: and nowhere else: field -> (what streamd takes it for, and what it does without it;
#: the test that pins that, so a wrong guess shows as a record without the field).
INFERRED: dict[str, tuple[str, str]] = {
    "SalesInvoice.amountOpen": (
        "`unpaid`; absent: 0 for status 7 (Paid), else null, and the status stays the "
        "provider's (no partially_paid)",
        "tests/test_asperion_normalize.py::test_inferred_amount_open"),
    "SalesInvoice.debtorId": (
        "`party.key` (the debtor's id); absent: the party is known by `debtorCustomerNumber`",
        "tests/test_asperion_normalize.py::test_inferred_debtor_id"),
    "SalesInvoice.currencyCode": (
        "`currency`; absent: EUR (Asperion is a Dutch ledger)",
        "tests/test_asperion_normalize.py::test_inferred_currency_code"),
    "SalesInvoice.debtorName": (
        "`party.name`; absent: null", "tests/test_asperion_normalize.py::test_inferred_debtor_id"),
    "SalesInvoiceLine.amount": (
        "the line's `net` (before VAT, beside `vatAmount`); absent: null",
        "tests/test_asperion_normalize.py::test_lines_come_from_the_with_lines_resource"),
}

#: Sales invoice `status` codes [C] -> (unified status, provider status name).
INVOICE_STATUS: dict[int, tuple[str, str]] = {
    1: ("draft", "Concept"),
    2: ("open", "InJournalentry"),
    3: ("open", "InLedger"),
    6: ("open", "Payable"),
    7: ("paid", "Paid"),
    8: ("open", "Hold"),
}


# ---------------------------------------------------------------- the list envelope

class PageMeta(msgspec.Struct, kw_only=True):
    previousPage: str | None = None  # noqa: N815 - Asperion's field names
    nextPage: str | None = None  # noqa: N815
    totalCount: int | None = None  # noqa: N815
    pageCount: int | None = None  # noqa: N815
    self: str | None = None
    administrationId: int | str | None = None  # noqa: N815
    administrationName: str | None = None  # noqa: N815
    profileName: str | None = None  # noqa: N815


class Page(msgspec.Struct, kw_only=True):
    """One page of a list: the records stay raw (each is normalized, or dead-lettered, alone)."""

    data: list[msgspec.Raw] = msgspec.field(name="_data", default_factory=list)
    meta: PageMeta = msgspec.field(name="_meta", default_factory=PageMeta)


class RecordId(msgspec.Struct):
    """Just the id of a record, to key it before (and whether or not) it normalizes."""

    id: int | str


class Administration(msgspec.Struct, kw_only=True):
    id: int | str
    name: str | None = None


class Administrations(msgspec.Struct, kw_only=True):
    data: list[Administration] = msgspec.field(name="_data", default_factory=list)
    meta: PageMeta = msgspec.field(name="_meta", default_factory=PageMeta)


# ---------------------------------------------------------------- records

class Debtor(msgspec.Struct, kw_only=True):
    id: int | str
    name: str | None = None
    customerNumber: str | int | None = None  # noqa: N815
    iban: str | None = None
    vatNumber: str | None = None  # noqa: N815
    street: str | None = None  # [I]
    postalCode: str | None = None  # noqa: N815 [I]
    city: str | None = None
    countryCode: str | None = None  # noqa: N815
    emailAddress: str | None = None  # noqa: N815
    phoneNumber: str | None = None  # noqa: N815 [I]
    currencyCode: str | None = None  # noqa: N815 [I]
    dateAdded: str | None = None  # noqa: N815
    dateLastChange: str | None = None  # noqa: N815
    blocked: bool | None = None


class SalesInvoiceLine(msgspec.Struct, kw_only=True):
    """[C] (a third-party client's model of `/v1/salesinvoiceswithlines`)."""

    id: int | str | None = None
    description: str | None = None
    amount: Decimal | None = None  # [I] before VAT
    vatAmount: Decimal | None = None  # noqa: N815
    vatCode: str | None = None  # noqa: N815
    ledgerAccountId: int | str | None = None  # noqa: N815


class Lines(msgspec.Struct, kw_only=True):
    data: list[SalesInvoiceLine] = msgspec.field(name="_data", default_factory=list)


class SalesInvoice(msgspec.Struct, kw_only=True):
    id: int | str
    invoiceNumber: str | int | None = None  # noqa: N815
    date: str | None = None
    paymentDueDate: str | None = None  # noqa: N815
    debtorId: int | str | None = None  # noqa: N815 [I]
    debtorCustomerNumber: str | int | None = None  # noqa: N815
    debtorName: str | None = None  # noqa: N815 [I]
    amountExclVat: Decimal | None = None  # noqa: N815
    vatAmount: Decimal | None = None  # noqa: N815
    amountInclVat: Decimal | None = None  # noqa: N815
    amountOpen: Decimal | None = None  # noqa: N815 [I]
    currencyCode: str | None = None  # noqa: N815 [I]
    status: int | None = None
    description: str | None = None
    lines: Lines | None = None  # the with-lines resource only [C]


class Article(msgspec.Struct, kw_only=True):
    """[I] throughout: no public field list."""

    id: int | str
    code: str | None = None
    description: str | None = None
    unit: str | None = None
    salesPrice: Decimal | None = None  # noqa: N815
    vatPercentage: Decimal | None = None  # noqa: N815
    currencyCode: str | None = None  # noqa: N815
    blocked: bool | None = None
    dateAdded: str | None = None  # noqa: N815
    dateLastChange: str | None = None  # noqa: N815


RECORD_TYPES: dict[str, type[Debtor] | type[SalesInvoice] | type[Article]] = {
    "debtors": Debtor,
    "salesinvoices": SalesInvoice,
    "articles": Article,
}


# ---------------------------------------------------------------- OAuth2 and errors

class TokenResponse(msgspec.Struct, kw_only=True):
    access_token: str
    expires_in: float | None = None
    token_type: str = "Bearer"
    refresh_token: str | None = None
    scope: str | None = None


class TokenError(msgspec.Struct, kw_only=True):
    error: str = ""
    error_description: str | None = None


class Problem(msgspec.Struct, kw_only=True):
    """ASP.NET problem details [C]."""

    title: str | None = None
    status: int | None = None
    detail: str | None = None
    traceId: str | None = None  # noqa: N815
    errors: dict[str, list[str]] | None = None

    def describe(self) -> str:
        parts = [p for p in (self.title, self.detail) if p]
        for field, msgs in (self.errors or {}).items():
            parts.append(f"{field}: {'; '.join(msgs)}")
        return " — ".join(parts) or "no details"


page_decoder = msgspec.json.Decoder(Page)
id_decoder = msgspec.json.Decoder(RecordId)
administrations_decoder = msgspec.json.Decoder(Administrations)
token_decoder = msgspec.json.Decoder(TokenResponse)
token_error_decoder = msgspec.json.Decoder(TokenError)
problem_decoder = msgspec.json.Decoder(Problem)
