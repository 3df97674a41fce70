"""streamd's own HTTP/1.1 client: keep-alive connections, one POST at a time on each.

Why not httpx, which the sink used before: one small request cost about 0.7 ms of CPU
in httpx and httpcore here (URL and header objects built and copied per request, a
lock set up per request, every idle connection of the pool checked before each one),
which bounded `format = "single"` at ~1,400 events/s against a receiver that answers at
once (docs/benchmarks.md). The sink needs little of it: POST, a body it already holds,
the status, two headers (`Retry-After`, `Location`) and the start of the answer's body.
So the request is written whole in one send, and the answer is parsed by h11 (the
parser the listener uses), bounded: a head larger than HEAD_LIMIT is an error, and of
the body only the first `keep` bytes are kept. The rest is read and dropped, so the
connection stays usable, up to BODY_LIMIT: an answer whose body goes on beyond it is
taken for its status and head, and its connection closed, rather than read for as long
as the receiver cares to send (a 200 that never ends would otherwise time out, and the
event be sent again and again).

No redirects are followed, no proxy is used, no cookies are kept, a TLS receiver is
always verified (the caller's context). A connection is reused while the receiver keeps
it open; one found closed (readable while idle: an EOF, or bytes nobody asked for) is
dropped before use, and a request on a reused connection that fails before any byte of
an answer came is sent once more on a new one (the receiver closed it meanwhile; the
request carries its idempotency key, so sending it twice is safe).
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import anyio
import anyio.abc
import h11

HEAD_LIMIT = 64 * 1024  # the answer's status line and headers
BODY_LIMIT = 1024 * 1024  # the answer's body read (and dropped) to keep the connection
READ_SIZE = 64 * 1024


class ConnectFailed(OSError):
    """The receiver could not be reached (DNS, refused, TLS)."""


class AnswerError(Exception):
    """The connection broke, or the receiver's answer is not HTTP/1.1."""


@dataclass(frozen=True)
class Target:
    """Where requests go: from the sink's url."""

    host: str
    port: int
    path: bytes  # the request target: path and query
    authority: bytes  # the Host header
    tls: ssl.SSLContext | None

    @classmethod
    def parse(cls, url: str, tls: ssl.SSLContext | None) -> Target:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) url: {u.scheme}://…")
        https = u.scheme == "https"
        port = u.port or (443 if https else 80)
        host = u.hostname
        shown = f"[{host}]" if ":" in host else host
        default = port == (443 if https else 80)
        # What is not ASCII is percent-encoded (as httpx did); what is already stays as is.
        path = quote((u.path or "/") + (f"?{u.query}" if u.query else ""), safe="!#$%&'()*+,/:;=?@[]~")
        authority = shown if default else f"{shown}:{port}"
        return cls(host, port, path.encode("ascii"), authority.encode("idna"), tls if https else None)


@dataclass
class Answer:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    head: bytes = b""  # the start of the body


