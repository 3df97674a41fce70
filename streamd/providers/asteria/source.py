"""The Asteria source: the partner-gateway websocket over mutual TLS, and its webhooks.

Two tasks share one bounded stream of frames:

    connect loop ──frames──► [stream: batch_max frames] ──► committer ──Batch──► writer
    (reconnects forever)                                    (normalizes; at most
                                                             `inflight` batches uncommitted)

When the store is slow, the committer waits for its oldest batch, the stream
fills, the reader stops reading, and TCP pushes back on the gateway: memory stays
flat. Frames already read are committed even when the connection drops.

The gateway documents no resume cursor: a reconnect can miss events, and the same
event may come twice (a replay, or the same change by webhook). Derived ids make
the second copy a counted duplicate.

A deletion names only the record: its tenant comes from what the source has seen
(`tenants`), which both paths keep in `record_tenants` beside their events.
"""

from __future__ import annotations

import hmac
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import partial

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus, WebSocketException

from ...errors import Rejected
from ...health import State
from ...model import Event
from ...retry import Retries
from ...sources import SourceContext, WebhookReply, WebhookRequest, json_reply
from ...sources.window import CommitWindow
from ...store import Batch, DeadLetter, RecordTenant
from . import wire
from .config import AsteriaConfig, tls_context
from .normalize import normalize, normalize_frame, tenant_unknown
from .tenants import Recent

log = logging.getLogger("streamd.source.asteria")

# On stop, frames already read from the socket are still committed, for at most this long.
DRAIN_SECONDS = 5.0
# Records whose tenant is kept in memory: more than the source ever holds uncommitted
# (inflight x batch_max frames), so a deletion right after its record's creation is
# placed even before that creation is committed.
RECENT_MIN = 10_000


