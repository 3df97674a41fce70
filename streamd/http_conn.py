"""streamd's own HTTP/1.1 client: keep-alive connections, one request at a time on each.
Used by the http sink (a POST per delivery) and by the pollers (a GET per page or
traffic report, `Client`).

Why not httpx, which the sink used before: one small request cost about 0.7 ms of CPU
in httpx and httpcore here (URL and header objects built and copied per request, a
lock set up per request, every idle connection of the pool checked before each one),
which bounded `format = "single"` at ~1,400 events/s against a receiver that answers at
once, and the HORISEN poll (10,111 GETs a run) to what one core could spend in httpx
(docs/benchmarks.md). Neither needs much of it: a method, a body already held (or none),
the status, a few headers and the answer's body. So the request is written whole in one
send, and the answer is parsed by h11 (the parser the listener uses), bounded: a head
larger than HEAD_LIMIT is an error, and then either

- (the sink, `keep`) of the body only the first `keep` bytes are kept. The rest is read
  and dropped, so the connection stays usable, up to BODY_LIMIT: an answer whose body
  goes on beyond it is taken for its status and head, and its connection closed, rather
  than read for as long as the receiver cares to send (a 200 that never ends would
  otherwise time out, and the event be sent again and again); or
- (the pollers, `limit`) the whole body is the answer, and one longer than `limit`
  (decompressed: a gzip'd answer is inflated, at most to `limit`) is `AnswerTooLarge`,
  refused as soon as its Content-Length or its bytes say so, its connection closed.

No redirects are followed, no proxy is used, no cookies are kept, a TLS receiver is
always verified (the caller's context). A connection is reused while the receiver keeps
it open; one found closed (readable while idle: an EOF, or bytes nobody asked for) is
dropped before use, and a request on a reused connection that fails before any byte of
an answer came is sent once more on a new one (the receiver closed it meanwhile; a POST
carries its idempotency key and a GET changes nothing, so sending it twice is safe).
"""

from __future__ import annotations

import select
import socket
import ssl
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

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


class AnswerTooLarge(AnswerError):
    """An answer's body is longer than the connection's `limit` (the connection is closed)."""


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
        authority = shown if default else f"{shown}:{port}"
        return cls(host, port, request_target(u.path, u.query), authority.encode("idna"),
                   tls if https else None)


def request_target(path: str, query: str) -> bytes:
    """The request line's target: what is not ASCII is percent-encoded (as httpx did);
    what is already stays as is."""
    return quote((path or "/") + (f"?{query}" if query else ""), safe=_SAFE).encode("ascii")


_SAFE = "!#$%&'()*+,/:;=?@[]~"


@dataclass
class Answer:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    head: bytes = b""  # the start of the body (`keep`), or all of it (`limit`)


