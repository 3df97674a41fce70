"""HORISEN's finance-documents and traffic-report APIs: the wire format.

Documented (seed `002_…`, ../shared/providers.md) [D]: the client-credentials token
(`POST …/oauth2/access-token`, form body, `{"access_token", "token_type": "Bearer",
"expires_in"}`); `GET /finance/sit/v1/documents-export` with filters written
`operator(field)=value` (`paymentStatus=open`, `between(documentDate)=A,B`,
`gte(statusDt)=…`), `page_number` (from 1), `page_size`, `sort=-documentDate`; the
`{"data": […], "meta": {"pagination": {…}}}` envelope and the document fields; the
traffic-report rows' `countryName`, `operatorName`, `mcc`, `mnc`,
`sellCurrencyCode`; the error codes. Inferred [I], each one constant or one Struct
field here: the error body (`ErrorBody`), the traffic-report envelope and the names
of its count, price, amount and pricing-condition fields, the largest page size,
the format of `statusDt`/`insertDt` (UTC when no offset is written), that a
document's change moves `statusDt` (what makes `gte(statusDt)` a changed-since
filter), the `sort` of any field, and `id=<id>` (the documented `field=value`) to
fetch one document. Whether a payment moves `statusDt`, `paymentStatusDate` or
neither is not known: the poller sees a payment within one poll whichever it is
(docs/providers/horisen.md, "Payments").

Structs accept unknown fields (HORISEN may add some); amounts are `Decimal`, read
digit for digit, never through a float.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

PROVIDER = "horisen"
#: HORISEN is Swiss: the business time zone its dates are read in, unless the source's
#: `timezone` says otherwise. Its stamps without an offset are UTC [D].
TIMEZONE = "Europe/Zurich"

TOKEN_PATH = "/oauth2/access-token"
DOCUMENTS_PATH = "/finance/sit/v1/documents-export"
#: `{invoice_id}` is replaced. The seed writes `/bulk-traffic-report/v2/…`, the public
#: page `/bulk/traffic-report/v2/…` [D, both]: the source's `traffic_reports_path`.
TRAFFIC_REPORTS_PATH = "/bulk/traffic-report/v2/customer-invoices/{invoice_id}/traffic-reports"
#: The largest `page_size` the documents export accepts [I].
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50  # [I]

#: Document `status` values [D] -> the unified invoice status (`paymentStatus` decides
#: between open / partially_paid / paid for the ones that stand). What each means is
#: not documented; the reasons are in docs/providers/horisen.md ("Status").
DOCUMENT_STATUS: dict[str, str] = {
    "draft": "draft",  # not issued yet: it may still change or be thrown away
    "approved": "open",  # issued
    "imported": "open",  # issued elsewhere and brought into HORISEN: a claim all the same
    "archived": "open",  # issued and filed away: filing a claim away does not settle it
    "rejected": "cancelled",  # refused in approval: never a claim
    "canceled": "cancelled",  # withdrawn after issue
}
#: `paymentStatus` values: `open` is documented, the others are [I].
PAYMENT_STATUS = ("open", "partially_paid", "paid")

# Error codes [D], in `ErrorBody.code`.
NOT_AUTHENTICATED = "NOT_AUTHENTICATED"  # 401: no or expired token
NOT_AUTHORIZED = "NOT_AUTHORIZED"  # 401: the token may not do this
BAD_PARAM_PAGE_NUMBER = "BAD_PARAM_PAGE_NUMBER"  # 400
BAD_PARAM_PAGE_SIZE = "BAD_PARAM_PAGE_SIZE"  # 400
INVOICE_NOTFOUND = "INVOICE_NOTFOUND"  # 404 on traffic reports
INT_APP_ERROR = "INT_APP_ERROR"  # 500


# ---------------------------------------------------------------- tokens and errors

class Token(msgspec.Struct, kw_only=True):
    access_token: str
    token_type: str = "Bearer"
    expires_in: float | None = None


class TokenError(msgspec.Struct, kw_only=True):
    """The token endpoint's refusal: OAuth2's `error` (RFC 6749 §5.2) [I]."""

    error: str = "invalid_client"
    error_description: str | None = None


class ErrorBody(msgspec.Struct, kw_only=True):
    """An API error [I]: `{"code": "INVOICE_NOTFOUND", "message": "…"}`."""

    code: str = ""
    message: str | None = None

    def describe(self) -> str:
        return self.code + (f" ({self.message})" if self.message else "") if self.code else "no error code"


# ---------------------------------------------------------------- documents

class Pagination(msgspec.Struct, kw_only=True):
    total: int | None = None
    totalPages: int | None = None  # noqa: N815 - HORISEN's field names
    currentPage: int | None = None  # noqa: N815
    perPage: int | None = None  # noqa: N815
    count: int | None = None


class Meta(msgspec.Struct, kw_only=True):
    pagination: Pagination = msgspec.field(default_factory=Pagination)


class Page(msgspec.Struct, kw_only=True):
    """One page of the documents export: each document stays raw (normalized, or
    dead-lettered, alone)."""

    data: list[msgspec.Raw] = msgspec.field(default_factory=list)
    meta: Meta = msgspec.field(default_factory=Meta)


class DocumentId(msgspec.Struct, kw_only=True):
    """Just the id (and the change stamp), to key a document whether or not it normalizes."""

    id: int | str
    statusDt: str | None = None  # noqa: N815


class Listed(msgspec.Struct, kw_only=True):
    """What the poller reads of every listed document, whether or not it normalizes (each
    field any JSON; one of another type counts as absent): whether HORISEN counts it
    among `paymentStatus=open`, in which window, and its payment stamp."""

    paymentStatus: object = None  # noqa: N815
    paymentStatusDate: object = None  # noqa: N815
    documentDate: object = None  # noqa: N815


class BizPartner(msgspec.Struct, kw_only=True):
    name: str | None = None
    briefName: str | None = None  # noqa: N815
    vatNumber: str | None = None  # noqa: N815
    registrationNumber: str | None = None  # noqa: N815 [I]
    email: str | None = None  # [I]
    address: str | None = None  # [I]
    city: str | None = None  # [I]
    zip: str | None = None  # [I]
    countryCode: str | None = None  # noqa: N815 [I]


class Item(msgspec.Struct, kw_only=True):
    id: int | str | None = None
    name: str | None = None
    quantity: Decimal | None = None
    price: Decimal | None = None
    totalNoVat: Decimal | None = None  # noqa: N815
    totalVat: Decimal | None = None  # noqa: N815


class Document(msgspec.Struct, kw_only=True):
    """A finance document (a customer invoice) of the documents export [D]. Dates are
    `YYYY-MM-DD`; `statusDt`, `insertDt` and `paymentStatusDate` are
    `YYYY-MM-DD HH:MM:SS` in UTC or RFC 3339 [I]."""

    id: int | str
    documentUuid: str | None = None  # noqa: N815
    documentNumber: str | None = None  # noqa: N815
    documentDate: str | None = None  # noqa: N815
    dueDate: str | None = None  # noqa: N815
    periodStart: str | None = None  # noqa: N815
    periodEnd: str | None = None  # noqa: N815
    currencyCode: str | None = None  # noqa: N815
    amountNoVat: Decimal | None = None  # noqa: N815
    amountVat: Decimal | None = None  # noqa: N815
    total: Decimal | None = None
    totalUnpaid: Decimal | None = None  # noqa: N815
    totalPaid: Decimal | None = None  # noqa: N815
    domesticCurrencyCode: str | None = None  # noqa: N815
    domesticCurrencyRate: Decimal | None = None  # noqa: N815
    domesticTotal: Decimal | None = None  # noqa: N815
    status: str | None = None
    paymentStatus: str | None = None  # noqa: N815
    paymentStatusDate: str | None = None  # noqa: N815
    statusDt: str | None = None  # noqa: N815
    insertDt: str | None = None  # noqa: N815
    bizPartnerId: int | str | None = None  # noqa: N815
    bizPartnerExternalRefId: str | None = None  # noqa: N815
    bizPartner: BizPartner | None = None  # noqa: N815
    syncStatus: str | None = None  # noqa: N815
    items: list[Item] = []


# ---------------------------------------------------------------- traffic reports

class TrafficReport(msgspec.Struct, kw_only=True):
    """One row: traffic of one pricing condition to one country and operator.
    `countryName`, `operatorName`, `mcc`, `mnc`, `sellCurrencyCode` [D]; the rest [I]."""

    pricingConditionName: str | None = None  # noqa: N815
    countryName: str | None = None  # noqa: N815
    operatorName: str | None = None  # noqa: N815
    mcc: str | int | None = None
    mnc: str | int | None = None
    messageCount: int | None = None  # noqa: N815
    pricePerMessage: Decimal | None = None  # noqa: N815
    totalAmount: Decimal | None = None  # noqa: N815
    sellCurrencyCode: str | None = None  # noqa: N815


class TrafficReports(msgspec.Struct, kw_only=True):
    """The traffic-report answer [I]: `{"data": [rows]}`."""

    data: list[msgspec.Raw] = msgspec.field(default_factory=list)


token_decoder = msgspec.json.Decoder(Token)
token_error_decoder = msgspec.json.Decoder(TokenError)
error_decoder = msgspec.json.Decoder(ErrorBody)
page_decoder = msgspec.json.Decoder(Page)
document_id_decoder = msgspec.json.Decoder(DocumentId)
listed_decoder = msgspec.json.Decoder(Listed)
document_decoder = msgspec.json.Decoder(Document)
traffic_reports_decoder = msgspec.json.Decoder(TrafficReports)
traffic_report_decoder = msgspec.json.Decoder(TrafficReport)
