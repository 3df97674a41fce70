"""The http sink in the daemon, against a real receiver on loopback (tests/http_receiver.py):
formats and feed order, idempotency keys, batch_linger, retries and Retry-After, refusals
to dead letters, 410, an outage, the same batch after a restart, signatures checked by a
verifier written here from the Standard Webhooks spec, secrets kept out of logs.
The sink on its own, and its config: test_http_sink_alone.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from streamd.config import Config
from streamd.configfile import parse
from streamd.errors import ConfigError
from streamd.health import State
from streamd.providers.synthetic import wire
from streamd.sinks.http import HttpSinkConfig
from streamd.store import FeedEvent, FeedReader

from .conftest import InProcess, until
from .http_receiver import Receiver

pytestmark = pytest.mark.anyio
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
TOKEN = "receiver-token-0123456789"
WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


# ---------------------------------------------------------------- helpers

def toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def sink_toml(url: str, **keys: object) -> str:
    keys.setdefault("backoff", {"min": "10ms", "max": "100ms"})
    return "[sinks.out]\ntype = \"http\"\n" + f"url = {toml(url)}\n" + "".join(
        f"{k} = {toml(v)}\n" for k, v in keys.items() if v is not None)


HOOK_TOKEN = "hook-token-for-the-synthetic-webhook"


def config(tmp_path: Path, url: str, **keys: object) -> Config:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "hook.token").write_text(HOOK_TOKEN)
    return parse(f"""
