"""A simulated Asteria partner gateway on loopback: the websocket over mutual TLS, and
a webhook sender. Used by `streamd demo`, the tests and `bench/ingest.py`.

The gateway requires a client certificate (CERT_REQUIRED) and the `x-asteria-client`
header at the upgrade (HTTP 401 otherwise), then sends events one `{"topic", "data"}`
frame each (wire.encode_frame), in one of two profiles (`Knobs.profile`):

- "light" (the default): every topic of PARTNER_WEBHOOK_ENUM in turn; each round of
  len(TOPICS) events creates, updates and removes one entity of each kind. A third of
  them are `*_REMOVE` bodies of 40 bytes and most families are small: 314 bytes on
  average, which is what the tests and the demo want.
- "seed": only what the seed shows in full, clients, invoices and transactions, each
  created then updated, with every field of the seed's CLIENT_UPDATE, INVOICE_UPDATE and
  TRANSACTION_UPDATE examples in their order (about 415, 830 and 740 bytes: 660 on
  average, twice the light profile): the business events a gateway exists for, as large
  as the seed shows them, and what `bench/ingest.py` measures by default.

Event i is a pure function of (profile, seed, i): tests recompute exactly which events a
run must produce. Knobs (`Knobs`): the profile, how many, how fast, drop the connection
every K events (a clean close, code 1012), replay the last R events after a reconnect, a
malformed frame every M and an unknown topic every U (neither counts as an event),
a server certificate from a CA the client does not trust, and `stamp_now` (updatedAt
is the send time, for latency measurements).

For tests, `send_raw()` queues frames sent exactly as given once the `count` events
are out (the fuzz tests push arbitrary bytes through the real websocket this way).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http import HTTPStatus
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
from anyio.abc import TaskStatus
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ...certs import Certs
from ...certs import make as make_certs
from ...simulated import source_table
from . import wire

log = logging.getLogger("streamd.simulator.asteria")

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
COMPANIES = ("5eafe37ddc7a940058c76479", "5eafe37ddc7a940058c7647a")
_enc = msgspec.json.Encoder(decimal_format="number")


#: The seed profile's topics: every round creates and updates one of each.
SEED_TOPICS: tuple[str, ...] = ("CLIENT_CREATE", "CLIENT_UPDATE", "INVOICE_CREATE", "INVOICE_UPDATE",
                                "TRANSACTION_CREATE", "TRANSACTION_UPDATE")
PROFILES = ("light", "seed")


@dataclass
class Knobs:
    count: int = 1000  # distinct events to send; 0 = endless
    profile: str = "light"  # "light" | "seed" (see the module's docstring)
    rate: float = 0.0  # events per second; 0 = as fast as possible
    drop_every: int = 0
    replay: int = 0
    malformed_every: int = 0
    unknown_every: int = 0
    client_id: str = "streamd-partner"
    seed: int = 1
    companies: tuple[str, ...] = COMPANIES
    stamp_now: bool = False
    untrusted_cert: bool = False


def _oid(*parts: object) -> str:
    """A Mongo-style 24-hex id, stable for its parts."""
    return hashlib.blake2b(repr(parts).encode(), digest_size=12).hexdigest()


def _object_id(seed: int, family: str, rnd: int, spacing: int) -> str:
    """A record's id as MongoDB makes one (an ObjectId, as in Asteria's documents): the
    second it was created (`EPOCH` + rnd x spacing ms), 5 bytes for the process that made
    it (one per family here), and a counter. So the ids of new records grow with time."""
    seconds = int((EPOCH + timedelta(milliseconds=rnd * spacing)).timestamp())
    process = hashlib.blake2b(repr((seed, family)).encode(), digest_size=5).hexdigest()
    return f"{seconds:08x}{process}{rnd & 0xFFFFFF:06x}"


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def event(i: int, seed: int = 1, companies: tuple[str, ...] = COMPANIES,
          now: datetime | None = None, profile: str = "light") -> tuple[str, bytes]:
    """The i-th event of a run: (topic, payload bytes), shaped like the seed's examples."""
    if profile == "seed":
        return seed_event(i, seed, companies, now)
    if profile != "light":
        raise ValueError(f"unknown profile {profile!r}: one of {', '.join(PROFILES)}")
    topic = wire.TOPICS[i % len(wire.TOPICS)]
    family, action = wire.split_topic(topic)
    rnd = i // len(wire.TOPICS)
    rng = random.Random(seed * 7_919 + i)
    key = _oid(seed, family, rnd)
    company = companies[rnd % len(companies)]
    t = now or EPOCH + timedelta(milliseconds=i)
    created = _stamp(EPOCH + timedelta(milliseconds=rnd * len(wire.TOPICS)))
    if action == "REMOVE":
        return topic, _enc.encode({"_id": key})
    base: dict[str, Any] = {"_id": key, "id": key, "companyId": company, "active": True, "__v": 0,
                            "createdAt": created, "updatedAt": _stamp(t)}
    amount = Decimal(rng.randrange(100, 2_000_000)) / 100
    currency = ("SEK", "EUR", "NOK", "USD")[rng.randrange(4)]
    rate = Decimal("0.0875") if currency == "SEK" else Decimal("1")
    client = _oid(seed, "CLIENT", rnd)
    # An update changes something (else it would be the same state again, the same id).
    changed = " (updated)" if action == "UPDATE" else ""
    if family == "CLIENT":
        body = {**base, "info": {"accounts": []}, "meta": {"clientNumber": str(rnd + 1),
                                                             "source": _oid(seed, "source")},
                "analysis": {"dates": [], "trend": [], "seasonal": [], "remainder": []},
                "status": [], "type": "CUSTOMER" if rnd % 3 else "SUPPLIER",
                "name": f"Client {rnd + 1} AB{changed}"}
    elif family == "INVOICE":
        tax = (amount * Decimal("0.25")).quantize(Decimal("0.01"))
        body = {**base, "meta": {"invoiceNumber": str(rnd + 1), "source": _oid(seed, "source"),
                                 "clientNumber": str(rnd + 1)},
                "dates": {"invoiceDue": "2021-12-25T18:00:00.000Z",
                          "invoicePaid": _stamp(t) if action == "UPDATE" else None,
                          "invoiceSent": "2019-03-25T18:00:00.000Z"},
                "info": {"status": "PAID" if action == "UPDATE" else "PROCESSING", "isForecast": False},
                "contact": {"general": {"email": f"billing{rnd}@example.com", "name": f"Client {rnd + 1}"}},
                "type": "invoice", "canceled": False, "credits": [], "clientType":
                "CUSTOMER" if rnd % 3 else "SUPPLIER", "clientId": client,
                "sums": {"original": {"tax": tax, "invoiceTotal": amount + tax, "currency": currency},
                         "system": {"tax": (tax * rate).quantize(Decimal("0.01")),
                                    "invoiceTotal": ((amount + tax) * rate).quantize(Decimal("0.01")),
                                    "currency": "EUR"}},
                "payments": [{"date": _stamp(t), "total": amount + tax}] if action == "UPDATE" else []}
    elif family in ("TRANSACTION", "BANK_TRANSACTION"):
        sums = {"original": {"currency": currency, "total": amount},
                "system": {"currency": "EUR", "total": (amount * rate).quantize(Decimal("0.01"))}}
        body = {**base, "meta": {"tags": [_oid(seed, "TAG", rnd)], "categories": []}, "parentId": None,
                "manual": False, "viewed": False, "type": "DEPOSIT" if rnd % 2 else "WITHDRAWAL",
                "status": "PAID" if action == "UPDATE" else "UNPAID", "paymentDate": _stamp(t),
                "sums": sums,
                "links": [{"type": "INVOICE_PAYMENT", "id": _oid(seed, "INVOICE", rnd), "clientId": client,
                           "reference": "initial", "sums": sums}]}
        if family == "BANK_TRANSACTION":
            body["bankAccountId"] = _oid(seed, "BANK_ACCOUNT", rnd)
            body["description"] = f"BG {rnd:07d}"
    elif family == "BANK_ACCOUNT":
        body = {**base, "name": f"Operating account {rnd}{changed}", "account": f"8327-9,{rnd:09d}",
                "number": f"{rnd:09d}", "clearing": "8327-9", "currency": currency}
    elif family == "PRODUCT":
        body = {**base, "name": f"Product {rnd}{changed}", "number": f"P-{rnd:05d}", "unit": "pcs",
                "price": {"total": amount, "currency": currency}, "taxRate": Decimal(25)}
    elif family == "VOUCHER":
        body = {**base, "number": f"V{rnd:06d}", "description": f"Office supplies{changed}",
                "date": created[:10], "sums": {"original": {"total": amount, "currency": currency}}}
    elif family == "TAG":
        body = {**base, "name": f"tag-{rnd % 17}", "color": "#2a6"}
    elif family == "INTEGRATION":
        body = {**base, "type": "erp" if rnd % 2 else "bank", "key": "fortnox" if rnd % 2 else "asteriaBank",
                "status": "syncing" if changed else "connected"}
    else:  # USER
        body = {**base, "username": f"user{rnd}@example.com", "firstName": "Ada",
                "lastName": f"User {rnd}{changed}"}
    return topic, _enc.encode(body)


