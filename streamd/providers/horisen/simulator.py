"""A simulated HORISEN on loopback: the client-credentials token endpoint, the finance
documents export and the traffic reports, in one uvicorn server over HTTPS (TLS 1.2 at
least). Used by the demo, the benchmark and the tests of the HORISEN source.

Documented (the provider's own documents; see docs/providers/horisen.md) [D]: `POST /oauth2/access-token`
with a form body `grant_type=client_credentials&client_id=…&client_secret=…` answering
`{"access_token", "token_type": "Bearer", "expires_in"}`, no refresh token;
`Authorization: Bearer` on every API call; `GET /finance/sit/v1/documents-export` with
filters `field=value` and `operator(field)=value` (`between(documentDate)=A,B`,
`gte(statusDt)=…`), `page_number` from 1, `page_size`, `sort=-documentDate`; the
`{"data", "meta": {"pagination": {…}}}` envelope; the document fields; the traffic
reports' path (both spellings: `Knobs.traffic_reports_path`) and their `countryName`,
`operatorName`, `mcc`, `mnc`, `sellCurrencyCode`; the error codes NOT_AUTHENTICATED,
BAD_PARAM_PAGE_NUMBER, BAD_PARAM_PAGE_SIZE, INVOICE_NOTFOUND, INT_APP_ERROR.
Inferred [I], each one constant or function here, in wire.py or records.py: the error
body `{"code", "message"}`, BAD_PARAM_FILTER/BAD_PARAM_SORT/NOT_FOUND, OAuth2 error
bodies (RFC 6749 §5.2), HTTP Basic client auth, the operators `lt`/`lte`/`gt`/`eq`,
a comma list in `field=value` as OR, repeated parameters as AND, unknown fields and
operators refused (400), stamps in UTC (`STAMP`) compared as strings like dates (a
stamp bound `2026-11-21` is midnight), sort ties in id order, `totalPages` at least 1,
the traffic-report envelope and its count/price/amount/pricing-condition names, page
sizes, `paymentStatusDate` as a stamp (wire.Document), and the order of the checks on
an API request: failure (500), bearer token (401), route (404), query (400).

Documents (`documents.py`) are a pure function of the knobs (records.py) for a given `today` (default:
the UTC date at construction; no stamp lies after the construction time). `mutate()`
changes documents between polls as a platform's users do (issues drafts, approves,
corrects, cancels, pays in full or in part), stamped now: a change moves `statusDt`
(`gte(statusDt)=` is a changed-since filter), a payment the stamps in
`Knobs.payment_moves`. `change()` sets fields of one document. Lists are paged by
offset on the state at request time, like an SQL-backed API: a change between two page
requests can shift documents between pages; documents without the sort field come
last in a descending sort (first in an ascending one). Knobs (`Knobs`): the history's
size and shape, latency, a 500 every J-th API request, the token lifetime, the
credentials, the traffic-report path, the stamps a payment moves and the fields it
cannot filter or sort by; all but the history's may be changed while serving. For
tests, `raw_documents` and `raw_reports` serve documents and traffic-report answers
exactly as given.
"""

from __future__ import annotations

import base64
import functools
import re
import secrets
import ssl
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import anyio
from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from ...certs import Certs
from ...certs import make as make_certs
from ...simulated import AccessTokens, SimulatedServer, source_table
from . import records, wire
from .documents import Documents, Mutation, encode, utcnow
from .records import STAMP

__all__ = ["BAD_PARAM_FILTER", "BAD_PARAM_SORT", "NOT_FOUND", "STAMP", "HorisenSimulator", "Knobs", "Logged",
           "Mutation", "encode_document", "simulator"]

MIN_TLS = ssl.TLSVersion.TLSv1_2  # [I] nothing public says
BAD_PARAM_FILTER = "BAD_PARAM_FILTER"  # [I] records.BadFilter: unknown operator or field, bad value
BAD_PARAM_SORT = "BAD_PARAM_SORT"  # [I]
NOT_FOUND = "NOT_FOUND"  # [I] no such route
_RESERVED = frozenset({"page_number", "page_size", "sort"})


