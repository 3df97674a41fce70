"""The http sink's own HTTP/1.1 client (streamd/http_conn.py) against a scripted
server on a real loopback socket: keep-alive, a receiver that closes, answers framed
every legal way, and answers that must be refused."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.abc
import pytest
import trustme
from anyio.streams.tls import TLSListener

from streamd.errors import Retryable
from streamd.http_conn import BODY_LIMIT, HEAD_LIMIT, AnswerError, Connection, Pool, Target
from streamd.sinks.http import HttpSink

from .test_http_sink import feed_event, sink_config

pytestmark = pytest.mark.anyio

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"


@dataclass
class Scripted:
    """Reads each request whole; answers with `answer(n)` (n: the request's number, from
    0), then closes the connection if `close_after(n)`."""

    answer: Callable[[int], bytes] = lambda n: OK
    close_after: Callable[[int], bool] = lambda n: False
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    port: int = 0

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        async with stream:
            try:
                await self._serve(stream)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                pass  # the client went away (or dropped a connection it found unusable)

    async def _serve(self, stream: anyio.abc.SocketStream) -> None:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                buf += await stream.receive()
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(buf) < length:
                buf += await stream.receive()
            body, buf = buf[:length], buf[length:]
            n = len(self.requests)
            self.requests.append(head + b"\r\n\r\n" + body)
            await stream.send(self.answer(n))
            if self.close_after(n):
                return


@asynccontextmanager
async def scripted(server: Scripted, tls: ssl.SSLContext | None = None) -> AsyncIterator[Scripted]:
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
    server.port = tcp.extra(anyio.abc.SocketAttribute.local_port)
    listener: anyio.abc.Listener[anyio.abc.ByteStream] = tcp if tls is None else TLSListener(tcp, tls)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()


def target(server: Scripted, path: str = "/hook") -> Target:
    return Target.parse(f"http://127.0.0.1:{server.port}{path}", None)


async def test_requests_share_one_keep_alive_connection_and_say_what_they_are() -> None:
    async with scripted(Scripted()) as srv:
        conn = Connection(target(srv, "/hook?token=x%20y&a=ü"))
        try:
            for i in range(5):
                answer = await conn.request(b'{"n": %d}' % i, {"idempotency-key": f"k{i}"})
                assert (answer.status, answer.reason, answer.head) == (200, "OK", b"{}")
        finally:
            await conn.aclose()
    assert srv.connections == 1
    first = srv.requests[0]
    assert first.startswith(b"POST /hook?token=x%20y&a=%C3%BC HTTP/1.1\r\n")
    assert b"\r\nhost: 127.0.0.1:%d\r\n" % srv.port in first
    assert b"\r\ncontent-length: 8\r\n" in first and b"\r\nidempotency-key: k0\r\n" in first
    assert first.endswith(b'\r\n\r\n{"n": 0}')


async def test_a_connection_the_receiver_closed_while_idle_is_replaced_without_an_error() -> None:
    """Keep-alive servers close idle connections: the next request must not fail for it
    (which would cost the sink a retry after its backoff)."""
    async with scripted(Scripted(close_after=lambda n: True)) as srv:  # closes after every answer
        conn = Connection(target(srv))
        try:
            for _ in range(3):
                await conn.request(b"{}", {})
                # Wait until the close has reached this end: the next request finds it closed.
                await anyio.wait_all_tasks_blocked()
        finally:
            await conn.aclose()
    assert len(srv.requests) == 3 and srv.connections == 3
    assert conn.requests == 3, "nothing was sent on a connection already closed"


async def test_a_reused_connection_that_breaks_before_an_answer_is_tried_once_more_anew() -> None:
    """The receiver takes the request and drops the connection without a word, once: the
    request goes again on a new connection (safe: it carries its idempotency key). A new
    connection that does the same is an error, not a loop."""
    drops = {1}
    async with scripted(Scripted(answer=lambda n: b"" if n in drops else OK,
                                 close_after=lambda n: n in drops)) as srv:
        conn = Connection(target(srv))
        conn._usable = lambda: True  # type: ignore[method-assign] # the close not seen before sending
        try:
            await conn.request(b"{}", {})
            answer = await conn.request(b"{}", {})  # dropped once, then sent again
            assert answer.status == 200
            assert len(srv.requests) == 3 and srv.connections == 2
            drops.update({4, 5})
            await conn.request(b"{}", {})
            with pytest.raises(AnswerError, match="closed the connection without answering"):
                await conn.request(b"{}", {})  # the 4th is dropped, and its resend (5th) too
        finally:
            await conn.aclose()


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
    b"HTTP/1.1 204 No Content\r\n\r\n",
])
async def test_answers_framed_every_legal_way_keep_the_connection(answer: bytes) -> None:
    async with scripted(Scripted(answer=lambda n: answer)) as srv:
        conn = Connection(target(srv))
        try:
            for _ in range(3):
                got = await conn.request(b"{}", {})
                assert got.status in (200, 204) and got.head in (b"{}", b"")
        finally:
            await conn.aclose()
    assert srv.connections == 1


async def test_connection_close_and_an_answer_ending_at_the_close_are_honoured() -> None:
    srv = Scripted(answer=lambda n: b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nbody until the close",
                   close_after=lambda n: True)
    async with scripted(srv):
        conn = Connection(target(srv))
        try:
            got = await conn.request(b"{}", {})
            assert got.head == b"body until the close" and not conn.open
            await conn.request(b"{}", {})
        finally:
            await conn.aclose()
    assert srv.connections == 2


async def test_a_head_beyond_its_limit_or_not_http_is_an_error_and_the_connection_is_dropped() -> None:
    huge = b"HTTP/1.1 200 OK\r\nx-junk: " + b"a" * 4 * HEAD_LIMIT + b"\r\ncontent-length: 0\r\n\r\n"
    answers = [huge, b"SSH-2.0-OpenSSH_9.2\r\n\r\n", OK]
    async with scripted(Scripted(answer=lambda n: answers[n])) as srv:
        sink = HttpSink("out", sink_config(f"http://127.0.0.1:{srv.port}/hook"))
        try:
            with pytest.raises(Retryable, match="not valid HTTP/1.1"):
                await sink.deliver([feed_event(1)])
            with pytest.raises(Retryable, match="not valid HTTP/1.1"):
                await sink.deliver([feed_event(1)])
            await sink.deliver([feed_event(1)])
        finally:
            await sink.aclose()
    assert srv.connections == 3


async def test_an_answer_whose_body_never_ends_is_taken_for_its_status_without_reading_on() -> None:
    """A receiver that says 200 and then sends body for ever: the status is the answer (the
    event went through), the connection is dropped, and no timeout makes it be sent again."""
    sent = 0

    async def endless(stream: anyio.abc.SocketStream) -> None:
        nonlocal sent
        async with stream:
            await stream.receive()
            await stream.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
            try:
                while True:  # until the client hangs up
                    await stream.send(chunk)
                    sent += 64 * 1024
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass

    srv = Scripted()
    srv.handle = endless  # type: ignore[method-assign]
    async with scripted(srv):
        conn = Connection(target(srv), keep=10)
        try:
            with anyio.fail_after(10):
                answer = await conn.request(b"{}", {})
            assert answer.status == 200 and answer.head == b"x" * 10
            assert not conn.open, "the rest of that answer was not read: its connection is gone"
        finally:
            await conn.aclose()
    assert sent >= BODY_LIMIT


async def test_a_tls_receiver_is_verified_by_its_ca_and_by_its_name() -> None:
    """The sink's own client checks what httpx checked: a certificate from a CA it trusts,
    issued for the host in the url. One for another name, from that same CA, is refused."""
    ca = trustme.CA()
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    for names, refused in ((["127.0.0.1"], False), (["other.example"], True)):
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(server_tls)
        async with scripted(Scripted(), server_tls) as srv:
            conn = Connection(Target.parse(f"https://127.0.0.1:{srv.port}/hook", trusting))
            try:
                if refused:
                    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
                        await conn.request(b"{}", {})
                    assert srv.requests == []
                else:
                    assert (await conn.request(b"{}", {})).status == 200
                    assert len(srv.requests) == 1
            finally:
                await conn.aclose()


async def test_a_pool_holds_at_most_its_size_of_connections() -> None:
    gate = anyio.Event()
    inside = 0
    most = 0

    srv = Scripted()
    original = srv.handle

    async def slow(stream: anyio.abc.SocketStream) -> None:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        try:
            await gate.wait()
            await original(stream)
        finally:
            inside -= 1

    srv.handle = slow  # type: ignore[method-assign]
    async with scripted(srv):
        pool = Pool(target(srv), 3)
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(pool.request, b"{}", {})
                await anyio.wait_all_tasks_blocked()
                assert inside == 3  # three connections accepted, seven requests waiting for one
                gate.set()
        finally:
            await pool.aclose()
    assert len(srv.requests) == 10 and srv.connections == 3 and most == 3