class AsteriaSource:
    def __init__(self, ctx: SourceContext, cfg: AsteriaConfig) -> None:
        self.name = ctx.name
        self.ctx = ctx
        self.cfg = cfg
        self._ssl = tls_context(cfg)
        self.connections = 0
        self.frames_read = 0
        self._leftover: bytes | None = None  # a frame read when the stop came, not queued yet
        self._valid_since_open = False
        self._drain = anyio.CancelScope(shield=True)
        self._zone = cfg.zone
        self.recent = Recent(max(RECENT_MIN, (cfg.inflight + 2) * cfg.batch_max))
        ctx.metrics.source_tenant_unknown.labels(self.name)
        if cfg.webhook_secret is not None:
            ctx.webhook(f"/webhooks/{ctx.name}", self.handle, auth=self.auth)

    # ---------------------------------------------------------------- the pure part

    def renormalize(self, raw: bytes, context: Mapping[str, str], received_at: datetime) -> list[Event]:
        if context.get("via") == "webhook":
            return normalize(context.get("topic", ""), raw, source=self.name, received_at=received_at,
                             zone=self._zone, tenant_of=self.recent.get)
        return normalize_frame(raw, source=self.name, received_at=received_at, zone=self._zone,
                               tenant_of=self.recent.get)

    # ---------------------------------------------------------------- tenants

    async def _placed(self, events: list[Event], again: Callable[[], list[Event]]) -> list[Event]:
        """`events` of one payload, each in its tenant: one the payload does not name and
        the recent map does not know is looked up in the store (then the payload is
        normalized `again`, its ids depending on the tenant); one still unknown is counted."""
        missing = [ev for ev in events if tenant_unknown(ev)]
        if not missing:
            return events
        placed = False
        for ev in missing:
            found = await self.ctx.reader.entity_tenants(self.name, ev.entity, [ev.key])
            if ev.key in found:
                self.recent.saw(ev.entity, ev.key, found[ev.key])  # known to the store already
                placed = True
        if placed:
            events = again()
        unknown = sum(1 for ev in events if tenant_unknown(ev))
        if unknown:
            self.ctx.metrics.source_tenant_unknown.labels(self.name).inc(unknown)
        return events

    def _states(self, events: list[Event]) -> list[RecordTenant]:
        """The rows that keep each record's tenant, for those the store may not know yet."""
        return [RecordTenant(ev.entity, ev.key, ev.tenant) for ev in events
                if ev.tenant and self.recent.saw(ev.entity, ev.key, ev.tenant)]

    # ---------------------------------------------------------------- the websocket

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        send, receive = anyio.create_memory_object_stream[bytes](self.cfg.batch_max)
        self.ctx.metrics.source_connected.labels(self.name).set(0)
        self.ctx.component.set(State.STARTING, "connecting")
        task_status.started()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._committer, receive)
            try:
                await self._connect_loop(send)
            finally:
                # Stopping: nothing more is read, but what was read gets committed (the
                # gateway has no acks; a frame dropped here would be gone for good).
                send.close()
                self._drain.deadline = anyio.current_time() + DRAIN_SECONDS

    async def _connect_loop(self, frames: MemoryObjectSendStream[bytes]) -> None:
        cfg = self.cfg
        retries = Retries(cfg.backoff, metrics=self.ctx.metrics, component=self.ctx.component, logger=log,
                          message="source %(name)s: %(reason)s; reconnect %(attempt)d in %(wait).1fs")
        component = self.ctx.component
        connected = self.ctx.metrics.source_connected.labels(self.name)
        while True:
            opened = 0.0
            self._valid_since_open = False
            try:
                async with connect(
                    cfg.url, ssl=self._ssl, additional_headers={"x-asteria-client": cfg.client_id},
                    compression="deflate" if cfg.compression else None, proxy=None,
                    open_timeout=cfg.open_timeout.seconds, ping_interval=cfg.ping_interval.seconds,
                    ping_timeout=cfg.ping_timeout.seconds, max_size=cfg.max_message.bytes,
                    max_queue=16,
                ) as ws:
                    opened = time.monotonic()
                    self.connections += 1
                    connected.set(1)
                    component.ok()
                    log.info("source %s: connected to %s", self.name, cfg.url)
                    try:
                        reason = await self._read(ws, frames)
                    except anyio.get_cancelled_exc_class():
                        # streamd is stopping: say so (1001), rather than "internal error";
                        # a gateway that does not answer the close in time is cut off.
                        with anyio.move_on_after(1, shield=True):
                            await ws.close(1001, "streamd stopping")
                        ws.transport.abort()
                        raise
            except (OSError, TimeoutError, WebSocketException) as exc:
                reason = _describe(exc)
            connected.set(0)
            healthy = opened and (self._valid_since_open
                                  or time.monotonic() - opened >= cfg.healthy_after.seconds)
            if healthy:
                retries.reset()
            self.ctx.metrics.source_reconnects.labels(self.name).inc()
            await retries.pause(reason)  # an outage keeps its `since` across reconnects

    async def _read(self, ws: ClientConnection, frames: MemoryObjectSendStream[bytes]) -> str:
        # Each frame's bytes as they came, text or binary: the frame is JSON decoded from
        # bytes, so decoding a text frame's UTF-8 into a str here only to encode it back
        # was wasted (normalize_frame checks the UTF-8, and a frame that is not goes to
        # dead letters like any malformed one, rather than failing the connection).
        recv = ws.recv
        try:
            while True:
                data = await recv(False)
                self.frames_read += 1
                try:
                    frames.send_nowait(data)
                except anyio.WouldBlock:
                    # The committer is behind: wait, and meanwhile the socket is not read.
                    try:
                        await frames.send(data)
                    except anyio.get_cancelled_exc_class():
                        self._leftover = data  # stopping: the drain commits it
                        raise
        except ConnectionClosedOK:
            return f"connection closed by the gateway ({_close_reason_ws(ws)})"
        except ConnectionClosed as exc:
            return f"connection lost ({_close_reason(exc)})"

    # ---------------------------------------------------------------- committing

    async def _committer(self, frames: MemoryObjectReceiveStream[bytes]) -> None:
        # Shielded: a stop closes the frame stream instead, and this drains it (bounded by
        # DRAIN_SECONDS, set when the stop comes).
        with self._drain, frames:
            await self._commit_frames(frames)

    async def _commit_frames(self, frames: MemoryObjectReceiveStream[bytes]) -> None:
        window = CommitWindow(self.ctx.enqueue, self.cfg.inflight)
        limit = self.cfg.batch_max
        received = self.ctx.metrics.source_received.labels(self.name)
        async for first in frames:
            batch = [first]
            while len(batch) < limit:
                try:
                    batch.append(frames.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    # EndOfStream: the reader stopped (closed its end) and the rest is in
                    # this batch; it is committed, and the loop ends after it.
                    break
            received.inc(len(batch))
            events, states, rejects = await self._normalize(batch, self.ctx.now())
            if events:
                self._valid_since_open = True
            await window.add(Batch(events=events, record_tenants=states, dead_letters=rejects))
        if self._leftover is not None:
            received.inc()
            events, states, rejects = await self._normalize([self._leftover], self.ctx.now())
            self._leftover = None
            await window.add(Batch(events=events, record_tenants=states, dead_letters=rejects))
        await window.settle()

    async def _normalize(self, batch: list[bytes], received_at: datetime
                         ) -> tuple[list[Event], list[RecordTenant], list[DeadLetter]]:
        events: list[Event] = []
        states: list[RecordTenant] = []
        rejects: list[DeadLetter] = []
        name, zone, tenant_of = self.name, self._zone, self.recent.get
        for data in batch:
            # Per frame, only what each needs: the store is asked (`_placed`, a coroutine)
            # only for an event no tenant could be found for, which is rare (a deletion of
            # a record this source never saw); not for every frame.
            try:
                got = normalize_frame(data, source=name, received_at=received_at, zone=zone,
                                      tenant_of=tenant_of)
                if any(map(tenant_unknown, got)):
                    got = await self._placed(got, partial(
                        normalize_frame, data, source=name, received_at=received_at, zone=zone,
                        tenant_of=tenant_of))
            except Rejected as exc:
                rejects.append(self.ctx.dead_letter(exc.reason, data, {"via": "websocket"}))
                continue
            events += got
            states += self._states(got)  # frame by frame: the next frame's tenant_of sees these
        return events, states, rejects

    # ---------------------------------------------------------------- webhooks

    def auth(self, headers: Mapping[str, str]) -> WebhookReply | None:
        """Before the body is read: the shared secret header, compared in constant time."""
        assert self.cfg.webhook_secret is not None
        got = headers.get(self.cfg.webhook_header.lower(), "").encode()
        if hmac.compare_digest(got, self.cfg.webhook_secret.reveal().encode()):
            return None
        return json_reply(401, error=f"missing or wrong {self.cfg.webhook_header}")

    async def handle(self, req: WebhookRequest) -> WebhookReply:
        ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return json_reply(415, error="content-type must be application/json")
        topic = req.headers.get("x-asteria-topic", "")
        context = {"via": "webhook", "topic": topic}
        self.ctx.received()
        received_at = self.ctx.now()

        def again() -> list[Event]:
            return normalize(topic, req.body, source=self.name, received_at=received_at,
                             zone=self._zone, tenant_of=self.recent.get)
        try:
            if topic not in wire.TOPIC_SET:
                raise Rejected(f"unknown topic {topic!r} (x-asteria-topic)")
            events = await self._placed(again(), again)
        except Rejected as exc:
            # Kept with its raw bytes; the sender learns it will never be taken as is.
            await self.ctx.submit(Batch(dead_letters=[self.ctx.dead_letter(exc.reason, req.body, context)]))
            return json_reply(400, error=exc.reason)
        states = self._states(events)
        try:
            done = await self.ctx.submit(Batch(events=events, record_tenants=states))
        except BaseException:
            for st in states:  # maybe never written: write them with the record's next change
                self.recent.forget(st.entity, st.key)
            raise
        # 2xx only now: the events are committed (invariant 2).
        return json_reply(200, appended=done.appended, duplicates=done.duplicates,
                          ids=[e.id for e in events])


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"the gateway refused the upgrade: HTTP {exc.response.status_code}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the gateway's certificate was not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "connecting timed out"
    if isinstance(exc, OSError):
        return f"cannot connect: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


def _close_reason(exc: ConnectionClosed) -> str:
    rcvd = exc.rcvd
    if rcvd is None:
        return "no close frame"
    return f"code {rcvd.code}" + (f", {rcvd.reason}" if rcvd.reason else "")


def _close_reason_ws(ws: ClientConnection) -> str:
    code = ws.close_code
    return f"code {code}" + (f", {ws.close_reason}" if ws.close_reason else "") if code else "no code"
