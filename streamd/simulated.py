"""What the provider simulators (and the tests' receivers) share: an ASGI app served by
uvicorn on loopback, over TLS when given certificates from a throwaway CA, `serve()`
for a task group, `async with` for a test, and a hook that sees every answered
request (for their request logs).
"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import anyio
import uvicorn
from anyio.abc import TaskStatus
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .asgi import Server, bind
from .certs import Certs


class _Config(uvicorn.Config):
    # uvicorn builds its SSLContext from the certificate files in load() and takes no
    # context of ours: raise the floor on the one it built, before it serves.
    def __init__(self, app: Any, min_tls: ssl.TLSVersion, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.min_tls = min_tls

    def load(self) -> None:
        super().load()
        if self.ssl is not None:
            self.ssl.minimum_version = self.min_tls


class _Server(Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.stop = anyio.Event()

    async def main_loop(self) -> None:
        await self.stop.wait()  # instead of uvicorn's 0.1 s polling: stops at once


def source_table(name: str, fields: Mapping[str, object], extra: Mapping[str, str]) -> str:
    """A `[sources.<name>]` table: `fields` as TOML values (strings, paths, bools and lists
    of strings, written for them), then `extra` verbatim (values already TOML)."""
    lines = [f"[sources.{name}]"]
    for key, value in fields.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {str(value).lower()}")
        elif isinstance(value, (list, tuple)):
            lines.append(f"{key} = {json.dumps([str(v) for v in value])}")
        else:
            lines.append(f"{key} = {json.dumps(str(value))}")
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


class AccessTokens:
    """The bearer tokens a simulated provider issued, each until its expiry."""

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}  # token -> expiry (monotonic)

    def issue(self, ttl: float) -> str:
        token, now = secrets.token_urlsafe(32), time.monotonic()
        self._expiry = {t: at for t, at in self._expiry.items() if at > now}  # forget stale ones
        self._expiry[token] = now + ttl
        return token

    def valid(self, headers: Headers) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        expiry = self._expiry.get(token.strip()) if scheme.lower() == "bearer" else None
        return expiry is not None and time.monotonic() < expiry

    def expire_all(self) -> None:
        """Every token issued so far is expired from now on."""
        for token in self._expiry:
            self._expiry[token] = -math.inf


class SimulatedServer:
    """Subclasses set `NAME`, `MIN_TLS` and `self._app`, and may override `_prepare`
    (work done before the first connection), `_logged` (one answered request) and
    `_stopping` (serving ends: answer what still waits). Without `certs`, plain HTTP.
    The port is kept, so a second `serve()` comes back on the same one."""

    NAME: ClassVar[str] = "simulator"
    MIN_TLS: ClassVar[ssl.TLSVersion] = ssl.TLSVersion.TLSv1_2

    def __init__(self, certs: Certs | None, port: int = 0) -> None:
        self.certs = certs
        self.port = port
        self.url = ""
        self._app: ASGIApp | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    def _prepare(self) -> None:
        pass

    def secret_file(self, name: str, value: str) -> Path:
        """Write a secret for a `file:` reference in the config a simulator hands out."""
        assert self.certs is not None
        path = self.certs.dir / name
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(value + "\n")
        return path

    def _logged(self, scope: Scope, at: float, status: int) -> None:
        pass

    def _stopping(self) -> None:
        pass

    async def serve(self, host: str = "127.0.0.1", port: int | None = None, *,
                    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; `task_status.started(self.url)` once connections are accepted."""
        self._prepare()
        sock = bind(host, self.port if port is None else port)
        try:
            bound_host, self.port = sock.getsockname()[:2]
            scheme = "https" if self.certs is not None else "http"
            self.url = f"{scheme}://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{self.port}"
            tls: dict[str, Any] = {} if self.certs is None else {
                "ssl_certfile": str(self.certs.server_chain), "ssl_keyfile": str(self.certs.server_key)}
            config = _Config(self._asgi, self.MIN_TLS, interface="asgi3", lifespan="off", ws="none",
                             log_config=None, access_log=False, server_header=False,
                             timeout_graceful_shutdown=1, **tls)
            server = _Server(config)
            finished = anyio.Event()

            async def run() -> None:
                # Shielded: a cancelled serve() still shuts uvicorn down cleanly (below).
                with anyio.CancelScope(shield=True):
                    try:
                        await server.serve([sock])
                    finally:
                        # A client still connected (a streamd not stopped yet) may hold a TLS
                        # shutdown open past uvicorn's grace: cut it, or its socket outlives
                        # the event loop the simulator ran on.
                        for conn in list(server.server_state.connections):
                            conn.transport.abort()
                        finished.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                try:
                    while not server.started:
                        if finished.is_set():
                            raise RuntimeError(f"the {self.NAME} simulator did not start")
                        await anyio.sleep(0.005)
                    task_status.started(self.url)
                    await finished.wait()
                finally:
                    self._stopping()
                    server.should_exit = True
                    server.stop.set()
        finally:
            sock.close()

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            tg = await stack.enter_async_context(anyio.create_task_group())
            await tg.start(self.serve)
            stack.callback(tg.cancel_scope.cancel)  # runs first on exit: stop serving
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app, with every answered request shown to `_logged`."""
        assert self._app is not None
        if scope["type"] != "http":
            return await self._app(scope, receive, send)
        at, status = time.monotonic(), 0

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, capture)
        finally:
            self._logged(scope, at, status)
