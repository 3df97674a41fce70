"""The daemon's one HTTP listener: /metrics, /healthz, /readyz, and the webhook routes
sources register (uvicorn serving a Starlette app).

Every webhook goes through `_wrap`, which owns what all of them share: the body
limit (413), 503 while the daemon drains or when the store cannot commit within
`http.commit_timeout` (the sender retries; a retried event gets the same id and is
dropped as a duplicate), and a counter per source and status code.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from typing import Any

import anyio
import uvicorn
from anyio.abc import TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .asgi import Server, bind
from .config import HttpConfig
from .errors import StoreError
from .escape import escape
from .health import Health
from .metrics import Metrics
from .sources.base import WebhookHandler, WebhookRequest, encode_body

log = logging.getLogger("streamd.http")


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
        self.address: tuple[str, int] | None = None
        self._routes: list[Route] = [
            Route("/metrics", self._metrics, methods=["GET"]),
            Route("/healthz", self._healthz, methods=["GET"]),
            Route("/readyz", self._readyz, methods=["GET"]),
        ]
        self._server: Server | None = None
        self.finished = anyio.Event()

    # ------------------------------------------------------------ registration

    def webhook(self, owner: str, path: str, handler: WebhookHandler,
                methods: Sequence[str] = ("POST",)) -> None:
        for route in self._routes:
            if route.path == path:
                raise ValueError(f"webhook path {path} is taken")
        self._routes.append(Route(path, self._wrap(owner, handler), methods=list(methods)))

    def _wrap(self, owner: str, handler: WebhookHandler) -> Any:
        counter = self.metrics.webhook_requests

        async def endpoint(request: Request) -> Response:
            response = await self._handle(owner, handler, request)
            counter.labels(owner, str(response.status_code)).inc()
            return response

        return endpoint

    @property
    def inflight(self) -> int:
        return self._inflight

    async def idle(self) -> None:
        """Return once no webhook request is being handled (set `draining` first)."""
        await self._idle.wait()

    async def _handle(self, owner: str, handler: WebhookHandler, request: Request) -> Response:
        if self.draining:
            return _json(503, {"error": "shutting down"}, {"Retry-After": "5"})
        self._inflight += 1
        self._idle = anyio.Event() if self._inflight == 1 else self._idle
        try:
            return await self._handle_one(owner, handler, request)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def _handle_one(self, owner: str, handler: WebhookHandler, request: Request) -> Response:
        limit = self.cfg.body_limit.bytes
        deadline = self.cfg.commit_timeout.seconds
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _json(413, {"error": f"body larger than {limit} bytes"})
        try:
            body = await _read_body(request, limit)
        except _BodyTooLarge:
            return _json(413, {"error": f"body larger than {limit} bytes"})
        except ClientDisconnect:
            return Response(status_code=499)
        req = WebhookRequest(
            method=request.method, path=request.url.path, path_params=dict(request.path_params),
            query=dict(request.query_params), headers={k.lower(): v for k, v in request.headers.items()},
            body=body, client=request.client.host if request.client else "")
        try:
            with anyio.fail_after(deadline):
                reply = await handler(req)
        except TimeoutError:
            log.warning("webhook %s: commit not done within %.0fs; answered 503", owner, deadline)
            return _json(503, {"error": "store busy, retry later"}, {"Retry-After": "10"})
        except StoreError as exc:
            log.warning("webhook %s: %s; answered 503", owner, exc)
            return _json(503, {"error": "store unavailable, retry later"}, {"Retry-After": "10"})
        headers = dict(reply.headers)
        if reply.body is None:
            return Response(status_code=reply.status, headers=headers)
        return Response(encode_body(reply.body), status_code=reply.status, headers=headers,
                        media_type="application/json")

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

    def bind(self) -> socket.socket:
        sock = bind(*parse_listen(self.cfg.listen))
        bound = sock.getsockname()
        self.address = (str(bound[0]), int(bound[1]))
        return sock

    async def serve(self, sock: socket.socket, *,
                    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        app = Starlette(routes=self._routes)
        config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False,
                                server_header=False, timeout_graceful_shutdown=5,
                                timeout_keep_alive=30)
        server = Server(config)
        self._server = server
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(server.serve, [sock])
                while not server.started:
                    if server.should_exit:
                        break
                    await anyio.sleep(0.01)
                log.info("http: listening on %s:%d", *(self.address or ("?", 0)))
                task_status.started()
        finally:
            sock.close()
            self.finished.set()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True


async def _read_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(encode_body(body), status_code=status, headers=headers,
                    media_type="application/json")