@dataclass
class Knobs:
    days: int = 31  # history: this many days, ending `today`
    documents_per_day: int = 3
    latency: float = 0.0  # seconds added to every request (token and API)
    fail_every: int = 0  # every J-th API request -> 500 INT_APP_ERROR (0 = never)
    token_ttl: float = 3600.0  # access-token lifetime in seconds
    revoke_every: int = 0  # every K-th API request finds every access token revoked -> 401
    seed: int = 1
    today: date | None = None  # None: the UTC date at construction
    partners: int = 20
    paid_ratio: float = 0.5  # of the history's approved documents
    client_id: str = "streamd-demo"
    client_secret: str = "horisen-demo-secret"
    traffic_reports_path: str = wire.TRAFFIC_REPORTS_PATH  # with `{invoice_id}`
    # The stamps a payment moves: both, only ("paymentStatusDate",), or neither (()).
    payment_moves: tuple[str, ...] = records.STAMPS
    # Fields the export can neither filter nor sort by here: 400 BAD_PARAM_FILTER / _SORT.
    unsupported: tuple[str, ...] = ()


@dataclass(frozen=True)
class Logged:
    at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    query: str
    status: int


# ---------------------------------------------------------------- HTTP plumbing


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(encode(body), status_code=status, headers=headers, media_type="application/json")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"code": code, "message": message}, status, headers)


def _oauth_error(status: int, error: str, description: str) -> Response:
    return _json({"error": error, "error_description": description}, status, {"Cache-Control": "no-store"})


@functools.lru_cache(maxsize=8)
def _route(template: str) -> re.Pattern[str]:
    """The traffic-report path template as a regular expression with group `invoice_id`."""
    head, sep, tail = template.partition("{invoice_id}")
    if not sep or not head.startswith("/"):
        raise ValueError(f"traffic_reports_path {template!r} needs a leading / and {{invoice_id}}")
    return re.compile(re.escape(head) + "(?P<invoice_id>[^/]+)" + re.escape(tail))


def _integer(value: str | None, default: int) -> int | None:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        return None


# ---------------------------------------------------------------- the simulator