class Connection:
    """One keep-alive connection to `target`, one request at a time."""

    def __init__(self, target: Target, keep: int = 500) -> None:
        self.target = target
        self.keep = keep
        self._stream: anyio.abc.ByteStream | None = None
        self._sock: socket.socket | None = None
        self._h11: h11.Connection | None = None
        self.requests = 0  # on this connection, for tests

    @property
    def open(self) -> bool:
        return self._stream is not None

    async def request(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST `body` with `headers` (names lower-case; Host and Content-Length are added).
        Raises ConnectFailed, AnswerError, OSError or anyio's stream errors; after any of
        them the connection is closed."""
        reused = self._stream is not None and self._usable()
        if self._stream is not None and not reused:
            await self.aclose()
        if not reused:
            await self._connect()
        try:
            return await self._exchange(body, headers)
        except (AnswerError, OSError, anyio.BrokenResourceError, anyio.EndOfStream,
                anyio.ClosedResourceError) as exc:
            await self.aclose()
            if reused and isinstance(exc, _NothingYet):
                await self._connect()  # closed by the receiver while idle: once more, anew
                try:
                    return await self._exchange(body, headers)
                except BaseException:
                    await self.aclose()
                    raise
            raise
        except BaseException:  # cancelled (a timeout) mid-request: its state is unknown
            await self.aclose()
            raise

    async def aclose(self) -> None:
        stream, self._stream, self._h11, self._sock = self._stream, None, None, None
        if stream is not None:
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(stream)

    # ------------------------------------------------------------ inside

    def _usable(self) -> bool:
        """An idle keep-alive connection with nothing to read: a readable one was closed
        by the receiver (or holds bytes nobody asked for)."""
        sock = self._sock
        if sock is None:
            return True
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    async def _connect(self) -> None:
        t = self.target
        try:
            stream: anyio.abc.ByteStream
            if t.tls is None:
                stream = await anyio.connect_tcp(t.host, t.port)
            else:
                # Not standard-compatible: a receiver that closes without close_notify is
                # an end of stream, not an error (many do, after `Connection: close`).
                stream = await anyio.connect_tcp(t.host, t.port, ssl_context=t.tls,
                                                 tls_standard_compatible=False)
        except ssl.SSLError:
            raise  # its own message says what was wrong (CERTIFICATE_VERIFY_FAILED …)
        except OSError as exc:
            raise ConnectFailed(str(exc) or type(exc).__name__) from None
        self._stream = stream
        self._sock = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEAD_LIMIT)

    async def _exchange(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        stream, conn = self._stream, self._h11
        assert stream is not None and conn is not None
        t = self.target
        head = [(b"host", t.authority), (b"content-length", b"%d" % len(body))]
        head += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        data = conn.send(h11.Request(method=b"POST", target=t.path, headers=head))
        assert data is not None
        # The head and the body in one send: one TLS record, one segment when small.
        try:
            await stream.send(data + body)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise _NothingYet(f"the connection broke while sending: {_what(exc)}") from None
        conn.send_with_data_passthrough(h11.Data(data=body))  # h11's count of it; sent above
        conn.send(h11.EndOfMessage())
        self.requests += 1
        answer: Answer | None = None
        kept = bytearray()
        seen = 0  # bytes of the answer's body
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise AnswerError(f"the receiver's answer is not valid HTTP/1.1: {exc}") from None
            if event is h11.NEED_DATA:
                try:
                    chunk = await stream.receive(READ_SIZE)
                except anyio.EndOfStream:
                    chunk = b""
                except (OSError, anyio.BrokenResourceError) as exc:
                    if answer is None:
                        raise _NothingYet(f"the connection broke: {_what(exc)}") from None
                    raise AnswerError(f"the connection broke mid-answer: {_what(exc)}") from None
                if not chunk and answer is None:
                    raise _NothingYet("the receiver closed the connection without answering")
                conn.receive_data(chunk)
            elif isinstance(event, h11.Response):
                answer = Answer(event.status_code, event.reason.decode("latin-1"),
                                {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers})
            elif isinstance(event, h11.Data):
                if len(kept) < self.keep:
                    kept += event.data[:self.keep - len(kept)]
                seen += len(event.data)
                if seen > BODY_LIMIT and answer is not None:
                    await self.aclose()  # the rest unread: this connection can carry no other
                    answer.head = bytes(kept)
                    return answer
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise AnswerError("the receiver closed the connection mid-answer")
            # h11.InformationalResponse (100 Continue …): skipped
        assert answer is not None
        answer.head = bytes(kept)
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:  # the receiver said `Connection: close` (or HTTP/1.0): not reusable
            await self.aclose()
        return answer


class _NothingYet(AnswerError):
    """Failed before any byte of an answer: on a reused connection, sent once more."""


def _what(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class Pool:
    """Up to `size` connections to one target, each carrying one request at a time."""

    def __init__(self, target: Target, size: int, keep: int = 500) -> None:
        self.target = target
        self.keep = keep
        self._idle: list[Connection] = []
        self._limit = anyio.Semaphore(size)

    async def request(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        async with self._limit:
            conn = self._idle.pop() if self._idle else Connection(self.target, self.keep)
            try:
                return await conn.request(body, headers)
            finally:
                if conn.open:
                    self._idle.append(conn)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()
