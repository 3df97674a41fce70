"""A simulated Maestrano Connec! on loopback: the API v2 list endpoints a poller reads
(one uvicorn server over HTTPS, TLS 1.2 at least), and the sender of Maestrano's webhooks
(Connec! notifications, the account webhooks) that a test or the demo points at streamd.

Documented (seed `003_…`, ../shared/providers.md) [D]: `GET /api/v2/{group_id}/{collection}`
with HTTP Basic (api id / api key); `$top`, `$skip`, `$orderby`, `$filter=updated_at gt
'<RFC 3339>'`; the answer `{"<collection>": [...], "pagination": {"next": "<url>"}}`;
entity ids as lists of `{"provider", "id", "realm"}`; the invoice fields; notifications
POSTed as JSON with HTTP Basic, a body keyed by collection; the account webhooks `DELETE
groups_path` and `DELETE group_users_path` with HTTP Basic. Inferred [I], each one
constant or function here, in wire.py, records.py or query.py: the error body (`error_body`),
`pagination.total`, `next` an absolute URL absent on the last page, `DEFAULT_TOP`,
`wire.MAX_TOP`, the filter operators beyond `gt` (`ge`, `lt`, `le`, `eq`, on `created_at`
too, joined by `and`), `$orderby` on any (dotted) field, nulls first, ties in creation
order, unknown `$` parameters refused (400), the company served as a one-entity list like
the other collections, the other entities' fields (records.py), and the order of the
checks on a request: failure (500), credentials (401), route (404), query (400).

Entities are a pure function of the knobs (records.py) for a given `until` (default:
the time of construction; no stamp lies after it). `mutate()` creates and changes
entities, stamped now (a change: at least a second after the entity's last stamp):
`$filter=updated_at gt …` is a changed-since filter. Lists are paged by offset on the
state at request time: a change between two page requests can shift entities between
pages. Knobs (`Knobs`): the groups and their size, latency, a 500 every J-th request,
the credentials; latency, failures and credentials may be changed while serving. For
tests, `raw_entities` serves entities exactly as given after a listing's own.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import random
import re
import secrets
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import anyio
import httpx
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
from . import query, records, wire
from .records import STAMP, Entity

__all__ = ["DEFAULT_TOP", "STAMP", "ConnecSimulator", "Entity", "Knobs", "Logged", "Mutation", "Ref",
           "encode_entity", "error_body", "notification_for", "notify", "partly_invalid_notification",
           "send_group_deleted", "send_notification", "send_user_removed", "simulator"]

MIN_TLS = ssl.TLSVersion.TLSv1_2  # [I] nothing public says
DEFAULT_TOP = 100  # [I]
CONTENT_TYPE = "application/json"  # [I] of the API's answers
Ref = tuple[str, str, str]  # (group, collection, key): one entity
#: What `mutate()` creates, by weight (a company is never created: one per group).
CREATE_WEIGHTS = {"invoices": 5, "organizations": 2, "people": 2, "payments": 2, "items": 1, "accounts": 1,
                  "tax_codes": 1}
_QUERY = frozenset({"$top", "$skip", "$orderby", "$filter"})
_PATH = re.compile(re.escape(wire.API_PATH).replace(r"\{group_id\}", "(?P<group>[^/]+)")
                   .replace(r"\{collection\}", "(?P<collection>[^/]+)") + "/?")
_enc = msgspec.json.Encoder(decimal_format="number")


@dataclass
class Knobs:
    groups: tuple[str, ...] = ("cld-4", "cld-9")
    entities: int = 10  # per group and collection (the company: always one)
    days: int = 90  # the history spans this many days, ending `until`
    until: datetime | None = None  # the history's last stamp (naive: UTC); None: construction time
    latency: float = 0.0  # seconds added to every request
    fail_every: int = 0  # every J-th request -> 500 (0 = never)
    seed: int = 1
    api_id: str = "streamd-demo"
    api_key: str = "connec-demo-key"


@dataclass(frozen=True)
class Logged:
    at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    query: str
    status: int


@dataclass(frozen=True)
class Mutation:
    created: list[Ref] = field(default_factory=list)
    updated: list[Ref] = field(default_factory=list)  # a created payment updates the invoice it pays


# ---------------------------------------------------------------- HTTP plumbing


def error_body(status: int, detail: str | None = None) -> dict[str, Any]:
    """An error answer [I]: `{"errors": [{"code": 401, "title": "Unauthorized"}]}`, with a
    `detail` when there is more to say."""
    entry: dict[str, Any] = {"code": status, "title": HTTPStatus(status).phrase}
    if detail:
        entry["detail"] = detail
    return {"errors": [entry]}


def _error(status: int, detail: str | None = None, headers: dict[str, str] | None = None) -> Response:
    return Response(_enc.encode(error_body(status, detail)), status, headers, CONTENT_TYPE)


def _basic(headers: Headers) -> tuple[str, str] | None:
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _integer(value: str | None, default: int) -> int | None:
    if value is None:
        return default
    return int(value) if value.isascii() and value.isdecimal() else None


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# ---------------------------------------------------------------- the simulator

class ConnecSimulator(SimulatedServer):
    """The Connec! API v2 list endpoints; see the module docstring."""

    certs: Certs  # always over TLS

    NAME = "Connec!"
    MIN_TLS = MIN_TLS

    def __init__(self, certs: Certs, knobs: Knobs | None = None) -> None:
        super().__init__(certs)
        self.knobs = k = knobs or Knobs()
        if not k.groups or len(set(k.groups)) != len(k.groups) or any("/" in g or not g for g in k.groups):
            raise ValueError(f"groups must be distinct non-empty ids, not {k.groups!r}")
        if k.entities < 0 or k.days < 0:
            raise ValueError("entities and days are counts")
        self.log: list[Logged] = []
        self.api_requests = 0
        until = k.until or _utcnow()
        self.until = (until.replace(tzinfo=UTC) if until.tzinfo is None else until.astimezone(UTC)).replace(
            microsecond=0)
        self._ledgers: dict[str, records.Ledger] = {}
        for i, group in enumerate(k.groups):
            ledger = self._ledgers[group] = records.Ledger(k.seed, group, i)
            ledger.history(k.entities, self.until - timedelta(days=k.days), self.until)
        self._bytes: dict[Ref, bytes] = {}  # encoded entities, dropped when one changes
        self._sorted: dict[tuple[str, str, str, bool], list[str]] = {}  # listing orders, until a change
        self._mutations = 0
        # (group, collection) -> JSON values appended, byte for byte, to every listing of it
        # (filters and ordering do not apply to them). For tests.
        self.raw_entities: dict[tuple[str, str], list[bytes]] = {}
        # Called after each listing page is made, with (group, collection, $skip, the page's
        # keys): a test changes entities mid-listing there.
        self.after_page: Callable[[str, str, int, list[str]], None] | None = None
        self._app = Starlette(routes=[Route("/{path:path}", self._api, methods=["GET"])])

    @property
    def api_url(self) -> str:
        return self.url

    @property
    def api_id(self) -> str:
        return self.knobs.api_id

    @property
    def api_key(self) -> str:
        return self.knobs.api_key

    @property
    def ca_path(self) -> Path:
        return self.certs.ca

    @property
    def groups(self) -> tuple[str, ...]:
        return self.knobs.groups

    # ------------------------------------------------------------ data

    def entities(self, group: str, collection: str) -> dict[str, Entity]:
        """The entities of a collection by key (the Connec! id), in creation order, amounts as
        Decimal. A change replaces an entity's dict: a snapshot taken before keeps the old state."""
        return dict(self._ledgers[group].data[collection])

    def entity(self, group: str, collection: str, key: str) -> Entity:
        return self._ledgers[group].data[collection][key]

    def mutate(self, created: int = 0, updated: int = 0, groups: Iterable[str] | None = None,
               collections: Iterable[str] | None = None) -> Mutation:
        """Change `updated` distinct existing entities, then create `created` new ones (no
        company), in `groups` and `collections` (default: all), stamped now. Which ones is a
        function of the seed and the number of calls so far; ValueError (and no change) if
        there are too few to update or nothing can be created."""
        chosen = tuple(groups) if groups is not None else self.knobs.groups
        kinds = tuple(collections) if collections is not None else tuple(records.ORDER)
        if created < 0 or updated < 0:
            raise ValueError("created and updated are counts")
        if not chosen or not set(chosen) <= set(self._ledgers) or not set(kinds) <= set(wire.COLLECTIONS):
            raise ValueError(f"unknown groups {chosen!r} or collections {kinds!r}")
        creatable = [c for c in kinds if c in CREATE_WEIGHTS]
        if created and not creatable:
            raise ValueError(f"cannot create any of {kinds!r}")
        candidates = [(g, c, key) for g in chosen for c in kinds for key in self._ledgers[g].data[c]]
        if updated > len(candidates):
            raise ValueError(f"cannot update {updated} entities: there are {len(candidates)}")
        self._mutations += 1
        rng = random.Random(f"{self.knobs.seed}/mutation/{self._mutations}")
        now = max(_utcnow(), self.until)
        out = Mutation()
        for g, c, key in rng.sample(candidates, updated):
            self._ledgers[g].update(c, key, rng, now)
            out.updated.append((g, c, key))
        for _ in range(created):
            g = chosen[rng.randrange(len(chosen))]
            c = rng.choices(creatable, [CREATE_WEIGHTS[c] for c in creatable])[0]
            key, paid = self._ledgers[g].create(c, rng, now, now)
            out.created.append((g, c, key))
            out.updated.extend((g, "invoices", k) for k in paid if (g, "invoices", k) not in out.updated)
        self._changed(out.created + out.updated)
        return out

    def corrupt(self, group: str, collection: str, key: str, fields: Mapping[str, Any]) -> Entity:
        """Serve a broken entity from now on: `fields` maps a (dotted) field to its new value,
        None removes it (`{"amount.currency": "EURO"}`, `{"id": None}`). Its `updated_at`
        moves, so a changed-since listing shows it."""
        ledger = self._ledgers[group]
        old = ledger.data[collection][key]
        e = copy.deepcopy(old)
        e["updated_at"] = records.later(old["updated_at"], max(_utcnow(), self.until))
        for name, value in fields.items():
            *parents, last = name.split(".")
            target = e
            for part in parents:
                target = target.setdefault(part, {})
            if value is None:
                target.pop(last, None)
            else:
                target[last] = value
        ledger.data[collection][key] = e
        self._changed([(group, collection, key)])
        return e

    def _changed(self, refs: Iterable[Ref]) -> None:
        for r in refs:
            self._bytes.pop(r, None)
        self._sorted.clear()

    def _encoded(self, group: str, collection: str, key: str) -> bytes:
        data = self._bytes.get((group, collection, key))
        if data is None:
            entity = self._ledgers[group].data[collection][key]
            data = self._bytes[group, collection, key] = _enc.encode(entity)
        return data

    def _keys(self, group: str, collection: str, path: str, descending: bool) -> list[str]:
        """Every key of a collection in `$orderby` order (ties in creation order), cached."""
        keys = self._sorted.get((group, collection, path, descending))
        if keys is None:
            if len(self._sorted) > 256:
                self._sorted.clear()
            data, key = self._ledgers[group].data[collection], query.sort_key(path)
            keys = sorted(data, key=lambda k: key(data[k]), reverse=descending)  # stable: ties keep order
            self._sorted[group, collection, path, descending] = keys
        return keys

    # ------------------------------------------------------------ configuration

    def source_toml(self, name: str, *, poll: bool = True, **extra: str) -> str:
        """The `[sources.<name>]` table that points streamd (its poller, unless `poll` is
        False) at this simulator, and writes the api key to a file it references; `extra`
        adds keys, values already TOML."""
        secret = self.secret_file("connec-api-key", self.knobs.api_key)
        return source_table(name, {
            "provider": wire.PROVIDER, "api_url": self.api_url, "api_id": self.knobs.api_id,
            "api_key": f"file:{secret}", "poll": poll, "groups": list(self.knobs.groups),
            "ca": self.certs.ca}, extra)

    # ------------------------------------------------------------ serving

    def _logged(self, scope: Scope, at: float, status: int) -> None:
        query = scope["query_string"].decode("latin-1")
        self.log.append(Logged(at, scope["method"], scope["path"], query, status))

    def _authorized(self, headers: Headers) -> bool:
        credentials = _basic(headers)
        if credentials is None:
            return False
        user, password = credentials
        return secrets.compare_digest(user.encode(), self.knobs.api_id.encode()) & secrets.compare_digest(
            password.encode(), self.knobs.api_key.encode())

    async def _api(self, request: Request) -> Response:
        k = self.knobs
        self.api_requests += 1
        n = self.api_requests
        if k.latency > 0:
            await anyio.sleep(k.latency)
        if k.fail_every and n % k.fail_every == 0:
            return _error(500)
        if not self._authorized(request.headers):
            return _error(401, headers={"WWW-Authenticate": 'Basic realm="Connec!"'})
        m = _PATH.fullmatch(request.scope["path"])
        if m is None:
            return _error(404, f"No route for GET {request.scope['path']}.")
        group, collection = m["group"], m["collection"]
        if group not in self._ledgers:
            return _error(404, f"No group {group!r}.")
        if collection not in wire.COLLECTIONS:
            return _error(404, f"No collection {collection!r}.")
        return self._list(request, group, collection)

    def _list(self, request: Request, group: str, collection: str) -> Response:
        q = request.query_params
        unknown = sorted(name for name in q if name.startswith("$") and name not in _QUERY)
        if unknown:
            return _error(400, f"Unknown query parameters {', '.join(unknown)}.")
        top, skip = _integer(q.get("$top"), DEFAULT_TOP), _integer(q.get("$skip"), 0)
        if top is None or not 1 <= top <= wire.MAX_TOP:
            return _error(400, f"$top must be an integer from 1 to {wire.MAX_TOP}, not {q.get('$top')!r}.")
        if skip is None:
            return _error(400, f"$skip must be an integer of 0 or more, not {q.get('$skip')!r}.")
        try:
            path, descending = query.ordering(q.get("$orderby", "updated_at asc"))
            test = query.predicate(q["$filter"]) if "$filter" in q else None
        except query.BadQuery as exc:
            return _error(400, str(exc))
        keys = self._keys(group, collection, path, descending)
        if test is not None:
            data = self._ledgers[group].data[collection]
            keys = [key for key in keys if test(data[key])]
        extra = self.raw_entities.get((group, collection), [])
        total = len(keys) + len(extra)
        chunk = [self._encoded(group, collection, key) for key in keys[skip:skip + top]]
        chunk += extra[max(0, skip - len(keys)):max(0, skip + top - len(keys))]
        pagination: dict[str, Any] = {}
        if skip + len(chunk) < total:
            params = [(name, value) for name, value in q.multi_items() if name not in ("$top", "$skip")]
            params += [("$top", str(top)), ("$skip", str(skip + top))]
            pagination["next"] = str(request.url.replace(query=urlencode(params, quote_via=quote,
                                                                           safe="$',:")))
        pagination["total"] = total
        if self.after_page is not None:
            self.after_page(group, collection, skip, keys[skip:skip + top])
        body = b"".join([b'{"', collection.encode(), b'":[', b",".join(chunk),
                         b'],"pagination":', _enc.encode(pagination), b"}"])
        return Response(body, media_type=CONTENT_TYPE)