class HorisenSimulator(SimulatedServer):
    """The token endpoint and the API in one uvicorn server; see the module docstring."""

    certs: Certs  # always over TLS

    NAME = "HORISEN"
    MIN_TLS = MIN_TLS

    def __init__(self, certs: Certs, knobs: Knobs | None = None, *,
                 traffic_reports_path: str | None = None) -> None:
        super().__init__(certs)
        self.knobs = knobs or Knobs()
        if traffic_reports_path is not None:
            self.knobs.traffic_reports_path = traffic_reports_path
        _route(self.knobs.traffic_reports_path)  # refuse a bad template now
        self.log: list[Logged] = []
        self.grants = 0  # tokens issued
        self.refused_grants = 0  # token requests refused
        self.api_requests = 0  # requests other than the token endpoint's
        self.missing_reports: set[int] = set()  # invoice ids whose traffic reports answer 404
        self._tokens = AccessTokens()
        self._state = Documents(self.knobs, utcnow())
        self.today = self._state.today
        # For tests: JSON values appended, byte for byte, to every documents listing (filters
        # and sorting do not apply to them), and traffic-report answers by invoice id as it
        # appears in the path (any bytes; an id not here and not a document's is 404).
        self.raw_documents: list[bytes] = []
        self.raw_reports: dict[str, bytes] = {}
        self._api_route = Route("/{path:path}", self._api, methods=["GET"])
        self._app = Starlette(routes=[Route(wire.TOKEN_PATH, self._token, methods=["POST"]), self._api_route])

    @property
    def api_url(self) -> str:
        return self.url

    @property
    def token_url(self) -> str:
        return self.url + wire.TOKEN_PATH

    @property
    def client_id(self) -> str:
        return self.knobs.client_id

    @property
    def client_secret(self) -> str:
        return self.knobs.client_secret

    @property
    def ca_path(self) -> Path:
        return self.certs.ca

    def expire_tokens(self) -> None:
        """Every access token issued so far is invalid from now on."""
        self._tokens.expire_all()

    # ------------------------------------------------------------ data

    def documents(self) -> dict[int, dict[str, Any]]:
        """The current documents by id, amounts as Decimal. `mutate()` replaces the dict of a
        document it changes: a snapshot taken before keeps the old state."""
        return self._state.snapshot()

    def reports(self, invoice_id: int) -> list[dict[str, Any]]:
        """The traffic-report rows of a document (whether or not it is in `missing_reports`);
        KeyError for an unknown id."""
        return self._state.reports(invoice_id)

    def mutate(self, new: int = 0, paid: int = 0, *, part_paid: int = 0, drafts: int = 0, approve: int = 0,
               correct: int = 0, cancel: int = 0) -> Mutation:
        """Between two polls, stamped now (`Documents.mutate`: which documents, and how)."""
        return self._state.mutate(new, paid, part_paid=part_paid, drafts=drafts, approve=approve,
                                       correct=correct, cancel=cancel)

    def change(self, doc_id: int, *, stamps: tuple[str, ...] = ("statusDt",), **fields: Any) -> None:
        """Set fields of a document from now on (`None` removes one), moving the `stamps`."""
        self._state.change(doc_id, stamps=stamps, **fields)

    def corrupt(self, doc_id: int, **fields: Any) -> None:
        """Serve a broken document from now on (a bad currency, a missing field: `None`
        removes one); its `statusDt` moves, so a changed-since listing shows it."""
        self.change(doc_id, **fields)

    # ------------------------------------------------------------ configuration

    def source_toml(self, name: str, **extra: str) -> str:
        """The `[sources.<name>]` table that points streamd at this simulator (and writes the
        client secret to a file it references); `extra` adds keys, values already TOML."""
        secret = self.secret_file("horisen-client-secret", self.knobs.client_secret)
        return source_table(name, {
            "provider": wire.PROVIDER, "token_url": self.token_url, "api_url": self.api_url,
            "client_id": self.knobs.client_id, "client_secret": f"file:{secret}", "ca": self.certs.ca,
            "traffic_reports_path": self.knobs.traffic_reports_path}, extra)

    # ------------------------------------------------------------ serving

    def _logged(self, scope: Scope, at: float, status: int) -> None:
        query = scope["query_string"].decode("latin-1")
        self.log.append(Logged(at, scope["method"], scope["path"], query, status))

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A GET its route takes straight to `_api`, as the app's router would hand it on,
        and logged as `SimulatedServer._asgi` logs: Starlette's middleware and router are
        CPU on every request that a real API's cost says nothing of, and the bench's
        simulator shares the cores with the streamd it measures. Anything else goes
        through the app: the token endpoint, other methods (405), and a path the
        route does not match (a line break in it: Starlette's 404)."""
        if scope["type"] != "http" or self._api_route.matches(scope)[0] is not Match.FULL:
            return await super()._asgi(scope, receive, send)
        at = time.monotonic()
        try:
            response = await self._api(Request(scope, receive))
        except Exception:  # as Starlette's ServerErrorMiddleware answers (debug off)
            self._logged(scope, at, 500)
            await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
            raise
        try:
            await response(scope, receive, send)
        finally:
            self._logged(scope, at, response.status_code)

    # ------------------------------------------------------------ the token endpoint

    async def _token(self, request: Request) -> Response:
        k = self.knobs
        if k.latency > 0:
            await anyio.sleep(k.latency)
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        client_id, secret = form.get("client_id"), form.get("client_secret", "")
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode()
                user, _, password = decoded.partition(":")
                client_id, secret = unquote_plus(user), unquote_plus(password)
            except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
                client_id = None
        if client_id != k.client_id or not secrets.compare_digest(secret.encode(), k.client_secret.encode()):
            self.refused_grants += 1
            return _oauth_error(401, "invalid_client", "Client authentication failed")
        grant = form.get("grant_type")
        if grant != "client_credentials":
            self.refused_grants += 1
            if grant is None:
                return _oauth_error(400, "invalid_request", "The grant_type parameter is missing.")
            return _oauth_error(400, "unsupported_grant_type",
                                "The authorization grant type is not supported by the authorization server.")
        token = self._tokens.issue(k.token_ttl)
        self.grants += 1
        return _json({"token_type": "Bearer", "expires_in": max(1, int(k.token_ttl)), "access_token": token},
                     headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    # ------------------------------------------------------------ the API

    async def _api(self, request: Request) -> Response:
        k = self.knobs
        self.api_requests += 1
        n = self.api_requests
        if k.latency > 0:
            await anyio.sleep(k.latency)
        if k.fail_every and n % k.fail_every == 0:
            return _error(500, wire.INT_APP_ERROR, "internal application error")
        if k.revoke_every and n % k.revoke_every == 0:
            self._tokens.expire_all()
        if not self._tokens.valid(request.headers):
            return _error(401, wire.NOT_AUTHENTICATED, "A valid bearer access token is required.",
                          {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        path = request.scope["path"]
        if path == wire.DOCUMENTS_PATH:
            return self._documents(request.query_params)
        try:
            m = _route(k.traffic_reports_path).fullmatch(path)
        except ValueError:  # a bad template set while serving: no route
            m = None
        if m is not None:
            return self._traffic(m["invoice_id"])
        return _error(404, NOT_FOUND, f"No route for GET {path}.")

    def _documents(self, query: QueryParams) -> Response:
        page = _integer(query.get("page_number"), 1)
        size = _integer(query.get("page_size"), wire.DEFAULT_PAGE_SIZE)
        if page is None or page < 1:
            return _error(400, wire.BAD_PARAM_PAGE_NUMBER,
                          f"page_number must be an integer of 1 or more, not {query.get('page_number')!r}.")
        if size is None or not 1 <= size <= wire.MAX_PAGE_SIZE:
            return _error(400, wire.BAD_PARAM_PAGE_SIZE, f"page_size must be an integer from 1 to "
                          f"{wire.MAX_PAGE_SIZE}, not {query.get('page_size')!r}.")
        sort = query.get("sort") or "id"
        unsupported = set(self.knobs.unsupported)
        if any(key.removeprefix("-") not in records.SCALAR_FIELDS - unsupported for key in sort.split(",")):
            return _error(400, BAD_PARAM_SORT, f"Cannot sort by {sort!r}.")
        try:
            tests = [records.predicate(name, value) for name, value in query.multi_items()
                     if name not in _RESERVED]
        except records.BadFilter as exc:
            return _error(400, BAD_PARAM_FILTER, str(exc))
        refused = [name for name, _ in query.multi_items() if any(f in name for f in unsupported)]
        if refused:
            return _error(400, BAD_PARAM_FILTER, f"cannot filter on {refused[0]!r}")
        rows = self._state.listed(sort, [(name, value) for name, value in query.multi_items()
                                              if name not in _RESERVED], tests)
        start, end = (page - 1) * size, page * size
        chunk = [*map(self._state.encoded, rows[start:end]),
                 *self.raw_documents[max(0, start - len(rows)):max(0, end - len(rows))]]
        total = len(rows) + len(self.raw_documents)
        meta = {"pagination": {"total": total, "totalPages": max(1, -(-total // size)),
                               "currentPage": page, "perPage": size, "count": len(chunk)}}
        body = b'{"data":[' + b",".join(chunk) + b'],"meta":' + encode(meta) + b"}"
        return Response(body, media_type="application/json")

    def _traffic(self, invoice_id: str) -> Response:
        if invoice_id in self.raw_reports:
            return Response(self.raw_reports[invoice_id], media_type="application/json")
        i = int(invoice_id) if invoice_id.isascii() and invoice_id.isdecimal() else None
        if i is None or i not in self._state or i in self.missing_reports:
            return _error(404, wire.INVOICE_NOTFOUND, f"Invoice {invoice_id} not found.")
        return Response(self._state.report_answer(i), media_type="application/json")


def encode_document(doc: dict[str, Any]) -> bytes:
    """A document from `documents()` exactly as the API serves it: amounts are JSON numbers
    digit for digit (`1234.50`), which `json.dumps` cannot write from a Decimal."""
    return encode(doc)


def simulator(directory: Path, knobs: Knobs | None = None, *,
              traffic_reports_path: str | None = None) -> HorisenSimulator:
    """A simulator with fresh throwaway certificates in `directory`."""
    return HorisenSimulator(make_certs(directory, "horisen"), knobs,
                            traffic_reports_path=traffic_reports_path)
