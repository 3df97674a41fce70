"""The daemon's HTTP listener: the webhook routes sources register, and /metrics, /healthz,
/readyz (on `http.admin_listen` when set, else beside the webhooks).

It faces whoever can reach it, so every webhook goes through `_wrap`, which owns what
all of them share, in this order:

1. 503 while the daemon drains;
2. the route's `auth`, from the headers alone: a caller without credentials is answered
   401 and its connection closed *without its body being read*, so a stranger can
   make streamd hold no more than a request head (`listener.py` bounds those);
3. the body limit (413, from Content-Length before reading, and while reading) and the
   body deadline `http.body_timeout` (408); on shutdown a body still arriving gets
   `http.drain_grace`, then 503, so no client holds the drain hostage;
4. the handler, whose commit must finish within `http.commit_timeout` (else 503: the
   sender retries, and a retried event gets the same id and is dropped as a duplicate).

Every answer given before the body was read whole closes the connection: the rest of a
body no one will read must not keep it open. Each answer is counted per source and code.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
from anyio.abc import TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .asgi import bind
from .config import HttpConfig
from .errors import BindError, StoreError
from .escape import escape
from .health import Health
from .listener import FD_RESERVE, Limits, Listener, connection_of, raise_fd_limit
from .metrics import Metrics
from .sources.base import WebhookAuth, WebhookHandler, WebhookReply, WebhookRequest, encode_body

log = logging.getLogger("streamd.http")

_CLOSE = {"Connection": "close"}


class _BodyTooLarge(Exception):
    pass


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class Web:
    def __init__(self, cfg: HttpConfig, metrics: Metrics, health: Health) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.health = health
        self.draining = False
        # Webhook requests past the draining check: shutdown waits for them (`idle`) before
        # its last commit, so nothing a handler commits lands after the sinks drained.
        self._inflight = 0
        self._idle = anyio.Event()
        self._idle.set()
        # Body reads in progress: shutdown shortens their deadlines to `drain_grace`.
        self._reading: set[anyio.CancelScope] = set()
        self.address: tuple[str, int] | None = None
        self.admin_address: tuple[str, int] | None = None
        self._admin_routes: list[Route] = [
            Route("/metrics", self._metrics, methods=["GET"]),
            Route("/healthz", self._healthz, methods=["GET"]),
            Route("/readyz", self._readyz, methods=["GET"]),
        ]
        self._routes: list[Route] = [] if cfg.admin_listen else list(self._admin_routes)
        self._sockets: list[tuple[str, socket.socket]] = []
        self._listeners: list[Listener] = []
        self.finished = anyio.Event()

    # ------------------------------------------------------------ registration

    def webhook(self, owner: str, path: str, handler: WebhookHandler, *, auth: WebhookAuth,
                methods: Sequence[str] = ("POST",)) -> None:
        if auth is None:  # a route anyone may post to would sign strangers' events as genuine
            raise ValueError(f"webhook {path} of {owner} has no authentication")
        for route in [*self._routes, *self._admin_routes]:
            if route.path == path:
                raise ValueError(f"webhook path {path} is taken")
        self._routes.append(Route(path, self._wrap(owner, handler, auth), methods=list(methods)))

    def _wrap(self, owner: str, handler: WebhookHandler, auth: WebhookAuth) -> Any:
        counter = self.metrics.webhook_requests
        counter.labels(owner, "401")  # every route authenticates: the family, from the first scrape

        async def endpoint(request: Request) -> Response:
            response = await self._handle(owner, handler, auth, request)
            counter.labels(owner, str(response.status_code)).inc()
            return response

        return endpoint

    @property
    def inflight(self) -> int:
        return self._inflight

    async def idle(self) -> None:
        """Return once no webhook request is being handled (call `drain()` first)."""
        await self._idle.wait()

    def drain(self) -> None:
        """Stop intake: new webhook requests get 503, and a body still arriving gets
        `http.drain_grace` more, then 503."""
        self.draining = True
        cut = anyio.current_time() + self.cfg.drain_grace.seconds
        for scope in self._reading:
            scope.deadline = min(scope.deadline, cut)

    async def _handle(self, owner: str, handler: WebhookHandler, auth: WebhookAuth,
                      request: Request) -> Response:
        if self.draining:
            return _json(503, {"error": "shutting down"}, {"Retry-After": "5", **_CLOSE})
        self._inflight += 1
        self._idle = anyio.Event() if self._inflight == 1 else self._idle
        try:
            return await self._handle_one(owner, handler, auth, request)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def _handle_one(self, owner: str, handler: WebhookHandler, auth: WebhookAuth,
                          request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        refused = auth(headers)
        if refused is not None:
            return _reply(refused, close=True)
        conn = connection_of(request.scope)
        if conn is not None:
            conn.authenticated()
        limit = self.cfg.body_limit.bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _json(413, {"error": f"body larger than {limit} bytes"}, _CLOSE)
        body = await self._read_body(request, limit)
        if isinstance(body, Response):
            if conn is not None and body.status_code in (408, 503):
                conn.table.count("body_timeout" if body.status_code == 408 else "drain")
            return body
        req = WebhookRequest(
            method=request.method, path=request.url.path, path_params=dict(request.path_params),
            query=dict(request.query_params), headers=headers, body=body,
            client=request.client.host if request.client else "")
        deadline = self.cfg.commit_timeout.seconds
        try:
            with anyio.fail_after(deadline):
                reply = await handler(req)
        except TimeoutError:
            log.warning("webhook %s: commit not done within %.0fs; answered 503", owner, deadline)
            return _json(503, {"error": "store busy, retry later"}, {"Retry-After": "10"})
        except StoreError as exc:
            log.warning("webhook %s: %s; answered 503", owner, exc)
            return _json(503, {"error": "store unavailable, retry later"}, {"Retry-After": "10"})
        return _reply(reply)

    async def _read_body(self, request: Request, limit: int) -> bytes | Response:
        """The whole body, or the answer that ends the request (closing the connection)."""
        scope = anyio.CancelScope(deadline=anyio.current_time() + self.cfg.body_timeout.seconds)
        if self.draining:
            scope.deadline = min(scope.deadline, anyio.current_time() + self.cfg.drain_grace.seconds)
        self._reading.add(scope)
        chunks: list[bytes] = []
        size = 0
        try:
            with scope:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise _BodyTooLarge
                    chunks.append(chunk)
        except _BodyTooLarge:
            return _json(413, {"error": f"body larger than {limit} bytes"}, _CLOSE)
        except ClientDisconnect:
            return Response(status_code=499)
        finally:
            self._reading.discard(scope)
        if scope.cancelled_caught:
            if self.draining:
                return _json(503, {"error": "shutting down"}, {"Retry-After": "5", **_CLOSE})
            return _json(408, {"error": f"body not received within "
                                        f"{self.cfg.body_timeout.seconds:g}s"}, _CLOSE)
        return b"".join(chunks)

    # ------------------------------------------------------------ built-in routes

    async def _metrics(self, request: Request) -> Response:
        self.refresh_health_metrics()
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def _healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def _readyz(self, request: Request) -> Response:
        ready, lines = self.health.report()
        if self.draining:
            ready, lines = False, ["daemon: shutting down", *lines]
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"ready": ready, "components": lines}, status_code=200 if ready else 503)
        # A reason may hold a peer's text: one escaped line per component.
        text = ("ready\n" if ready else "not ready\n") + "".join(f"{escape(line)}\n" for line in lines)
        return PlainTextResponse(text, status_code=200 if ready else 503)

    def refresh_health_metrics(self) -> None:
        now = self.health.now()
        for c in self.health.components.values():
            self.metrics.component_healthy.labels(c.kind, c.name).set(1 if c.healthy(now) else 0)

    # ------------------------------------------------------------ serving

    def bind(self) -> None:
        """Bind the listening sockets (raises BindError naming the key); they listen at once."""
        for key, listen in (("http.listen", self.cfg.listen), ("http.admin_listen", self.cfg.admin_listen)):
            if not listen:
                continue
            try:
                sock = bind(*parse_listen(listen))
            except OSError as exc:
                for _, s in self._sockets:
                    s.close()
                self._sockets.clear()
                raise BindError(f"{key} {listen}: {exc.strerror or exc}") from None
            bound = sock.getsockname()
            address = (str(bound[0]), int(bound[1]))
            if key == "http.listen":
                self.address = address
            else:
                self.admin_address = address
            self._sockets.append((key, sock))

    def _limits(self) -> Limits:
        """The configured caps, lowered (with a warning) to what the open-files limit allows:
        past it, accept() fails instead of the oldest idle connection being closed."""
        cfg = self.cfg
        room = max(raise_fd_limit() - FD_RESERVE, 64)
        if cfg.admin_listen:
            room //= 2
        most = min(cfg.max_connections, room)
        if most < cfg.max_connections:
            log.warning("http: max_connections %d lowered to %d: the open-files limit leaves no "
                        "room for more (raise LimitNOFILE=)", cfg.max_connections, most)
        return Limits(max_connections=most,
                      max_unauthenticated=min(cfg.max_unauthenticated, most),
                      header_timeout=cfg.header_timeout.seconds,
                      keepalive_timeout=cfg.keepalive_timeout.seconds)

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        if not self._sockets:
            self.bind()
        limits = self._limits()
        try:
            async with anyio.create_task_group() as tg:
                for key, sock in self._sockets:
                    admin = key == "http.admin_listen"
                    app = Starlette(routes=self._admin_routes if admin else self._routes,
                                    exception_handlers={HTTPException: _http_error})
                    listener = Listener("admin" if admin else "main", app, limits, self.metrics)
                    self._listeners.append(listener)
                    await tg.start(listener.serve, sock)
                    host, port = (self.admin_address if admin else self.address) or ("?", 0)
                    if admin:
                        log.info("http: admin endpoints (/metrics, /healthz, /readyz) on %s:%d",
                                 host, port)
                    else:
                        log.info("http: listening on %s:%d", host, port)
                task_status.started()
        finally:
            for _, sock in self._sockets:
                sock.close()
            self.finished.set()

    def stop(self) -> None:
        for listener in self._listeners:
            listener.stop()


async def _http_error(request: Request, exc: Exception) -> Response:
    """404/405 and the like, with the connection closed: a body sent to a path nobody
    reads must not keep it open."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return PlainTextResponse(f"{status}\n", status_code=status, headers=_CLOSE)


def _reply(reply: WebhookReply, *, close: bool = False) -> Response:
    headers: Mapping[str, str] = {**reply.headers, **_CLOSE} if close else dict(reply.headers)
    if reply.body is None:
        return Response(status_code=reply.status, headers=dict(headers))
    return Response(encode_body(reply.body), status_code=reply.status, headers=dict(headers),
                    media_type="application/json")


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(encode_body(body), status_code=status, headers=headers,
                    media_type="application/json")
