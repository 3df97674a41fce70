"""The http sink on its own against the real receiver (tests/http_receiver.py): what
each answer means, timeouts, connection failures, concurrency within a batch, TLS; and
its config checks, with secrets kept out of `streamd check` and reprs."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from streamd import certs as certs_mod
from streamd.configfile import parse
from streamd.configfile import render as render_config
from streamd.errors import Permanent, Retryable
from streamd.sinks.http import HttpSink, HttpSinkConfig
from streamd.units import Duration

from .conftest import streamd_cli
from .http_receiver import Receiver
from .test_http_sink import TOKEN, WHSEC, feed_event, ids, problems, sink_config, sink_toml

pytestmark = pytest.mark.anyio

# ---------------------------------------------------------------- answers, one by one

@pytest.mark.parametrize("status, kind, says", [
    (408, Retryable, "408"), (429, Retryable, "429"), (500, Retryable, "500"),
    (502, Retryable, "502"), (503, Retryable, "503"),
    (410, Retryable, "410 Gone: paused until it takes deliveries again"),
    (401, Retryable, "refused, not the events"), (403, Retryable, "refused, not the events"),
    (404, Retryable, "refused, not the events"), (301, Retryable, "redirects are not followed"),
    (400, Permanent, "400 Bad Request: "), (409, Permanent, "409"), (413, Permanent, "413"),
    (422, Permanent, "422 Unprocessable"),
])
async def test_what_each_answer_means(status: int, kind: type[Exception], says: str) -> None:
    async with Receiver() as rx:
        rx.knobs.fail_next, rx.knobs.fail_status = 1, status
        rx.knobs.retry_after = "7" if status in (429, 503) else None
        sink = HttpSink("out", sink_config(f"{rx.url}/hook"))
        try:
            with pytest.raises(kind) as exc:
                await sink.deliver([feed_event(1)])
            assert says in str(exc.value)
            if status in (429, 503):
                assert isinstance(exc.value, Retryable) and exc.value.retry_after == 7.0
            if kind is Permanent:
                assert "test receiver: fail" in str(exc.value)  # the answer's body
            await sink.deliver([feed_event(1)])  # the next answer is 200
        finally:
            await sink.aclose()
        assert [r.status for r in rx.requests] == [status, 200]


async def test_a_refusal_keeps_only_the_start_of_a_long_body() -> None:
    async with Receiver() as rx:
        rx.knobs.refuse, rx.knobs.refuse_body = b"BAD", b"x" * 100_000
        sink = HttpSink("out", sink_config(f"{rx.url}/hook"))
        try:
            with pytest.raises(Permanent) as exc:
                await sink.deliver([feed_event(1, "BAD")])
        finally:
            await sink.aclose()
        assert 500 <= len(str(exc.value)) < 600


async def test_no_answer_within_the_timeout_is_retryable() -> None:
    async with Receiver() as rx:
        rx.knobs.hang_next, rx.knobs.hang = 1, 60.0
        sink = HttpSink("out", sink_config(f"{rx.url}/hook", timeout=Duration(0.3)))
        try:
            started = time.monotonic()
            with pytest.raises(Retryable, match="no answer from .* within 300ms"):
                await sink.deliver([feed_event(1)])
            assert time.monotonic() - started < 30  # its timeout, not the receiver's 60 s hang
            await sink.deliver([feed_event(1)])
        finally:
            await sink.aclose()


async def test_single_events_that_went_through_are_not_sent_again_on_retry() -> None:
    async with Receiver() as rx:
        rx.knobs.refuse, rx.knobs.refuse_status = b"FLAKY", 503
        sink = HttpSink("out", sink_config(f"{rx.url}/hook", format="single"))
        batch = [feed_event(1), feed_event(2), feed_event(3, "FLAKY"), feed_event(4)]
        try:
            with pytest.raises(Retryable):
                await sink.deliver(batch)
            rx.knobs.refuse = None
            await sink.deliver(batch)
        finally:
            await sink.aclose()
        assert [r.status for r in rx.requests] == [200, 200, 503, 200, 200]
        assert ids(rx.events()) == [e.id for e in batch]


async def test_concurrent_single_requests_combine_their_failures() -> None:
    async with Receiver() as rx:
        rx.knobs.refuse = b"BAD"
        sink = HttpSink("out", sink_config(f"{rx.url}/hook", format="single", max_in_flight=4))
        batch = [feed_event(i, "BAD" if i == 2 else "") for i in range(1, 5)]
        try:
            with pytest.raises(Permanent, match="400"):
                await sink.deliver(batch)
            # what went through is not sent again; the refused event alone goes through now
            rx.knobs.refuse = None
            await sink.deliver(batch)
        finally:
            await sink.aclose()
        assert sorted(ids(rx.events())) == sorted(e.id for e in batch)


async def test_connection_refused_is_retryable() -> None:
    rx = Receiver()
    async with rx:
        url = rx.url
    sink = HttpSink("out", sink_config(f"{url}/hook"))
    try:
        with pytest.raises(Retryable, match="cannot connect"):
            await sink.deliver([feed_event(1)])
    finally:
        await sink.aclose()


# ---------------------------------------------------------------- TLS

async def test_https_with_its_own_ca(tmp_path: Path) -> None:
    certs = certs_mod.make(tmp_path / "certs")
    async with Receiver(certs=certs) as rx:
        assert rx.url.startswith("https://")
        sink = HttpSink("out", sink_config(f"{rx.url}/hook", ca=str(certs.ca)))
        system = HttpSink("out", sink_config(f"{rx.url}/hook"))
        try:
            await sink.deliver([feed_event(1)])
            with pytest.raises(Retryable, match="CERTIFICATE_VERIFY_FAILED"):
                await system.deliver([feed_event(2)])  # the throwaway CA is not in the system store
        finally:
            await sink.aclose()
            await system.aclose()
        assert ids(rx.events()) == [feed_event(1).id]


# ---------------------------------------------------------------- config, secrets

def base(url: str = "http://127.0.0.1:9/hook", **keys: object) -> str:
    return sink_toml(url, **keys)


def test_a_good_config_and_its_defaults() -> None:
    cfg = parse(base()).sinks["out"]
    assert isinstance(cfg, HttpSinkConfig)
    assert (cfg.format, cfg.batch_max, cfg.batch_linger, cfg.timeout, cfg.max_in_flight, cfg.headers,
            cfg.signing_secret, cfg.ca) == ("batch", 100, Duration(0), Duration(10), 1, {}, None, None)


def test_config_mistakes_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_SINK_TOKEN", TOKEN)
    monkeypatch.delenv("HTTP_SINK_MISSING", raising=False)
    p = problems(base("ftp://example.com/x"))
    assert "sinks.out.url: expected an http:// or https:// URL, got 'ftp://example.com/x'" in p
    p = problems(base("https://user:hunter2@example.com/x"))
    assert any(x.startswith("sinks.out.url: must not hold credentials") for x in p)
    assert not any("hunter2" in x for x in p)
    assert "sinks.out.ca: only used with an https:// url" in problems(base(ca="/etc/hostname"))
    p = problems(base("https://example.com/", ca=str(tmp_path / "nope.pem")))
    assert any(x.startswith("sinks.out.ca:") and "not a readable file" in x for x in p)
    p = problems(base(format="batch", max_in_flight=4))
    assert any(x.startswith("sinks.out.max_in_flight: only format = \"single\"") for x in p)
    assert "sinks.out.max_in_flight: must be between 1 and 64" in problems(
        base(format="single", max_in_flight=0))
    assert "sinks.out.timeout: must be more than 0" in problems(base(timeout="0s"))
    assert "sinks.out.format: invalid enum value 'xml'" in problems(base(format="xml"))
    p = problems(base(headers={"Authorization": "Bearer inline-secret-value"}))
    assert any(x.startswith("sinks.out.headers.Authorization: a credential is written as a secret")
               for x in p)
    assert not any("inline-secret-value" in x for x in p)
    p = problems(base(headers={"Idempotency-Key": "x", "X-Bad Name": "y", "X-A": "env:HTTP_SINK_MISSING",
                               "X-B": "file:relative/token"}))
    assert "sinks.out.headers.Idempotency-Key: set by the sink itself; it cannot be configured" in p
    assert "sinks.out.headers.X-Bad Name: not a valid header name" in p
    assert "sinks.out.headers.X-A: environment variable HTTP_SINK_MISSING is not set" in p
    assert any(x.startswith("sinks.out.headers.X-B: a file: reference in headers needs an absolute")
               for x in p)
    p = problems(base(headers={"x-token": "env:HTTP_SINK_TOKEN", "X-Token": "env:HTTP_SINK_TOKEN"}))
    assert any("given twice" in x for x in p)
    monkeypatch.setenv("HTTP_SINK_SIGNING", "whsec_not base64!")
    p = problems(base(signing_secret="env:HTTP_SINK_SIGNING"))
    assert "sinks.out.signing_secret: env:HTTP_SINK_SIGNING: a whsec_ secret must be base64 after " \
           "the prefix" in p
    assert any("secrets cannot be written inline" in x for x in problems(base(signing_secret="abc")))
    assert any(x.startswith("sinks.out.surprise: unknown key") for x in problems(base(surprise=1)))


def test_secrets_stay_out_of_check_output_and_reprs(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    text = f"""
[store]
path = "feed.db"
{base(headers={"Authorization": "Bearer env:HTTP_SINK_TOKEN", "X-Key": "file:" + str(tmp_path / "k")},
      signing_secret="env:HTTP_SINK_SIGNING")}
"""
    (tmp_path / "k").write_text("file-secret-value\n")
    (tmp_path / "config.toml").write_text(text)
    env = {"HTTP_SINK_TOKEN": TOKEN, "HTTP_SINK_SIGNING": WHSEC}
    check = streamd_cli("check", "-c", str(tmp_path / "config.toml"), env=env)
    assert check.returncode == 0, check.stderr
    assert "<redacted env:HTTP_SINK_SIGNING>" in check.stdout
    assert "Bearer <redacted env:HTTP_SINK_TOKEN>" in check.stdout
    assert f"<redacted file:{tmp_path / 'k'}>" in check.stdout
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cfg = parse(text, base_dir=tmp_path)
    sink = HttpSink("out", cfg.sinks["out"])  # type: ignore[arg-type]
    shown = [check.stdout, check.stderr, render_config(cfg), repr(cfg), repr(sink)]
    for s in shown:
        assert TOKEN not in s and WHSEC not in s and "file-secret-value" not in s


async def test_a_sink_that_never_ran_closes_cleanly() -> None:
    sink = HttpSink("out", sink_config("http://127.0.0.1:9/hook"))
    await sink.aclose()
    await anyio.lowlevel.checkpoint()