class Connection:
    """One keep-alive connection to `target`, one request at a time. Of an answer's body
    the first `keep` bytes are kept, or with `limit` all of it, up to `limit`."""

    def __init__(self, target: Target, keep: int = 500, limit: int | None = None) -> None:
        self.target = target
        self.keep = keep
        self.limit = limit
        self._stream: anyio.abc.ByteStream | None = None
        self._sock: socket.socket | None = None
        self._h11: h11.Connection | None = None
        self.requests = 0  # on this connection, for tests

    @property
    def open(self) -> bool:
        return self._stream is not None

    async def request(self, body: bytes, headers: Mapping[str, str], *, method: bytes = b"POST",
                      path: bytes | None = None) -> Answer:
        """`method` (POST: `body` with `headers`, names lower-case; Host and Content-Length
        are added; a GET without a body has no Content-Length) to `path`, else the target's.
        Raises ConnectFailed, AnswerError, OSError or anyio's stream errors; after any of
        them the connection is closed."""
        reused = self._stream is not None and self._usable()
        if self._stream is not None and not reused:
            await self.aclose()
        if not reused:
            await self._connect()
        where = self.target.path if path is None else path
        try:
            return await self._exchange(method, where, body, headers)
        except (AnswerError, OSError, anyio.BrokenResourceError, anyio.EndOfStream,
                anyio.ClosedResourceError) as exc:
            await self.aclose()
            if reused and isinstance(exc, _NothingYet):
                await self._connect()  # closed by the receiver while idle: once more, anew
                try:
                    return await self._exchange(method, where, body, headers)
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

    async def _exchange(self, method: bytes, path: bytes, body: bytes, headers: Mapping[str, str]) -> Answer:
        stream, conn = self._stream, self._h11
        assert stream is not None and conn is not None
        head = [(b"host", self.target.authority)]
        if body or method != b"GET":
            head.append((b"content-length", b"%d" % len(body)))
        head += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        data = conn.send(h11.Request(method=method, target=path, headers=head))
        assert data is not None
        # The head and the body in one send: one TLS record, one segment when small.
        try:
            await stream.send(data + body)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise _NothingYet(f"the connection broke while sending: {_what(exc)}") from None
        conn.send_with_data_passthrough(h11.Data(data=body))  # h11's count of it; sent above
        conn.send(h11.EndOfMessage())
        self.requests += 1
        if self.limit is not None:
            return await self._whole(stream, conn, self.limit)
        answer: Answer | None = None
        kept = bytearray()
        seen = 0  # bytes of the answer's body
        while not isinstance(event := await _next(stream, conn, answer is not None, "receiver"),
                             h11.EndOfMessage):
            if isinstance(event, h11.Response):
                answer = Answer(event.status_code, event.reason.decode("latin-1"),
                                {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers})
            else:
                if len(kept) < self.keep:
                    kept += event.data[:self.keep - len(kept)]
                seen += len(event.data)
                if seen > BODY_LIMIT and answer is not None:
                    await self.aclose()  # the rest unread: this connection can carry no other
                    answer.head = bytes(kept)
                    return answer
        assert answer is not None
        answer.head = bytes(kept)
        await self._next_cycle(conn)
        return answer

    async def _next_cycle(self, conn: h11.Connection) -> None:
        """The connection ready for the next request, or closed when the peer said
        `Connection: close` (or spoke HTTP/1.0): then it is not reusable."""
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            await self.aclose()


    async def _whole(self, stream: anyio.abc.ByteStream, conn: h11.Connection, limit: int) -> Answer:
        """The answer with all of its body (inflated when gzip'd), at most `limit` bytes of it."""
        answer: Answer | None = None
        chunks: list[bytes] = []
        size = 0
        inflate: zlib._Decompress | None = None
        while not isinstance(event := await _next(stream, conn, answer is not None, "server"),
                             h11.EndOfMessage):
            if isinstance(event, h11.Response):
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
                answer = Answer(event.status_code, event.reason.decode("ascii", "ignore"), headers)
                declared = headers.get("content-length", "")
                encoding = headers.get("content-encoding", "").strip().lower()
                if encoding in ("gzip", "x-gzip"):
                    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                elif declared.isdigit() and int(declared) > limit:
                    raise AnswerTooLarge(f"the answer's body is {int(declared):,} bytes "
                                         f"(Content-Length), more than the {limit:,} bytes taken")
            else:
                data = bytes(event.data)
                if inflate is not None:
                    try:
                        # At most one byte beyond the limit: enough to know it is exceeded.
                        data = inflate.decompress(data, limit - size + 1)
                    except zlib.error as exc:
                        raise AnswerError(f"the answer's gzip body is corrupt: {exc}") from None
                    if inflate.unconsumed_tail:
                        size = limit + 1
                size += len(data)
                if size > limit:
                    raise AnswerTooLarge(f"the answer's body is more than the {limit:,} bytes taken"
                                         + (" (inflated)" if inflate is not None else ""))
                chunks.append(data)
        assert answer is not None
        answer.head = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        await self._next_cycle(conn)
        return answer


class _NothingYet(AnswerError):
    """Failed before any byte of an answer: on a reused connection, sent once more."""