_FIRST = ("Stanton", "Annabell", "Jaylan", "Maja", "Oskar", "Elsa", "Hugo", "Alice", "Liam", "Ebba")
_LAST = ("Cruickshank", "Schuster", "Lindqvist", "Berg", "Holm", "Nyström", "Sandberg", "Ek", "Wallin")


def seed_event(i: int, seed: int = 1, companies: tuple[str, ...] = COMPANIES,
               now: datetime | None = None) -> tuple[str, bytes]:
    """The i-th event of the "seed" profile: a client, an invoice or a transaction with
    every field of the seed's example of its topic, in the seed's order."""
    topic = SEED_TOPICS[i % len(SEED_TOPICS)]
    family, action = wire.split_topic(topic)
    rnd = i // len(SEED_TOPICS)
    rng = random.Random(seed * 7_919 + i)
    spacing = len(SEED_TOPICS)
    key = _object_id(seed, family, rnd, spacing)
    client = _object_id(seed, "CLIENT", rnd, spacing)
    source = _oid(seed, "source")
    company = companies[rnd % len(companies)]
    t = now or EPOCH + timedelta(milliseconds=i)
    created = _stamp(EPOCH + timedelta(milliseconds=rnd * len(SEED_TOPICS)))
    person = f"{_FIRST[rnd % len(_FIRST)]} {_LAST[rnd % len(_LAST)]}"
    update = action == "UPDATE"
    client_type = "CUSTOMER" if rnd % 3 else "SUPPLIER"
    body: dict[str, Any]
    if family == "CLIENT":
        body = {"info": {"accounts": []}, "meta": {"clientNumber": str(rnd + 1), "source": source},
                "analysis": {"dates": [], "trend": [], "seasonal": [], "remainder": []},
                "active": True, "status": [], "_id": key, "companyId": company, "type": client_type,
                "__v": 0, "createdAt": created,
                "name": f"{person} AB" + (" (updated)" if update else ""), "updatedAt": _stamp(t),
                "id": key}
        return topic, _enc.encode(body)
    currency = ("SEK", "EUR", "NOK", "USD")[rng.randrange(4)]
    rate = Decimal("0.0875") if currency == "SEK" else Decimal("1")
    amount = Decimal(rng.randrange(100, 2_000_000)) / 100
    due = _stamp(EPOCH + timedelta(days=30 + rnd % 60, hours=18))
    if family == "INVOICE":
        tax = (amount * Decimal("0.25")).quantize(Decimal("0.01"))
        total = amount + tax
        body = {"meta": {"invoiceNumber": str(rnd + 1), "source": source, "clientNumber": str(rnd + 1)},
                "dates": {"invoiceDue": due, "invoicePaid": _stamp(t) if update else None,
                          "invoiceSent": created},
                "info": {"status": "PAID" if update else "PROCESSING", "isForecast": False},
                "contact": {"general": {"email": f"{person.split()[0]}{rnd}@example.com",
                                        "name": person}},
                "active": True, "type": "invoice", "canceled": False,
                "credits": [str(rnd)] if rnd % 10 == 9 else [], "_id": key,
                "clientType": client_type, "companyId": company, "clientId": client,
                "createdAt": created,
                "sums": {"original": {"tax": tax, "invoiceTotal": total, "currency": currency},
                         "system": {"tax": (tax * rate).quantize(Decimal("0.01")),
                                    "invoiceTotal": (total * rate).quantize(Decimal("0.01")),
                                    "currency": "EUR"}},
                "updatedAt": _stamp(t),
                "payments": [{"date": _stamp(t), "total": total, "currency": currency}] if update else [],
                "id": key}
        return topic, _enc.encode(body)
    original = {"total": amount, "currency": currency}
    system = {"total": (amount * rate).quantize(Decimal("0.01")), "currency": "EUR"}
    body = {"meta": {"tags": [_oid(seed, "TAG", rnd % 17)], "categories": [_oid(seed, "CATEGORY", rnd % 5)]},
            "parentId": None, "manual": False, "active": True, "viewed": update,
            "type": "DEPOSIT" if rnd % 2 else "WITHDRAWAL", "status": "PAID" if update else "UNPAID",
            "_id": key, "companyId": company,
            "links": [{"type": "INVOICE_PAYMENT", "id": _object_id(seed, "INVOICE", rnd, spacing),
                       "clientId": client, "reference": "initial",
                       "sums": {"original": original, "system": system}}],
            "__v": 0, "createdAt": created, "paymentDate": due,
            "sums": {"original": {"currency": currency, "total": amount},
                     "system": {"currency": "EUR", "total": system["total"]}},
            "updatedAt": _stamp(t), "id": key}
    return topic, _enc.encode(body)