def encode_entity(entity: Entity) -> bytes:
    """An entity exactly as the API serves it: amounts are JSON numbers digit for digit
    (`1234.50`), which `json.dumps` cannot write from a Decimal."""
    return _enc.encode(entity)


def simulator(directory: Path, knobs: Knobs | None = None) -> ConnecSimulator:
    """A simulator with fresh throwaway certificates in `directory`."""
    return ConnecSimulator(make_certs(directory, "connec"), knobs)


# ---------------------------------------------------------------- the webhook sender


@contextlib.asynccontextmanager
async def _client(client: httpx.AsyncClient | None) -> AsyncIterator[httpx.AsyncClient]:
    if client is not None:
        yield client
        return
    async with httpx.AsyncClient(timeout=10) as own:
        yield own


async def send_notification(url: str, body: Mapping[str, Any] | bytes, *, api_id: str, api_key: str,
                            client: httpx.AsyncClient | None = None) -> httpx.Response:
    """POST a Connec! notification the way Maestrano does: a JSON body keyed by collection
    (bytes are sent as they are), HTTP Basic with the app's api id and key."""
    content = body if isinstance(body, bytes) else _enc.encode(body)
    async with _client(client) as http:
        return await http.post(url, content=content, auth=httpx.BasicAuth(api_id, api_key),
                               headers={"Content-Type": "application/json"})


