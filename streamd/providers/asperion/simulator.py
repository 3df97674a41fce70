"""A simulated Asperion on loopback: the identity server's `/connect/authorize` and
`/connect/token`, and the REST API under `/v1`, over HTTPS with TLS 1.3 at least.
Used by the demo and the tests of the Asperion source.

Documented (the provider's own documents; see docs/providers/asperion.md): TLS 1.3 minimum; the OAuth2
authorization-code flow with refresh tokens; `Authorization: Bearer` and
`X-Tenant-Id` (also spelled `X-TenantId`) on every API call; `/v1/administrations`;
lists with `page`, `pageSize`, `orderby` (`-field` descending), repeated query
parameters as OR filters and `MetaOnly=true`; the `_data`/`_meta` envelope with
absolute `nextPage`/`previousPage`/`self` URLs; an item as the record plus `_meta`.
Seen in third-party clients [C]: the resource paths, the debtor and sales-invoice
fields, invoice status codes, ASP.NET problem details. Inferred [I], each one
constant or one function here: that refresh tokens rotate on *every* use (the
strictest reading of "may rotate"; identity.py), `CODE_TTL`, `DEFAULT_PAGE_SIZE`, the page-size
limit (wire.MAX_PAGE_SIZE), the article fields, `amountOpen`, `currencyCode`, that
query parameter names are case-insensitive (ASP.NET model binding), validation
messages, and the order of the checks on an API request: throttling (429), then
failure (503), then the bearer token (401), the resource (404), the tenant
(400/403), the query (400). Not simulated: writes (POST/PUT/PATCH/DELETE) and the
`_from`/`_to` range filters.

The authorize step needs no user: a known client gets its code at once. Records are
a pure function of (seed, tenant, resource, id); `mutate()` creates, updates and
deletes them between polls, as a user of Asperion would. Lists are paged by offset
on the state at request time, like the real API: a deletion between two page
requests shifts later records one page down. Knobs (`Knobs`): tenants, records,
latency, a 429 every K-th and a 503 every J-th API request, the access-token
lifetime, and administrations whose access was revoked; all but `records` may be
changed while serving. For tests, `raw_records` adds records served exactly as given
(arbitrary JSON) after a listing's own, and `after_page` runs between a page being cut
and sent (to delete a record mid-listing).
"""

from __future__ import annotations

import math
import random
import secrets
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

from ...certs import Certs
from ...certs import make as make_certs
from ...simulated import SimulatedServer, source_table
from . import records, wire
from .identity import Identity

MIN_TLS = ssl.TLSVersion.TLSv1_3  # [D] "Minimum level is TLS1.3"
SCOPE = "asperion-api offline_access"  # granted to every token [D, seed]
CODE_TTL = 60.0  # seconds an authorization code can be exchanged [I]
DEFAULT_PAGE_SIZE = 25  # [I]
PROFILE_NAME = "Demo Gebruiker"  # the user behind every token
ADMINISTRATIONS = ("Voorbeeld B.V.", "Bakkerij De Korenschoof", "Jansen Installatietechniek B.V.",
                   "Studio Noord V.O.F.", "Peeters & Zonen BV")
_enc = msgspec.json.Encoder(decimal_format="number")
_PROBLEM_TYPES = {
    400: "https://tools.ietf.org/html/rfc9110#section-15.5.1",
    401: "https://tools.ietf.org/html/rfc9110#section-15.5.2",
    403: "https://tools.ietf.org/html/rfc9110#section-15.5.4",
    404: "https://tools.ietf.org/html/rfc9110#section-15.5.5",
    429: "https://tools.ietf.org/html/rfc6585#section-4",
    503: "https://tools.ietf.org/html/rfc9110#section-15.6.4",
}


