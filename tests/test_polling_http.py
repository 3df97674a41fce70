"""The pollers' HTTP clients on a real loopback socket: httpx for their token requests
(sources/polling.py: http_client), streamd's own for their GETs (`ApiClient`)."""

from __future__ import annotations

import contextlib
import gzip
import importlib.abc
import importlib.machinery
import ssl
import sys
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any, cast

import anyio
import anyio.abc
import pytest

from streamd.config import BackoffPolicy
from streamd.errors import PollFailed
from streamd.health import Health
from streamd.metrics import Metrics
from streamd.sources import SourceContext, polling
from streamd.sources.polling import ApiClient, Gate, fan_out, http_client
from streamd.units import Duration

from .test_http_conn import OK, Scripted, scripted

pytestmark = pytest.mark.anyio


class Lookups(importlib.abc.MetaPathFinder):
    """Counts the searches for a module that the import system makes (a module already
    imported is found in sys.modules, and no search is made)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname == self.name:
            self.count += 1
        return None


async def test_requests_do_not_search_for_sniffio_each_time() -> None:
    """httpcore imports sniffio on every lock it sets up; when it is not installed the
    failed import is not remembered, and each request searched sys.path for it again
    (84 searches in these 20 requests). streamd depends on it, so it is found once."""
    lookups = Lookups("sniffio")
    sys.meta_path.insert(0, lookups)
    try:
        async with scripted(Scripted()) as srv:
            async with http_client(ssl.create_default_context(), 10) as http:
                for _ in range(20):
                    r = await http.get(f"http://127.0.0.1:{srv.port}/page", params={"page": "1"})
                    assert r.status_code == 200
    finally:
        sys.meta_path.remove(lookups)
    assert len(srv.requests) == 20
    assert lookups.count <= 1, f"sniffio searched for {lookups.count} times in 20 requests"


# ---------------------------------------------------------------- ApiClient on streamd's client

class Token:
    scheme = "Bearer"

    async def access_token(self) -> str:
        return "t0k3n"

    async def refresh(self, failed: str | None = None) -> str:
        return "t0k3n"


def api(timeout: float = 10.0, tries: int = 3) -> tuple[ApiClient, Metrics]:
    metrics = Metrics()
    # The store is not what these requests touch: no writer or reader is needed.
    ctx = SourceContext(name="p", provider="horisen", writer=cast(Any, None), reader=cast(Any, None),
                        metrics=metrics, component=Health().add("source", "p"), routes=cast(Any, None))
    metrics.init_poller("p")
    client = ApiClient(ctx, ssl.create_default_context(), Token(), timeout=timeout,
                       policy=BackoffPolicy(min=Duration(0.01), max=Duration(0.05)), max_tries=tries,
                       describe=lambda r: r.text)
    return client, metrics


def count(metrics: Metrics, metric: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(metric, labels) or 0.0


async def test_pages_go_on_keep_alive_connections_no_more_than_the_gate_lets_through() -> None:
    """40 GETs, 4 in flight: 4 connections carry them all, each a GET with the credentials,
    no body, and `params` for the URL's query (as httpx did: replaced, not merged)."""
    async with scripted(Scripted()) as srv:
        client, metrics = api()
        async with client:
            gate = Gate(4)
            url = f"http://127.0.0.1:{srv.port}/v1/debtors?pageSize=100&page=1"

            async def one(n: int) -> None:
                r = await client.get(url, {"page": str(n), "between(date)": "a,b"}, gate=gate)
                assert r.status_code == 200 and r.content == b"{}"

            await fan_out(range(40), 8, one)
    assert len(srv.requests) == 40 and srv.connections <= 4
    first = srv.requests[0].split(b"\r\n")
    assert first[0] == b"GET /v1/debtors?page=0&between%28date%29=a%2Cb HTTP/1.1"
    head = {line.partition(b":")[0].lower(): line.partition(b":")[2].strip() for line in first[1:] if line}
    assert head[b"authorization"] == b"Bearer t0k3n" and head[b"host"] == f"127.0.0.1:{srv.port}".encode()
    assert b"content-length" not in head and b"transfer-encoding" not in head
    assert count(metrics, "streamd_source_requests_total", source="p", code="200") == 40