async def send_group_deleted(base_url: str, group_id: str, *, api_id: str, api_key: str,
                             path: str = wire.GROUPS_PATH,
                             client: httpx.AsyncClient | None = None) -> httpx.Response:
    """The account webhook for a cancelled service: `DELETE groups_path` with HTTP Basic."""
    url = base_url.rstrip("/") + path.format(id=quote(group_id, safe=""))
    async with _client(client) as http:
        return await http.delete(url, auth=httpx.BasicAuth(api_id, api_key))


async def send_user_removed(base_url: str, group_id: str, user_id: str, *, api_id: str, api_key: str,
                            path: str = wire.GROUP_USERS_PATH,
                            client: httpx.AsyncClient | None = None) -> httpx.Response:
    """The account webhook for a member removed from a group: `DELETE group_users_path`."""
    url = base_url.rstrip("/") + path.format(group_id=quote(group_id, safe=""), id=quote(user_id, safe=""))
    async with _client(client) as http:
        return await http.delete(url, auth=httpx.BasicAuth(api_id, api_key))


def notification_for(sim: ConnecSimulator,
                     changes: Mutation | Iterable[Ref]) -> dict[str, dict[str, list[Entity]]]:
    """What Maestrano would POST after `changes`: per group, a body keyed by collection with
    the entities' current state (each once, in the order of `changes`)."""
    refs = [*changes.created, *changes.updated] if isinstance(changes, Mutation) else list(changes)
    out: dict[str, dict[str, list[Entity]]] = {}
    for g, c, key in dict.fromkeys(refs):
        out.setdefault(g, {}).setdefault(c, []).append(sim.entity(g, c, key))
    return out