async def _next(stream: anyio.abc.ByteStream, conn: h11.Connection, answered: bool,
                peer: str) -> h11.Response | h11.Data | h11.EndOfMessage:
    """The answer's next part: its head, a piece of its body, or its end. Bytes are read
    as h11 needs them (`_more`); an informational answer (100 Continue …) is skipped."""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise AnswerError(f"the {peer}'s answer is not valid HTTP/1.1: {exc}") from None
        if event is h11.NEED_DATA:
            await _more(stream, conn, answered, peer)
        elif isinstance(event, h11.Response | h11.Data | h11.EndOfMessage):
            return event
        elif isinstance(event, h11.ConnectionClosed):
            raise AnswerError(f"the {peer} closed the connection mid-answer")


async def _more(stream: anyio.abc.ByteStream, conn: h11.Connection, answered: bool, peer: str) -> None:
    """Feed h11 the answer's next bytes. A connection that breaks or closes before any
    answer is `_NothingYet` (the request may be sent again once, on a new connection);
    after the answer's head, an AnswerError."""
    try:
        chunk = await stream.receive(READ_SIZE)
    except anyio.EndOfStream:
        chunk = b""
    except (OSError, anyio.BrokenResourceError) as exc:
        if not answered:
            raise _NothingYet(f"the connection broke: {_what(exc)}") from None
        raise AnswerError(f"the connection broke mid-answer: {_what(exc)}") from None
    if not chunk and not answered:
        raise _NothingYet(f"the {peer} closed the connection without answering")
    conn.receive_data(chunk)


def _what(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class Pool:
    """Connections to one target, each carrying one request at a time: at most `size`
    (None: as many as requests in flight, bounded by the caller), of which at most
    `idle` are kept open between requests."""

    def __init__(self, target: Target, size: int | None, keep: int = 500, *,
                 limit: int | None = None, idle: int | None = None) -> None:
        self.target = target
        self.keep = keep
        self.limit = limit
        self._idle: list[Connection] = []
        self._most = idle if idle is not None else size or 32
        self._limit = anyio.Semaphore(size) if size is not None else None

    async def request(self, body: bytes, headers: Mapping[str, str], *, method: bytes = b"POST",
                      path: bytes | None = None) -> Answer:
        if self._limit is None:
            return await self._request(body, headers, method, path)
        async with self._limit:
            return await self._request(body, headers, method, path)

    async def _request(self, body: bytes, headers: Mapping[str, str], method: bytes,
                       path: bytes | None) -> Answer:
        conn = self._idle.pop() if self._idle else Connection(self.target, self.keep, self.limit)
        try:
            return await conn.request(body, headers, method=method, path=path)
        finally:
            if conn.open:
                if len(self._idle) < self._most:
                    self._idle.append(conn)
                else:
                    await conn.aclose()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()


class Client:
    """GETs to any URL (the pollers'): a `Pool` per origin (scheme, host, port), the whole
    answer taken up to `limit` bytes, gzip asked for and inflated. Every origin's `https`
    is verified with `tls`; no redirect is followed (a 3xx is an answer like any other),
    no proxy is used, no cookie kept."""

    def __init__(self, tls: ssl.SSLContext, *, limit: int, idle: int = 32) -> None:
        self.tls = tls
        self.limit = limit
        self.idle = idle
        self._pools: dict[tuple[str, str], Pool] = {}

    def pool(self, url: str) -> Pool:
        """The pool of `url`'s origin (made on first use)."""
        u = urlsplit(url)
        return self._pool(u.scheme, u.netloc, url)

    def _pool(self, scheme: str, netloc: str, url: str) -> Pool:
        pool = self._pools.get((scheme, netloc))
        if pool is None:
            pool = Pool(Target.parse(url, self.tls), None, limit=self.limit, idle=self.idle)
            self._pools[scheme, netloc] = pool
        return pool

    async def get(self, url: str, params: Mapping[str, str] | None, headers: Mapping[str, str]) -> Answer:
        """GET `url`, its query replaced by `params` when there are any (as httpx does).
        Raises as `Connection.request` does, and ValueError for a URL that is not http(s)."""
        u = urlsplit(url)
        query = urlencode(params) if params else u.query
        pool = self._pool(u.scheme, u.netloc, url)
        return await pool.request(b"", {**headers, "accept-encoding": "gzip"}, method=b"GET",
                                  path=request_target(u.path, query))

    async def aclose(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            await pool.aclose()
