"""The daemon's listening sockets: uvicorn's HTTP/1.1 protocol (h11) behind streamd's own
accept loop and connection table, so what a caller without credentials can hold is bounded.

uvicorn parses HTTP and runs the Starlette app. What it leaves to whoever faces the
internet, this module adds:

- **Accepting.** asyncio's accept loop, on EMFILE (out of file descriptors), logs a
  traceback per try, tries again up to `backlog` times in the same tick, and schedules
  one retry per failure: millions of journal lines a minute. Here a failed accept is
  counted (`streamd_http_accept_errors_total`), logged once a minute at most, and makes
  the listener hold `FD_HEADROOM` fewer connections than it had (closing the oldest idle
  ones), so the rest of the process (a sink opening its file) still gets descriptors,
  until accepts have worked for a minute; it backs off (10 ms doubling to 1 s).
- **Caps.** At most `max_connections` open, and at most `max_unauthenticated` that have
  not yet sent an authenticated request. Past either cap the oldest *idle* connection
  (one waiting for a request head) is closed, strangers before keep-alive connections
  of known senders; a request being handled is never cut to make room. nginx drains
  idle keep-alive connections the same way when it runs out.
- **Time.** A request head (line and headers, at most `HEAD_LIMIT` bytes) must be complete
  within `header_timeout` of the connection opening, and within `keepalive_timeout` of
  the previous answer: a client that sends nothing, or a byte a second, is cut.

Authenticating before the body, the body deadline and the shutdown cut are the app's
(`web.py`): only the app knows the route and its credentials. It tells the connection
it authenticated through `connection_of(scope).authenticated()`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import h11
import uvicorn
from anyio.abc import TaskStatus
from uvicorn.protocols.http.h11_impl import H11Protocol

from .asgi import Server
from .metrics import Metrics

log = logging.getLogger("streamd.http")

EXTENSION = "streamd.connection"  # the ASGI scope extension carrying the connection
HEAD_LIMIT = 16 * 1024  # request line and headers; larger is refused 400 by h11
ACCEPT_BURST = 64  # accepts per wake-up, so one listener cannot starve the loop
ACCEPT_BACKOFF = (0.01, 1.0)  # after a failed accept: first wait, cap
LOG_EVERY = 60.0  # a persisting accept failure is logged at most this often
# File descriptors kept free for everything but webhook connections: the store and its
# readers, sources' and sinks' own connections, log files.
FD_RESERVE = 256
# Out of descriptors all the same (another part of the process, or a lowered limit): the
# listener holds this many fewer connections than it had, so the rest can open files.
FD_HEADROOM = 16
MIN_CAP = 8
_OUT_OF_RESOURCES = {errno.EMFILE: "EMFILE", errno.ENFILE: "ENFILE", errno.ENOBUFS: "ENOBUFS",
                     errno.ENOMEM: "ENOMEM"}
# Lingering close: after answering a request whose body we did not read, drop at most this
# much more of it, for at most this long, before closing.
LINGER_SECONDS = 2.0
LINGER_BYTES = 4 * 2**20
CLOSE_REASONS = ("header_timeout", "idle", "evicted", "refused", "body_timeout", "drain",
                 "bad_request")


@dataclass(frozen=True)
class Limits:
    max_connections: int
    max_unauthenticated: int
    header_timeout: float
    keepalive_timeout: float


class Connection(H11Protocol):
    """uvicorn's h11 protocol, told by its table when to give up on a client."""

    def __init__(self, table: ConnectionTable, **kw: Any) -> None:
        super().__init__(**kw)
        self.table = table
        self.known = False  # has sent an authenticated request
        self.requests = 0
        self._timer: asyncio.TimerHandle | None = None
        self._raw: asyncio.Transport | None = None
        self._lingered = 0

    # -------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._raw = transport
        self.transport = _Lingering(transport, self)
        if self.table.admit(self):
            self._await_head(self.table.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self.table.forget(self)
        super().connection_lost(exc)


    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle and self.cycle is not None:
            # A request head arrived (h11 parsed it): it is the app's from here. The task
            # running the app is created, not started: the scope can still be added to.
            self._cancel_timer()
            self.requests += 1
            self.table.busy(self)
            # Read no body until the app asks for it (uvicorn's receive() resumes reading),
            # which it does only once the caller is authenticated.
            self.flow.pause_reading()
            extensions: dict[str, Any] = self.cycle.scope.setdefault("extensions", {})
            extensions[EXTENSION] = self

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # not already on a pipelined one
            self.table.idle(self)
            self._await_head(self.table.limits.keepalive_timeout)

    def send_400_response(self, msg: str) -> None:
        # Not HTTP, or a head past HEAD_LIMIT: uvicorn answers 400 and closes, and logs a
        # warning per request, which streamd's logging keeps quiet (a flood would flood the
        # journal). Counted instead.
        self.table.count("bad_request")
        super().send_400_response(msg)

    # -------------------------------------------------------------- for the table and the app

    def authenticated(self) -> None:
        """The app checked this request's credentials: the sender is known."""
        if not self.known:
            self.known = True
            self.table.authenticated(self)

    def cut(self) -> None:
        self._cancel_timer()
        if self._raw is not None and not self._raw.is_closing():
            self._raw.abort()

    def linger(self) -> None:
        """Our answer is sent and our side shut: read (and drop) what the client still sends
        for a moment, so its TCP stack does not reset the connection before it read the answer.
        It is the first to go when room is needed."""
        self._cancel_timer()
        self._timer = self.loop.call_later(LINGER_SECONDS, self.cut)
        self.table.closing(self)
        # What h11 and the cycle buffered of the body (up to one 256 KiB read) goes now, not
        # when the connection does.
        self.conn = h11.Connection(h11.SERVER)
        if self.cycle is not None:
            self.cycle.body = bytearray()
        if self._raw is not None:
            # recv_into one shared scratch buffer: dropping bytes allocates nothing (reading
            # them with data_received cost 256 KiB per read, ~36 MB under 300 such clients).
            self._raw.set_protocol(_Drain(self))

    def drained(self, nbytes: int) -> None:
        self._lingered += nbytes
        if self._lingered > LINGER_BYTES:
            self.cut()

    def _await_head(self, seconds: float) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(seconds, self._head_late)

    def _head_late(self) -> None:
        self._timer = None
        # Bytes of a head not yet complete, or a fresh connection that never sent one, are a
        # slow (or hostile) client; nothing at all after an answer is just an idle keep-alive.
        partial = bool(self.conn.trailing_data[0])
        self.table.close(self, "header_timeout" if partial or not self.requests else "idle")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


_SCRATCH = memoryview(bytearray(64 * 1024))  # where lingering connections' bytes are dropped


class _Drain(asyncio.BufferedProtocol):
    """The protocol of a lingering connection: reads into `_SCRATCH`, keeps nothing."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def get_buffer(self, sizehint: int) -> memoryview:
        return _SCRATCH

    def buffer_updated(self, nbytes: int) -> None:
        self.conn.drained(nbytes)

    def eof_received(self) -> bool | None:
        return None  # the client is done: the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.connection_lost(exc)


class _Lingering(asyncio.Transport):
    """The transport uvicorn's request cycle sees. Its `close()` lingers when the client is
    still sending a body we answered without reading (401, 413, 408): closing a socket with
    unread data makes the kernel send RST, and the client then loses our answer (it reads
    "connection reset" instead of 401). So: send the answer, shut our side (FIN), and drop
    what still comes for at most LINGER_SECONDS / LINGER_BYTES (Apache's and nginx's
    lingering close)."""

    def __init__(self, transport: asyncio.Transport, conn: Connection) -> None:
        super().__init__()
        self._t = transport
        self._conn = conn
        self.lingering = False

    def close(self) -> None:
        if self.lingering or self._t.is_closing():
            return
        if self._conn.conn.their_state is h11.SEND_BODY and self._t.can_write_eof():
            self.lingering = True
            self._t.write_eof()
            self._t.resume_reading()
            self._conn.linger()
            return
        self._t.close()

    def is_closing(self) -> bool:
        return self.lingering or self._t.is_closing()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._t.write(data)

    def abort(self) -> None:
        self._t.abort()

    def pause_reading(self) -> None:
        if not self.lingering:
            self._t.pause_reading()

    def resume_reading(self) -> None:
        self._t.resume_reading()

    def is_reading(self) -> bool:
        return self._t.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._t.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._t.get_write_buffer_size()

    def can_write_eof(self) -> bool:
        return self._t.can_write_eof()

    def write_eof(self) -> None:
        self._t.write_eof()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._t.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._t.get_protocol()


def connection_of(scope: MutableMapping[str, Any]) -> Connection | None:
    conn = scope.get("extensions", {}).get(EXTENSION)
    return conn if isinstance(conn, Connection) else None


class ConnectionTable:
    """Every open connection of one listener, and which of them may be closed to make room.

    Idle connections (waiting for a request head) sit in two insertion-ordered dicts, so
    the oldest is found in O(1): strangers (never authenticated) and known senders
    between requests. A connection being handled is in neither."""

    def __init__(self, name: str, limits: Limits, metrics: Metrics) -> None:
        self.name = name
        self.limits = limits
        self._open: set[Connection] = set()
        self._lingering: dict[Connection, None] = {}
        self._idle_strangers: dict[Connection, None] = {}
        self._idle_known: dict[Connection, None] = {}
        self.strangers = 0
        # max_connections, or less while the process is out of file descriptors (`shrink`)
        self.cap = limits.max_connections
        self._gauge = metrics.http_connections.labels(name)
        self._closed = {r: metrics.http_connections_closed.labels(name, r) for r in CLOSE_REASONS}
        self._gauge.set(0)

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, conn: Connection) -> bool:
        """A new connection; closes others (or this one) to stay within the caps."""
        self._open.add(conn)
        self.strangers += 1
        self._idle_strangers[conn] = None
        if self.strangers > self.limits.max_unauthenticated:
            self._evict(self._lingering) or self._evict(self._idle_strangers)
        if len(self._open) > self.cap and not self.make_room():
            self.close(conn, "refused")
        self._gauge.set(len(self._open))
        return conn in self._open

    def make_room(self) -> bool:
        """Close the connection that matters least: one lingering after its answer, else the
        oldest idle stranger, else the oldest idle keep-alive connection."""
        return (self._evict(self._lingering) or self._evict(self._idle_strangers)
                or self._evict(self._idle_known))

    def shrink(self) -> bool:
        """An accept failed for want of file descriptors: connections must leave some for
        the rest of the process (the store, a sink opening its file). Hold `FD_HEADROOM`
        fewer than are open now, until `restore`. Whether a connection was closed."""
        self.cap = max(min(self.cap, len(self._open) - FD_HEADROOM), MIN_CAP)
        closed = False
        while len(self._open) > self.cap and self.make_room():
            closed = True
        return self.make_room() if not closed else True

    def restore(self) -> None:
        self.cap = self.limits.max_connections

    def closing(self, conn: Connection) -> None:
        if conn in self._open:
            self._idle_strangers.pop(conn, None)
            self._idle_known.pop(conn, None)
            self._lingering[conn] = None

    def cut_lingering(self) -> None:
        """Shutdown: nobody waits for a client to finish sending what we will not read."""
        for conn in list(self._lingering):
            self.close(conn, "drain")

    def _evict(self, idle: dict[Connection, None]) -> bool:
        oldest = next(iter(idle), None)
        if oldest is None:
            return False
        self.close(oldest, "evicted")
        return True

    def busy(self, conn: Connection) -> None:
        self._idle_strangers.pop(conn, None)
        self._idle_known.pop(conn, None)

    def idle(self, conn: Connection) -> None:
        if conn in self._open:
            (self._idle_known if conn.known else self._idle_strangers)[conn] = None

    def authenticated(self, conn: Connection) -> None:
        if conn in self._open:
            self.strangers -= 1

    def close(self, conn: Connection, reason: str) -> None:
        """Close a connection now and forget it at once (its `connection_lost` comes later)."""
        if conn in self._open:
            self._closed[reason].inc()
            self.forget(conn)
        conn.cut()

    def forget(self, conn: Connection) -> None:
        if conn not in self._open:
            return
        self._open.discard(conn)
        self._lingering.pop(conn, None)
        self._idle_strangers.pop(conn, None)
        self._idle_known.pop(conn, None)
        if not conn.known:
            self.strangers -= 1
        self._gauge.set(len(self._open))

    def count(self, reason: str) -> None:
        """A connection the app closed for `reason` (body_timeout, drain)."""
        self._closed[reason].inc()


def _bounded_heads(app: Any) -> Any:
    """h11 bounds a request head only while it is incomplete: one that arrives whole in one
    read (up to 256 KiB) is parsed. This answers those 431, and closes."""

    async def guarded(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            size = len(scope["raw_path"]) + len(scope["query_string"]) + sum(
                len(k) + len(v) + 4 for k, v in scope["headers"])
            if size > HEAD_LIMIT:
                conn = connection_of(scope)
                if conn is not None:
                    conn.table.count("bad_request")
                await send({"type": "http.response.start", "status": 431,
                            "headers": [(b"connection", b"close"), (b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})
                return
        await app(scope, receive, send)

    return guarded


class Listener:
    """One listening socket served by uvicorn with streamd's accept loop and limits."""

    def __init__(self, name: str, app: Any, limits: Limits, metrics: Metrics) -> None:
        self.name = name
        self.app = _bounded_heads(app)
        self.limits = limits
        self.metrics = metrics
        self.table = ConnectionTable(name, limits, metrics)
        self._accept_errors = metrics.http_accept_errors
        for label in _OUT_OF_RESOURCES.values():
            self._accept_errors.labels(name, label)
        self._server: Server | None = None
        self._accepting = anyio.CancelScope()
        self.finished = anyio.Event()

    async def serve(self, sock: socket.socket, *,
                    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        config = uvicorn.Config(
            self.app, http="h11", ws="none", lifespan="off", log_config=None, access_log=False,
            server_header=False, timeout_graceful_shutdown=5,
            # Our own head timer closes idle keep-alive connections; uvicorn's (which any byte
            # resets) must never fire first.
            timeout_keep_alive=int(self.limits.keepalive_timeout) + 5,
            h11_max_incomplete_event_size=HEAD_LIMIT)
        server = Server(config)
        self._server = server
        try:
            async with anyio.create_task_group() as tg:
                # No sockets: uvicorn does not accept, it only runs the connections we hand it.
                tg.start_soon(server.serve, [])
                while not server.started:
                    if server.should_exit:
                        break
                    await anyio.sleep(0.01)
                tg.start_soon(self._accept_loop, sock, server)
                task_status.started()
        finally:
            sock.close()
            self.finished.set()

    def stop(self) -> None:
        """Accept nothing more, then let uvicorn close the connections (gracefully)."""
        self._accepting.cancel()
        self.table.cut_lingering()
        if self._server is not None:
            self._server.should_exit = True

    async def _accept_loop(self, sock: socket.socket, server: Server) -> None:
        loop = asyncio.get_running_loop()

        def connection() -> asyncio.Protocol:
            return Connection(self.table, config=server.config, server_state=server.server_state,
                              app_state=server.lifespan.state, _loop=loop)

        failures = _Failures(self.name)
        wait = ACCEPT_BACKOFF[0]
        sock.setblocking(False)
        with self._accepting:
            try:
                while True:
                    await anyio.wait_readable(sock)
                    for _ in range(ACCEPT_BURST):
                        try:
                            conn, _ = sock.accept()
                        except (BlockingIOError, InterruptedError):
                            break
                        except ConnectionAbortedError:
                            continue
                        except OSError as exc:
                            label = _OUT_OF_RESOURCES.get(exc.errno or 0)
                            if label is None:
                                raise
                            self._accept_errors.labels(self.name, label).inc()
                            failures.failed(label)
                            if self.table.shrink():
                                # A descriptor is freed once the loop has run the close.
                                await anyio.lowlevel.checkpoint()
                            else:
                                await anyio.sleep(wait)
                                wait = min(wait * 2, ACCEPT_BACKOFF[1])
                            break
                        wait = ACCEPT_BACKOFF[0]
                        if failures.recovered():
                            self.table.restore()
                        conn.setblocking(False)
                        try:
                            await loop.connect_accepted_socket(connection, conn)
                        except OSError:
                            conn.close()
            finally:
                sock.close()  # new callers are refused, not queued behind a closed door


class _Failures:
    """Logs a run of failed accepts: once when it starts, then at most once a minute while
    it lasts (with the count), and once when none has failed for a minute. A run is one
    episode even when accepts succeed in between (each failure makes room for one)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.total = 0  # in this episode
        self.unlogged = 0
        self.logged = 0.0
        self.last = 0.0

    def failed(self, label: str) -> None:
        now = time.monotonic()
        self.total += 1
        self.unlogged += 1
        self.last = now
        if self.total == 1:
            log.error("http %s: cannot accept connections: %s (out of file descriptors or "
                      "memory); closing idle connections to make room. Raise LimitNOFILE= or lower "
                      "http.max_connections (counted in streamd_http_accept_errors_total)",
                      self.name, label)
        elif now - self.logged >= LOG_EVERY:
            log.error("http %s: %d more accepts failed (%s) in the last %.0fs", self.name,
                      self.unlogged, label, now - self.logged)
        else:
            return
        self.logged, self.unlogged = now, 0

    def recovered(self) -> bool:
        """Whether an episode just ended (no failure for LOG_EVERY seconds)."""
        if self.total and time.monotonic() - self.last >= LOG_EVERY:
            log.warning("http %s: accepting connections again (%d accepts had failed)",
                        self.name, self.total)
            self.total = self.unlogged = 0
            return True
        return False


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one (as Go's runtime does: the soft
    default of 1024 exists for select(), which nothing here uses); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20