async def notify(sim: ConnecSimulator, url: str, changes: Mutation | Iterable[Ref], *,
                 client: httpx.AsyncClient | None = None) -> list[httpx.Response]:
    """`notification_for(sim, changes)` POSTed to `url`, one request per group, with the
    simulator's credentials."""
    async with _client(client) as http:
        return [await send_notification(url, body, api_id=sim.api_id, api_key=sim.api_key, client=http)
                for body in notification_for(sim, changes).values()]


def partly_invalid_notification(sim: ConnecSimulator, group: str) -> dict[str, list[Entity]]:
    """A body with good and broken entities: `invoices[0]` is fine, `invoices[1]` has
    `amount.currency = "EURO"`, `invoices[2]` has no `id`; `organizations[0]` is fine."""
    invoices = list(sim.entities(group, "invoices").values())
    orgs = list(sim.entities(group, "organizations").values())
    if not invoices or not orgs:
        raise ValueError(f"group {group!r} has no invoices or organizations")
    bad_currency = copy.deepcopy(invoices[1 % len(invoices)])
    bad_currency["amount"]["currency"] = "EURO"
    no_id = copy.deepcopy(invoices[2 % len(invoices)])
    del no_id["id"]
    return {"invoices": [invoices[0], bad_currency, no_id], "organizations": [orgs[0]]}