@dataclass
class Knobs:
    tenants: tuple[str, ...] = ("1001", "1002")
    records: int = 20  # per tenant per resource
    resources: tuple[str, ...] = ("debtors", "salesinvoices", "articles")
    latency: float = 0.0  # seconds added to every /v1 request
    throttle_every: int = 0  # every K-th /v1 request -> 429 (0 = never)
    retry_after: float = 2.0  # the 429's Retry-After (sent as whole seconds, rounded up)
    fail_every: int = 0  # every J-th /v1 request -> 503 (0 = never)
    token_ttl: float = 3600.0  # access-token lifetime in seconds
    # Seconds the identity server waits between rotating a refresh token (the old one is
    # spent from then on) and answering: a client killed meanwhile never gets the new one.
    refresh_answer_delay: float = 0.0
    # Administrations whose access was revoked [I]: their lists answer 200 with no records
    # and every id 404 (what an emptied administration answers too).
    revoked: set[str] = field(default_factory=set)
    client_id: str = "streamd"
    client_secret: str = "asperion-demo-secret"
    seed: int = 1


@dataclass(frozen=True)
class Logged:
    at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    tenant: str | None
    status: int


@dataclass(frozen=True)
class Mutation:
    created: list[tuple[str, str, str]] = field(default_factory=list)
    updated: list[tuple[str, str, str]] = field(default_factory=list)
    deleted: list[tuple[str, str, str]] = field(default_factory=list)


# ---------------------------------------------------------------- HTTP plumbing


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None,
          media_type: str = "application/json; charset=utf-8") -> Response:
    return Response(_enc.encode(body), status_code=status, headers=headers, media_type=media_type)