[store]
path = "feed.db"
commit_linger = "1ms"
[http]
listen = "127.0.0.1:0"
[sources.hook]
provider = "synthetic"
generate = false
webhook = true
token = "file:hook.token"
{sink_toml(url, **keys)}
""", base_dir=tmp_path)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse(text)
    return exc.value.problems


class Running(InProcess):
    async def post(self, *records: bytes | dict[str, Any]) -> None:
        body = b"[" + b",".join(r if isinstance(r, bytes) else json.dumps(r).encode()
                                for r in records) + b"]"
        r = await self.http.post("/webhooks/hook", content=body, headers={
            "content-type": "application/json", "authorization": f"Bearer {HOOK_TOKEN}"})
        assert r.status_code == 200, r.text

    def feed_ids(self) -> list[str]:
        return [bytes(i).hex() for (i,) in self.rows("SELECT id FROM events ORDER BY seq")]

    def offset(self) -> int | None:
        rows = self.rows("SELECT seq FROM sink_offsets WHERE sink = 'out'")
        return rows[0][0] if rows else None


def rec(n: int) -> bytes:
    return wire.record(3, n, ["t"], EPOCH)


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in events]


def key_of(event_ids: list[str]) -> str:
    """The batch key as docs/sinks/http.md defines it, computed here on its own."""
    return hashlib.sha256(",".join(event_ids).encode()).hexdigest()[:32]


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None,
           tolerance: float = 300.0) -> bool:
    """A Standard Webhooks verifier, written from the spec (not from the sink's code):
    HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}", keyed by the base64
    after `whsec_` (or the secret's UTF-8 bytes); the header lists space-separated
    "v1,<base64>" signatures, any of which may match; the timestamp must be recent."""
    try:
        msg_id = headers["webhook-id"]
        stamp = headers["webhook-timestamp"]
        signatures = headers["webhook-signature"]
    except KeyError:
        return False
    if not stamp.isdigit() or abs((time.time() if now is None else now) - int(stamp)) > tolerance:
        return False
    key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body,
                                         hashlib.sha256).digest())
    for sig in signatures.split(" "):
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return True
    return False


def feed_event(seq: int, marker: str = "") -> FeedEvent:
    ident = hashlib.sha256(str(seq).encode()).hexdigest()[:32]
    line = json.dumps({"specversion": "1.0", "id": ident, "seq": seq, "data": {"note": marker}},
                      separators=(",", ":")).encode() + b"\n"
    return FeedEvent(seq, ident, "/synthetic/s", "synthetic", "t", "party", "created", f"k{seq}",
                     "2026-01-01T00:00:00Z", 0, b"{}", line)


def sink_config(url: str, **kw: Any) -> HttpSinkConfig:
    return HttpSinkConfig(type="http", url=url, **kw)


# ---------------------------------------------------------------- formats, order, keys

async def test_batch_format_delivers_every_event_in_feed_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_SINK_TOKEN", TOKEN)
    async with Receiver() as rx:
        cfg = config(tmp_path, f"{rx.url}/hook", batch_max=4,
                     headers={"Authorization": "Bearer env:HTTP_SINK_TOKEN", "X-Tenant": "acme"})
        async with Running(cfg) as d:
            await d.post(rec(0), rec(1), rec(2))
            await d.post(*(rec(i) for i in range(3, 10)))
            await until(lambda: len(rx.events()) == 10, 10, "ten events")
            await until(lambda: d.offset() == 10, 5, "the offset")
            assert ids(rx.events()) == d.feed_ids()
            for r in rx.requests:
                assert r.status == 200 and r.method == "POST" and r.path == "/hook"
                assert r.headers["content-type"] == "application/cloudevents-batch+json"
                assert r.headers["authorization"] == f"Bearer {TOKEN}"
                assert r.headers["x-tenant"] == "acme"
                assert r.headers["user-agent"].startswith("streamd/")
                assert r.headers["idempotency-key"] == key_of(ids(r.cloudevents()))
                assert 1 <= len(r.cloudevents()) <= 4
                assert "webhook-signature" not in r.headers
            # The bodies are the feed's own lines (what `streamd tail` prints), in JSON arrays.
            reader = await FeedReader.open(cfg.store)
            try:
                lines = [e.line.rstrip(b"\n") for e in await reader.read(0, 10, 100)]
            finally:
                await reader.close()
            at = 0
            for r in rx.requests:
                n = len(r.cloudevents())
                assert r.body == b"[" + b",".join(lines[at:at + n]) + b"]"
                at += n
            n = await d.metric('streamd_sink_http_requests_total{code="200",sink="out"}')
            assert n == len(rx.requests)


async def test_single_format_posts_each_event_with_its_id_as_the_key(tmp_path: Path) -> None:
    async with Receiver() as rx:
        async with Running(config(tmp_path, f"{rx.url}/hook", format="single")) as d:
            await d.post(*(rec(i) for i in range(6)))
            await until(lambda: len(rx.events()) == 6, 10, "six events")
            assert ids(rx.events()) == d.feed_ids()
            for r in rx.requests:
                assert r.headers["content-type"] == "application/cloudevents+json"
                (ce,) = r.cloudevents()
                assert r.headers["idempotency-key"] == ce["id"]
            assert rx.peak_in_flight == 1


async def test_single_format_with_max_in_flight_sends_a_batch_concurrently(tmp_path: Path) -> None:
    async with Receiver() as rx:
        rx.knobs.latency = 0.2
        cfg = config(tmp_path, f"{rx.url}/hook", format="single", max_in_flight=4, batch_max=8)
        async with Running(cfg) as d:
            await d.post(*(rec(i) for i in range(8)))
            await until(lambda: len(rx.events()) == 8, 10, "eight events")
            assert sorted(ids(rx.events())) == sorted(d.feed_ids())
            assert rx.peak_in_flight == 4


async def test_batch_linger_waits_for_a_batch_to_fill(tmp_path: Path) -> None:
    async with Receiver() as rx:
        cfg = config(tmp_path, f"{rx.url}/hook", batch_linger="500ms", batch_max=10)
        async with Running(cfg) as d:
            for i in range(3):
                await d.post(rec(i))
            await until(lambda: len(rx.events()) == 3, 10, "three events")
            assert [len(r.cloudevents()) for r in rx.requests] == [3]


# ---------------------------------------------------------------- failures

async def test_a_failed_batch_is_retried_with_the_same_key_and_body(tmp_path: Path) -> None:
    async with Receiver() as rx:
        rx.knobs.fail_next = 2
        async with Running(config(tmp_path, f"{rx.url}/hook")) as d:
            await d.post(rec(0), rec(1), rec(2))
            await until(lambda: len(rx.events()) == 3, 10, "three events")
            assert [r.status for r in rx.requests] == [500, 500, 200]
            assert len({r.headers["idempotency-key"] for r in rx.requests}) == 1
            assert len({r.body for r in rx.requests}) == 1
            assert await d.metric('streamd_sink_http_requests_total{code="500",sink="out"}') == 2
            assert await d.metric('streamd_sink_failures_total{kind="retryable",sink="out"}') == 2


@pytest.mark.parametrize("status, retry_after", [(429, "1"), (503, "date")])
async def test_retry_after_is_honoured(tmp_path: Path, status: int, retry_after: str) -> None:
    async with Receiver() as rx:
        rx.knobs.fail_next, rx.knobs.fail_status = 1, status
        # An HTTP date has whole seconds, so 2.5 s ahead of the answer, truncated, is at least
        # 1.5 s. It is made when the 503 is answered, not when the test starts the daemon.
        rx.knobs.retry_after = (lambda: formatdate(time.time() + 2.5, usegmt=True)) \
            if retry_after == "date" else "1"
        async with Running(config(tmp_path, f"{rx.url}/hook")) as d:
            await d.post(rec(0))
            await until(lambda: len(rx.events()) == 1, 10, "the event")
            first, second = rx.requests
            assert first.status == status and second.status == 200
            waited = 1.4 if retry_after == "date" else 0.99
            assert second.at - first.answered >= waited, "no request before Retry-After"


async def test_a_refused_event_is_dead_lettered_with_the_status_and_body(tmp_path: Path) -> None:
    async with Receiver() as rx:
        rx.knobs.refuse = b"REFUSE-ME"
        rx.knobs.refuse_body = b'{"error": "party name not allowed", "code": "E42"}'
        bad = {"tenant": "t", "entity": "party", "op": "created", "key": "p-bad",
               "data": {"name": "REFUSE-ME"}}
        async with Running(config(tmp_path, f"{rx.url}/hook", batch_max=10, max_tries=2)) as d:
            await d.post(rec(0), rec(1), rec(2), bad, rec(4), rec(5), rec(6))
            await until(lambda: d.rows("SELECT count(*) FROM dead_letters") == [(1,)], 10, "a dead letter")
            await until(lambda: d.offset() == 7, 5, "the offset past it")
            feed = d.feed_ids()
            assert ids(rx.events()) == feed[:3] + feed[4:]
            ((reason, raw, seq, attempts),) = d.rows(
                "SELECT reason, raw, event_seq, attempts FROM dead_letters")
            assert seq == 4 and attempts == 2
            assert "400" in reason and "party name not allowed" in reason and "E42" in reason
            assert json.loads(raw)["id"] == feed[3]
            assert not any(b"REFUSE-ME" in r.body for r in rx.accepted())


async def test_410_pauses_the_sink_readyz_names_it_and_it_resumes(tmp_path: Path) -> None:
    async with Receiver() as rx:
        rx.knobs.gone = True
        cfg = config(tmp_path, f"{rx.url}/hook", backoff={"min": "10ms", "max": "300ms"})
        async with Running(cfg) as d:
            await d.post(rec(0), rec(1))
            comp = d.daemon.health.get("sink", "out")
            await until(lambda: "410 Gone: paused until" in comp.reason, 10, "the pause")

            async def not_ready() -> bool:
                return bool((await d.http.get("/readyz")).status_code == 503)

            await until(not_ready, 5, "/readyz to fail after backoff.max")
            text = (await d.http.get("/readyz")).text
            assert "sink out: retrying" in text and "410 Gone: paused until" in text
            # It keeps asking, but never sooner than backoff.max after the last answer.
            tries = [r.at for r in rx.requests]
            assert all(b - a >= 0.29 for a, b in zip(tries, tries[1:], strict=False))
            assert d.offset() in (None, 0)
            rx.knobs.gone = False
            await until(lambda: len(rx.events()) == 2, 10, "delivery after the pause")
            await until(lambda: comp.state is State.OK, 5)
            assert (await d.http.get("/readyz")).status_code == 200


async def test_an_outage_holds_the_offset_and_delivers_once_the_receiver_is_back(tmp_path: Path) -> None:
    rx = Receiver()
    async with rx:
        url = rx.url
    async with Running(config(tmp_path, f"{url}/hook", batch_max=3)) as d:
        await d.post(*(rec(i) for i in range(7)))
        comp = d.daemon.health.get("sink", "out")
        await until(lambda: "cannot connect" in comp.reason, 10, "the sink to be retrying")
        assert d.offset() in (None, 0)
        async with rx:  # back, on the same port
            await until(lambda: len(rx.events()) == 7, 10, "every event")
            assert ids(rx.events()) == d.feed_ids(), "each event once, in order"
            await until(lambda: comp.state is State.OK, 5)


async def test_a_batch_redelivered_after_a_restart_is_the_same_batch(tmp_path: Path) -> None:
    async with Receiver() as rx:
        rx.knobs.fail_next = 10_000
        cfg = config(tmp_path, f"{rx.url}/hook", batch_max=10)
        async with Running(cfg) as d:
            await d.post(rec(0), rec(1), rec(2))
            await until(lambda: len(rx.requests) >= 2, 10, "retries of the first batch")
            await d.post(*(rec(i) for i in range(3, 7)))  # the head moves while it fails
            refused = rx.requests[0]
        assert d.offset() in (None, 0)
        rx.knobs.fail_next = 0
        async with Running(cfg) as d:
            await until(lambda: len(rx.events()) == 7, 10, "every event")
            first, second = rx.accepted()
            assert first.body == refused.body
            assert first.headers["idempotency-key"] == refused.headers["idempotency-key"]
            assert ids(first.cloudevents()) == d.feed_ids()[:3]
            assert ids(second.cloudevents()) == d.feed_ids()[3:]


# ---------------------------------------------------------------- signatures

@pytest.mark.parametrize("secret", [WHSEC, "a-plain-shared-secret-of-some-length"])
async def test_signatures_verify_with_an_independent_verifier(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    monkeypatch.setenv("HTTP_SINK_SIGNING", secret)
    async with Receiver() as rx:
        rx.knobs.fail_next = 1  # the retry is signed anew, with the same webhook-id
        for fmt in ("batch", "single"):
            cfg = config(tmp_path / fmt, f"{rx.url}/{fmt}", format=fmt,
                         signing_secret="env:HTTP_SINK_SIGNING")
            async with Running(cfg) as d:
                await d.post(rec(0), rec(1), rec(2))
                await until(lambda fmt=fmt: len(rx.events(f"/{fmt}")) == 3, 10, "three events")  # type: ignore[misc]
    assert len(rx.requests) == 1 + 1 + 3
    for r in rx.requests:
        assert verify(secret, r.headers, r.body), r.headers
        assert r.headers["webhook-id"] == r.headers["idempotency-key"]
        assert abs(int(r.headers["webhook-timestamp"]) - time.time()) < 60
        # what the verifier must refuse: a changed body, another secret, an old timestamp
        assert not verify(secret, r.headers, r.body + b" ")
        assert not verify(secret + "x" if not secret.startswith("whsec_") else
                          "whsec_" + base64.b64encode(b"another-key-of-32-bytes-........").decode(),
                          r.headers, r.body)
        assert not verify(secret, r.headers, r.body, now=time.time() + 600)
        rotated = {**r.headers, "webhook-signature": "v1,bm90IGl0 v1a,c29tZXRoaW5n "
                   + r.headers["webhook-signature"]}
        assert verify(secret, rotated, r.body), "any one of several signatures may match"
        assert not verify(secret, {**r.headers, "webhook-signature": "v1,bm90IGl0"}, r.body)


async def test_secrets_stay_out_of_logs_readyz_and_metrics(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("HTTP_SINK_TOKEN", TOKEN)
    monkeypatch.setenv("HTTP_SINK_SIGNING", WHSEC)
    caplog.set_level(logging.DEBUG)
    async with Receiver() as rx:
        rx.knobs.fail_status, rx.knobs.fail_next = 401, 3
        cfg = config(tmp_path, f"{rx.url}/hook", headers={"Authorization": "Bearer env:HTTP_SINK_TOKEN"},
                     signing_secret="env:HTTP_SINK_SIGNING")
        async with Running(cfg) as d:
            await d.post(rec(0))
            await until(lambda: len(rx.events()) == 1, 10, "the event")
            seen = [(await d.http.get(p)).text for p in ("/readyz", "/metrics")]
    seen.append(caplog.text)
    assert "401" in caplog.text
    for s in seen:
        assert TOKEN not in s and WHSEC not in s