async def test_a_keep_alive_connection_the_api_closed_meanwhile_is_sent_again_once_unseen() -> None:
    """The API takes the second request and closes the connection without a word (its
    keep-alive timer ran out as the request came): the GET goes again on a new connection
    at once, no retry, no error counted. httpx counted an error and waited a backoff."""
    dropped = Scripted(answer=lambda n: b"" if n == 1 else OK, close_after=lambda n: n == 1)
    async with scripted(dropped) as srv:
        client, metrics = api()
        async with client:
            gate = Gate(1)
            for _ in range(3):
                assert (await client.get(f"http://127.0.0.1:{srv.port}/page", gate=gate)).status_code == 200
    assert len(srv.requests) == 4 and srv.connections == 2
    assert count(metrics, "streamd_source_requests_total", source="p", code="200") == 3
    assert count(metrics, "streamd_source_requests_total", source="p", code="error") == 0
    assert count(metrics, "streamd_retries_total", component="source", name="p") == 0


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


@pytest.mark.parametrize(("answer", "why"), [
    (b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n" + b" " * 5000,
     r"is 5,000 bytes \(Content-Length\), more than the 1,000 bytes taken"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"3e8\r\n" + b" " * 1000 + b"\r\n"
     + b"1\r\n \r\n0\r\n\r\n", "is more than the 1,000 bytes taken"),
    (b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s"
     % (len(_gzip(b" " * 10**6)), _gzip(b" " * 10**6)), r"is more than the 1,000 bytes taken \(inflated\)"),
])
async def test_an_answer_larger_than_the_limit_is_refused_with_its_reason(
        monkeypatch: pytest.MonkeyPatch, answer: bytes, why: str) -> None:
    """Declared too long, chunked on past the limit, or a small gzip that inflates to a MB:
    refused (not retried: it would be as large again), the connection closed."""
    monkeypatch.setattr(polling, "ANSWER_LIMIT", 1000)
    async with scripted(Scripted(answer=lambda n: answer)) as srv:
        client, metrics = api()
        async with client:
            with pytest.raises(PollFailed, match=f"^/page: the answer's body {why}; refused$"):
                await client.get(f"http://127.0.0.1:{srv.port}/page", gate=Gate(1))
    assert len(srv.requests) == 1
    assert count(metrics, "streamd_source_requests_total", source="p", code="error") == 1


async def test_a_gzip_answer_is_inflated_and_one_at_the_limit_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(polling, "ANSWER_LIMIT", 1000)
    body = b'{"data": [%s]}' % b",".join(b"%d" % i for i in range(300))[:988]
    assert len(body) == 1000
    packed = _gzip(body)
    answer = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s" % (
        len(packed), packed)
    async with scripted(Scripted(answer=lambda n: answer)) as srv:
        client, _ = api()
        async with client:
            for _ in range(2):  # the connection kept
                r = await client.get(f"http://127.0.0.1:{srv.port}/page", gate=Gate(1))
                assert r.content == body
    assert b"accept-encoding: gzip" in srv.requests[0].lower() and srv.connections == 1


async def test_a_request_is_bounded_from_connect_to_last_byte() -> None:
    """An API that answers a byte every 50 ms keeps each read within `timeout`, but not
    the request: it times out after `timeout` (httpx, timing each read, waited 10 s)."""
    async def trickle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                await stream.receive()
                await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 200\r\n\r\n")
                for _ in range(200):
                    await anyio.sleep(0.05)
                    await stream.send(b" ")

    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = tcp.extra(anyio.abc.SocketAttribute.local_port)
    async with tcp, anyio.create_task_group() as tg:
        tg.start_soon(tcp.serve, trickle)
        client, metrics = api(timeout=0.5, tries=2)
        t0 = time.monotonic()
        async with client:
            with pytest.raises(PollFailed, match=r"^gave up after 2 tries: /page: timed out$"):
                await client.get(f"http://127.0.0.1:{port}/page", gate=Gate(1))
        assert time.monotonic() - t0 < 5
        tg.cancel_scope.cancel()
    assert count(metrics, "streamd_source_requests_total", source="p", code="error") == 2


async def test_an_answer_s_text_is_decoded_as_httpx_did() -> None:
    """The providers' error descriptions read `text` and `reason_phrase`: the charset of
    the Content-Type, else UTF-8, what does not decode replaced; the server's reason."""
    answers = [b"HTTP/1.1 400 Nope\r\ncontent-type: text/plain; charset=latin-1\r\n"
               b"content-length: 4\r\n\r\n\xe9t\xe9!",
               b"HTTP/1.1 400 \r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\n\xff\xc3\xa9"]
    async with scripted(Scripted(answer=lambda n: answers[n])) as srv:
        client, _ = api()
        async with client:
            for want, reason in (("été!", "Nope"), ("\ufffdé", "")):
                r = await client.get(f"http://127.0.0.1:{srv.port}/page", gate=Gate(1), passthrough=(400,))
                assert (r.text, r.reason_phrase) == (want, reason)