MALFORMED = b'{"topic": "INVOICE_UPDATE", "data": {"_id": "5ef5adfc'  # cut short
UNKNOWN_TOPIC = "FORECAST_UPDATE"


@dataclass
class AsteriaSimulator:
    certs: Certs
    knobs: Knobs = field(default_factory=Knobs)
    rogue: Certs | None = None  # server certificate when knobs.untrusted_cert
    position: int = 0  # distinct events sent so far
    frames: int = 0  # frames sent, replays and bad ones included
    upgrades: int = 0
    refused: int = 0
    url: str = ""
    # Events made in advance (bench/ingest.py), so that making them is not what is measured.
    prepared: list[tuple[str, bytes]] | None = None

    def __post_init__(self) -> None:
        self.done = anyio.Event()
        self._server: Server | None = None
        # What was sent, as sent: a replay resends these bytes (with stamp_now, making the
        # event again would stamp it anew, a different change).
        self.sent: deque[tuple[str, bytes]] = deque(maxlen=max(self.knobs.replay, 64))
        # send_raw(): (frame, text) sent once the `count` events are out
        self.raw: deque[tuple[bytes | str, bool | None]] = deque()
        self._raw_queued = anyio.Event()

    def source_toml(self, name: str, **extra: str) -> str:
        """The `[sources.<name>]` table that points streamd at this gateway (its URL, the
        client id it expects, and the throwaway certificates); `extra` adds keys as TOML."""
        c = self.certs
        return source_table(name, {"provider": "asteria", "url": self.url, "client_id": self.knobs.client_id,
                                   "cert": c.client_cert, "key": c.client_key, "ca": c.ca}, extra)

    def event(self, i: int) -> tuple[str, bytes]:
        k = self.knobs
        return event(i, k.seed, k.companies, datetime.now(UTC) if k.stamp_now else None, k.profile)

    def send_raw(self, *frames: bytes | str, text: bool | None = None) -> None:
        """Send `frames` exactly as given (str: a text frame, bytes: a binary one; bytes in
        a text frame with `text=True`, UTF-8 or not, as a gateway breaking the protocol
        would) once the `count` events are out, on the open connection or the next one.
        For tests."""
        self.raw.extend((f, text) for f in frames)
        self._raw_queued.set()

    def _check_client(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("x-asteria-client") != self.knobs.client_id:
            self.refused += 1
            return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or unknown x-asteria-client\n")
        return None

    async def serve(self, host: str = "127.0.0.1", port: int = 0, *,
                    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        certs = self.rogue if self.knobs.untrusted_cert and self.rogue else self.certs
        ctx = certs.server_context()
        if certs is not self.certs:
            ctx.load_verify_locations(self.certs.client_ca)
        async with serve(self._handler, host, port, ssl=ctx, process_request=self._check_client,
                         compression=None, max_queue=16, ping_interval=None, close_timeout=1) as server:
            self._server = server
            sock = next(iter(server.sockets))
            h, p = sock.getsockname()[:2]
            self.url = f"wss://{h}:{p}"
            task_status.started(self.url)
            await server.serve_forever()

    async def _handler(self, ws: ServerConnection) -> None:
        try:
            await self._stream(ws)
        except ConnectionClosed:
            pass  # the client went away: it reconnects (or is done)

    async def _stream(self, ws: ServerConnection) -> None:
        k = self.knobs
        self.upgrades += 1
        if k.replay and self.sent:
            for topic, data in list(self.sent)[-k.replay:]:
                await self._send(ws, topic, data)
        here = 0
        started = time.monotonic()
        while not k.count or self.position < k.count:
            self.frames += 1
            if k.malformed_every and self.frames % k.malformed_every == 0:
                await ws.send(MALFORMED.decode())
            if k.unknown_every and self.frames % k.unknown_every == 0:
                await ws.send(wire.encode_frame(UNKNOWN_TOPIC, b'{"_id":"x"}').decode())
            if self.prepared is not None:
                topic, data = self.prepared[self.position]
            else:
                topic, data = self.event(self.position)
            self.sent.append((topic, data))
            await self._send(ws, topic, data)
            self.position += 1
            here += 1
            if k.drop_every and here % k.drop_every == 0:
                await ws.close(1012, "simulated restart")
                return
            if k.rate:
                ahead = here / k.rate - (time.monotonic() - started)
                if ahead > 0.001:
                    await anyio.sleep(ahead)
        self.done.set()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._send_queued, ws)
            await ws.wait_closed()
            tg.cancel_scope.cancel()

    async def _send_queued(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):  # the client went away: the rest waits
            while True:
                while self.raw:
                    frame, text = self.raw[0]
                    await ws.send(frame, text=text)
                    self.raw.popleft()  # only once sent: one cut off goes on the next connection
                    self.frames += 1
                self._raw_queued = anyio.Event()
                await self._raw_queued.wait()

    async def _send(self, ws: ServerConnection, topic: str, data: bytes) -> None:
        await ws.send(wire.encode_frame(topic, data).decode())


async def send_webhooks(url: str, events: Iterable[tuple[str, bytes]], *, header: str, secret: str,
                        client: httpx.AsyncClient | None = None) -> list[httpx.Response]:
    """POST events the way Asteria delivers webhooks: JSON body, `x-asteria-topic`, and the
    header the partner registered."""
    own = client is None
    http = client or httpx.AsyncClient(timeout=10)
    try:
        out = []
        for topic, data in events:
            out.append(await http.post(url, content=data, headers={
                "content-type": "application/json;charset=utf-8", "x-asteria-topic": topic,
                header: secret, "user-agent": "axios/0.19.2"}))
        return out
    finally:
        if own:
            await http.aclose()


def simulator(directory: Path, knobs: Knobs | None = None) -> AsteriaSimulator:
    """A simulator with fresh certificates in `directory` (and a rogue CA beside them)."""
    return AsteriaSimulator(make_certs(directory), knobs or Knobs(), rogue=make_certs(directory, "rogue"))