def _problem(status: int, detail: str, errors: dict[str, list[str]] | None = None,
             headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {
        "type": _PROBLEM_TYPES.get(status, "about:blank"),
        "title": "One or more validation errors occurred." if errors else HTTPStatus(status).phrase,
        "status": status, "detail": detail,
        "traceId": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"}
    if errors:
        body["errors"] = errors
    return _json(body, status, headers, "application/problem+json; charset=utf-8")


def _integer(value: str | None, default: int) -> int | None:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        return None


def _matches(value: Any, wanted: str) -> bool:
    if isinstance(value, bool):
        return wanted.lower() == str(value).lower()
    if isinstance(value, int | Decimal):
        try:
            return Decimal(wanted) == value
        except InvalidOperation:
            return False
    return str(value).lower() == wanted.lower()


def _tenant_of(headers: Headers) -> str | None:
    return headers.get(wire.TENANT_HEADER) or headers.get(wire.TENANT_HEADER_ALT)


# ---------------------------------------------------------------- the simulator

class AsperionSimulator(SimulatedServer):
    """The identity server and the API in one uvicorn server; see the module docstring."""

    certs: Certs  # always over TLS

    NAME = "Asperion"
    MIN_TLS = MIN_TLS

    def __init__(self, certs: Certs, knobs: Knobs | None = None) -> None:
        super().__init__(certs)
        self.knobs = knobs or Knobs()
        for tenant in self.knobs.tenants:
            if not (tenant.isascii() and tenant.isdigit()):
                raise ValueError(f"tenant ids are digits (administration ids), not {tenant!r}")
        for resource in self.knobs.resources:
            if resource not in records.MAKERS:
                raise ValueError(f"no records for {resource!r}; known: {', '.join(records.MAKERS)}")
        self.log: list[Logged] = []
        self._tables: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
        self._next_id: dict[tuple[str, str], int] = {}
        self._sorted: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self._mutations = 0
        self._api_requests = 0
        # (tenant, resource) -> JSON values appended, byte for byte, to every listing of it
        # (filters and ordering do not apply to them; a GET of one is 404). For tests.
        self.raw_records: dict[tuple[str, str], list[bytes]] = {}
        # Called with (tenant, resource, page) as each list page has been cut, before it is
        # sent: a test changes the records between two pages of one listing. For tests.
        self.after_page: Callable[[str, str, int], None] | None = None
        self.identity = Identity(self.knobs)
        self._app = Starlette(routes=[
            Route("/connect/authorize", self.identity.authorize, methods=["GET"]),
            Route("/connect/token", self.identity.token, methods=["POST"]),
            Route("/v1/{rest:path}", self._v1, methods=["GET"]),
        ])

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def authorize_url(self) -> str:
        return self.url + "/connect/authorize"

    @property
    def token_url(self) -> str:
        return self.url + "/connect/token"

    # ------------------------------------------------------------ tokens (identity.py)

    @property
    def refreshes(self) -> int:
        return self.identity.refreshes

    @property
    def refused_refreshes(self) -> int:
        return self.identity.refused_refreshes

    @property
    def unanswered_rotations(self) -> int:
        """Refresh tokens rotated whose answer is still being held (`refresh_answer_delay`)."""
        return self.identity.unanswered

    def issue_refresh_token(self) -> str:
        """A fresh valid refresh token, as if a user had just completed the authorize flow."""
        return self.identity.new_refresh_token()

    def refresh_token_valid(self, token: str) -> bool:
        return self.identity.refresh_token_valid(token)

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is expired from now on."""
        self.identity.expire_access_tokens()

    # ------------------------------------------------------------ records

    def _table(self, tenant: str, resource: str) -> dict[int, dict[str, Any]]:
        key = (tenant, resource)
        if key not in self._tables:
            if resource not in records.MAKERS:
                raise ValueError(f"no records for {resource!r}; known: {', '.join(records.MAKERS)}")
            self._tables[key] = {i: self._make(tenant, resource, i) for i in range(1, self.knobs.records + 1)}
            self._next_id[key] = self.knobs.records + 1
        return self._tables[key]

    def _make(self, tenant: str, resource: str, i: int, now: datetime | None = None) -> dict[str, Any]:
        rng = random.Random(f"{self.knobs.seed}/{tenant}/{resource}/{i}")
        added = records.EPOCH - timedelta(days=rng.randrange(30, 400), minutes=rng.randrange(600))
        changed = added + timedelta(days=rng.randrange(25), minutes=rng.randrange(600))

        def pick(rng: random.Random) -> dict[str, Any]:
            # An initial invoice names an initial debtor (pure, whatever happened since); one
            # created by mutate() a debtor of the tenant as it is now.
            current = self._tables.get((tenant, "debtors")) if now else None
            if current:
                return current[rng.choice(sorted(current))]
            return self._make(tenant, "debtors", rng.randrange(1, max(self.knobs.records, 1) + 1))

        return records.MAKERS[resource](rng, i, now or added, now or changed, pick)

    def records(self, tenant: str, resource: str) -> dict[str, dict[str, Any]]:
        """The current records by id (as a string): wire dicts without `_meta`, amounts as Decimal."""
        return {str(i): dict(rec) for i, rec in self._table(tenant, resource).items()}

    def remove(self, tenant: str, resource: str, key: str) -> None:
        """Delete one record, as a user of Asperion would."""
        del self._table(tenant, resource)[int(key)]
        self._sorted.clear()

    def mutate(self, created: int, updated: int, deleted: int, *, tenants: Sequence[str] | None = None,
               resources: Sequence[str] | None = None) -> Mutation:
        """Create, update and delete records, each count spread round-robin over the selected
        (tenant, resource) pairs. Deterministic for a seed and the number of calls so far."""
        pairs = [(t, r) for t in (tenants or self.knobs.tenants) for r in (resources or self.knobs.resources)]
        if not pairs:
            raise ValueError("no (tenant, resource) pairs selected")

        def spread(n: int) -> list[int]:
            return [n // len(pairs) + (1 if i < n % len(pairs) else 0) for i in range(len(pairs))]

        plan = list(zip(pairs, spread(created), spread(updated), spread(deleted), strict=True))
        for (tenant, resource), _, u, d in plan:
            if u + d > len(self._table(tenant, resource)):
                raise ValueError(f"{tenant}/{resource} has {len(self._table(tenant, resource))} records: "
                                 f"cannot update {u} and delete {d}")
        self._mutations += 1
        self._sorted.clear()
        m = self._mutations
        now = records.EPOCH + timedelta(minutes=m)
        rng = random.Random(f"{self.knobs.seed}/mutation/{m}")
        out = Mutation()
        for (tenant, resource), c, u, d in plan:
            table = self._table(tenant, resource)
            picked = rng.sample(sorted(table), u + d)
            for i in picked[:d]:
                del table[i]
                out.deleted.append((tenant, resource, str(i)))
            for i in picked[d:]:
                records.update(resource, table[i], m, now)
                out.updated.append((tenant, resource, str(i)))
            for _ in range(c):
                i = self._next_id[(tenant, resource)]
                self._next_id[(tenant, resource)] = i + 1
                table[i] = self._make(tenant, resource, i, now)
                out.created.append((tenant, resource, str(i)))
        return out

    # ------------------------------------------------------------ configuration

    def source_toml(self, name: str, **extra: str) -> str:
        """The `[sources.<name>]` table that points streamd at this simulator (and writes the
        client secret to a file it references); `extra` adds keys, values already TOML."""
        secret = self.secret_file("asperion-client-secret", self.knobs.client_secret)
        return source_table(name, {
            "provider": "asperion", "base_url": self.base_url, "authorize_url": self.authorize_url,
            "token_url": self.token_url, "client_id": self.knobs.client_id,
            "client_secret": f"file:{secret}", "ca": self.certs.ca}, extra)

    # ------------------------------------------------------------ serving

    def _prepare(self) -> None:
        for tenant in self.knobs.tenants:  # made now, not inside the first request
            for resource in self.knobs.resources:
                self._table(tenant, resource)

    def _logged(self, scope: Scope, at: float, status: int) -> None:
        self.log.append(Logged(at, scope["method"], scope["path"], _tenant_of(Headers(scope=scope)), status))

    # ------------------------------------------------------------ the API

    async def _v1(self, request: Request) -> Response:
        k = self.knobs
        self._api_requests += 1
        n = self._api_requests
        if k.latency > 0:
            await anyio.sleep(k.latency)
        if k.throttle_every and n % k.throttle_every == 0:
            return _problem(429, "Too many requests; retry later.",
                            headers={"Retry-After": str(math.ceil(k.retry_after))})
        if k.fail_every and n % k.fail_every == 0:
            return _problem(503, "The service is temporarily unavailable.")
        if not self.identity.bearer_valid(request.headers):
            return _problem(401, "A valid bearer access token is required.",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        parts = [p for p in request.path_params["rest"].split("/") if p]
        if parts[:1] == ["administrations"] and len(parts) <= 2:
            return self._administrations(parts[1:])
        # `salesinvoiceswithlines` serves the sales invoices with their `lines`; the plain
        # `salesinvoices`, without them.
        resource = _WITH_LINES.get(parts[0], parts[0]) if parts else ""
        if not 1 <= len(parts) <= 2 or resource not in k.resources:
            return _problem(404, f"No resource at {request.url.path}.")
        tenant = _tenant_of(request.headers)
        if not tenant:
            return _problem(400, f"The {wire.TENANT_HEADER} header is required.")
        if tenant not in k.tenants:
            return _problem(403, f"No access to administration {tenant}.")
        if len(parts) == 1:
            return self._list(request, tenant, resource, parts[0])
        rec = (self._table(tenant, resource).get(int(parts[1]))
               if parts[1].isdecimal() and tenant not in k.revoked else None)
        if rec is None:
            return _problem(404, f"No {parts[0]} record with id {parts[1]}.")
        self_url = f"{self.base_url}/{parts[0]}/{rec['id']}"
        return _json({**_served(rec, parts[0]), "_meta": {"self": self_url, **self._tenant_meta(tenant)}})

    def _tenant_meta(self, tenant: str) -> dict[str, Any]:
        return {"administrationId": int(tenant), "administrationName": self._admin_name(tenant),
                "profileName": PROFILE_NAME}

    def _admin_name(self, tenant: str) -> str:
        return ADMINISTRATIONS[int(tenant) % len(ADMINISTRATIONS)]

    def _administrations(self, one: list[str]) -> Response:
        tenants = [t for t in self.knobs.tenants if not one or one == [t]]
        data = [{"id": int(t), "name": self._admin_name(t),
                 "_meta": {"self": f"{self.base_url}/administrations/{t}"}} for t in tenants]
        if one:
            return _json(data[0]) if data else _problem(404, f"No administration {one[0]}.")
        return _json({"_data": data, "_meta": {
            "previousPage": None, "nextPage": None, "totalCount": len(data), "pageCount": 1 if data else 0,
            "self": f"{self.base_url}/administrations", "profileName": PROFILE_NAME}})

    def _list(self, request: Request, tenant: str, resource: str, path: str) -> Response:
        fields = {f.lower(): f for f in wire.RECORD_TYPES[resource].__struct_fields__}
        query: dict[str, list[str]] = {}  # ASP.NET binds query parameters case-insensitively
        for name, value in request.query_params.multi_items():
            query.setdefault(name.lower(), []).append(value)

        def first(name: str) -> str | None:
            return query[name][0] if name in query else None

        errors: dict[str, list[str]] = {}
        page, size = _integer(first("page"), 1), _integer(first("pagesize"), DEFAULT_PAGE_SIZE)
        if page is None or page < 1:
            errors["Page"] = [f"The value '{first('page')}' is not valid for Page: it must be 1 or more."]
        if size is None or not 1 <= size <= wire.MAX_PAGE_SIZE:
            errors["PageSize"] = [f"The value '{first('pagesize')}' is not valid for PageSize: "
                                  f"it must be between 1 and {wire.MAX_PAGE_SIZE}."]
        meta_only = (first("metaonly") or "false").lower()
        if meta_only not in ("true", "false"):
            errors["MetaOnly"] = [f"The value '{first('metaonly')}' is not valid for MetaOnly."]
        order = first("orderby") or "id"
        key = fields.get(order.removeprefix("-").lower())
        if key is None:
            errors["OrderBy"] = [f"Cannot order by '{order}': no such field."]
        if errors or page is None or size is None or key is None:
            return _problem(400, "The query is not valid.", errors)
        sort_key = key
        filters = {fields[name]: values for name, values in query.items() if name in fields}
        cached = (tenant, resource, order)
        rows = self._sorted.get(cached, []) if not filters else []
        if tenant in self.knobs.revoked:
            rows = []
        elif filters or cached not in self._sorted:
            rows = [r for r in self._table(tenant, resource).values()
                    if all(any(_matches(r[f], v) for v in values) for f, values in filters.items())]
            rows.sort(key=lambda r: (r[sort_key], r["id"]), reverse=order.startswith("-"))
            if not filters:  # kept until the next mutate(): a page costs a slice, not a sort
                self._sorted[cached] = rows
        extra = self.raw_records.get((tenant, resource), [])
        total = len(rows) + len(extra)
        pages = -(-total // size)
        keep = [(name, value) for name, value in request.query_params.multi_items()
                if name.lower() not in ("page", "pagesize")]

        def link(p: int) -> str:
            return f"{self.base_url}/{path}?" + urlencode([("pageSize", size), ("page", p), *keep])

        meta = {"previousPage": link(page - 1) if page > 1 else None,
                "nextPage": link(page + 1) if page < pages else None, "totalCount": total,
                "pageCount": pages, "self": link(page), **self._tenant_meta(tenant)}
        if meta_only == "true":
            return _json({"_meta": meta})
        start, end = (page - 1) * size, page * size
        data: list[Any] = [{**_served(r, path), "_meta": {"self": f"{self.base_url}/{path}/{r['id']}"}}
                           for r in rows[start:end]]
        data += map(msgspec.Raw, extra[max(0, start - len(rows)):max(0, end - len(rows))])
        if self.after_page is not None:
            self.after_page(tenant, resource, page)
        return _json({"_data": data, "_meta": meta})


#: path -> the resource it serves with its lines (wire.LISTING_PATHS, the other way round).
_WITH_LINES = {path: resource for resource, path in wire.LISTING_PATHS.items()}


def _served(record: dict[str, Any], path: str) -> dict[str, Any]:
    """A record as `path` serves it: a sales invoice's `lines` only by the with-lines path."""
    if "lines" in record and path not in _WITH_LINES:
        return {k: v for k, v in record.items() if k != "lines"}
    return record


def encode_record(record: dict[str, Any]) -> bytes:
    """A record from `records()` as the API serves it (without `_meta`): amounts are JSON
    numbers digit for digit (`1234.50`), which `json.dumps` cannot write from a Decimal."""
    return _enc.encode(record)


def simulator(directory: Path, knobs: Knobs | None = None) -> AsperionSimulator:
    """A simulator with fresh throwaway certificates in `directory`."""
    return AsperionSimulator(make_certs(directory, "asperion"), knobs)
