"""Asteria end to end over real sockets and real mutual TLS: the simulated gateway,
the daemon's source, the store, the file sink, and the webhook route."""

from __future__ import annotations

import json
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException

from streamd.configfile import parse
from streamd.model import Event
from streamd.providers.asteria import simulator as sim_mod
from streamd.providers.asteria import wire
from streamd.providers.asteria.normalize import normalize
from streamd.providers.asteria.simulator import AsteriaSimulator, Knobs, send_webhooks
from streamd.providers.asteria.tenants import Recent

from .conftest import InProcess, feed_lines, until

pytestmark = pytest.mark.anyio
SECRET = "asteria-webhook-secret-value"
NOW = datetime(2026, 11, 21, tzinfo=UTC)


def expected_events(sim: AsteriaSimulator, n: int) -> list[Event]:
    """The gateway's first n events, each deletion placed in the tenant of its record's
    earlier events, as the source places it."""
    recent, events = Recent(n), []
    for i in range(n):
        (ev,) = normalize(*sim.event(i), source="gw", received_at=NOW, tenant_of=recent.get)
        assert ev.tenant, f"event {i} ({ev.type} {ev.key}) in no tenant"
        recent.saw(ev.entity, ev.key, ev.tenant)
        events.append(ev)
    return events


def expected_ids(sim: AsteriaSimulator, n: int) -> set[str]:
    return {ev.id for ev in expected_events(sim, n)}


class Gateway:
    """A simulator serving on loopback for the duration of the test."""

    def __init__(self, tmp_path: Path, knobs: Knobs) -> None:
        self.sim = sim_mod.simulator(tmp_path / "certs", knobs)

    async def __aenter__(self) -> AsteriaSimulator:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        await self._tg.start(self.sim.serve)
        return self.sim

    async def __aexit__(self, *exc: object) -> None:
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)


def config(tmp_path: Path, sim: AsteriaSimulator, extra: str = "", source: str = "") -> Any:
    return parse(f"""
[store]
path = "feed.db"
[http]
listen = "127.0.0.1:0"
body_limit = "64KiB"
{sim.source_toml("gw", backoff='{ min = "10ms", max = "200ms" }',
                 webhook_secret='"env:ASTERIA_TEST_SECRET"', webhook_header='"x-partner-secret"')}
{source}
[sinks.file]
type = "file"
path = "out/feed.jsonl"
{extra}
""", base_dir=tmp_path)


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASTERIA_TEST_SECRET", SECRET)


def feed_ids(d: InProcess) -> list[str]:
    return [bytes(i).hex() for (i,) in d.rows("SELECT id FROM events ORDER BY seq")]


# ---------------------------------------------------------------- 1. TLS both ways

async def test_a_client_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    async with Gateway(tmp_path, Knobs(count=10)) as sim:
        assert sim.rogue is not None
        ctx = ssl.create_default_context(cafile=str(sim.certs.ca))
        ctx.load_cert_chain(sim.rogue.client_cert, sim.rogue.client_key)  # signed by the wrong CA
        # TLS 1.3: the server refuses the certificate after the client's half of the handshake,
        # so the client sees the connection closed rather than a TLS alert.
        with pytest.raises((ssl.SSLError, OSError, WebSocketException)):
            async with connect(sim.url, ssl=ctx, additional_headers={"x-asteria-client": "streamd-partner"},
                               open_timeout=5, proxy=None) as ws:
                await ws.recv()
        no_cert = ssl.create_default_context(cafile=str(sim.certs.ca))
        with pytest.raises((ssl.SSLError, OSError, WebSocketException)):
            async with connect(sim.url, ssl=no_cert, open_timeout=5, proxy=None) as ws:
                await ws.recv()
        assert sim.upgrades == 0


async def test_the_client_header_is_required_at_the_upgrade(tmp_path: Path) -> None:
    async with Gateway(tmp_path, Knobs(count=10)) as sim:
        with pytest.raises(InvalidStatus) as info:
            async with connect(sim.url, ssl=sim.certs.client_context(), open_timeout=5, proxy=None):
                pass
        assert info.value.response.status_code == 401
        assert sim.refused == 1 and sim.upgrades == 0


async def test_an_untrusted_server_is_never_connected_and_is_retried(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="streamd.source.asteria")
    async with Gateway(tmp_path, Knobs(count=10, untrusted_cert=True)) as sim, \
            InProcess(config(tmp_path, sim)) as d:
        await until(lambda: (d.daemon.metrics.registry.get_sample_value(
            "streamd_source_reconnects_total", {"source": "gw"}) or 0) >= 3, 10, "three retries")

        async def unready() -> bool:
            r = await d.http.get("/readyz")
            return r.status_code == 503 and "source gw: retrying" in r.text

        await until(unready, 10, "/readyz to name the source")
        r = await d.http.get("/readyz")
        assert "certificate was not trusted" in r.text
        assert await d.metric('streamd_source_connected{source="gw"}') == 0
        assert sim.upgrades == 0 and d.rows("SELECT count(*) FROM events") == [(0,)]
    retries = [r for r in caplog.records if "reconnect" in r.getMessage()]
    assert len(retries) >= 3 and {r.levelname for r in retries} == {"INFO"}
    assert "the gateway's certificate was not trusted" in retries[0].getMessage()


# ---------------------------------------------------------------- 2. drops and replays

async def test_drops_and_replays_end_as_exactly_the_gateways_events(tmp_path: Path) -> None:
    n = 600
    async with Gateway(tmp_path, Knobs(count=n, drop_every=70, replay=25)) as sim, \
            InProcess(config(tmp_path, sim)) as d:
        await until(lambda: d.rows("SELECT count(*) FROM events") == [(n,)] and sim.done.is_set(),
                    30, f"{n} events")
        ids = feed_ids(d)
        assert sorted(ids) == sorted(expected_ids(sim, n)), "exactly the gateway's events"
        assert sim.upgrades >= n // 70
        dup = await d.metric('streamd_source_events_duplicate_total{source="gw"}')
        assert dup is not None and dup >= 25 * (n // 70 - 1), "the replays were seen and dropped"
        file_sink = d.daemon.dispatchers["file"]
        await until(lambda: file_sink.offset == n, 10, "the file sink")
    lines = [json.loads(x) for x in feed_lines(tmp_path / "out" / "feed.jsonl")]
    assert [x["id"] for x in lines] == ids, "the file sink likewise, in feed order"


async def test_each_new_record_keeps_its_tenant_in_one_narrow_row(tmp_path: Path) -> None:
    """What a later deletion needs of a record, its tenant, is kept once per record in
    `record_tenants` (source, entity, key -> tenant), in the commit of its event; not as a
    row of `entity_state` and its second index, which cost three times as much to write."""
    n = 300
    async with Gateway(tmp_path, Knobs(count=n)) as sim, InProcess(config(tmp_path, sim)) as d:
        await until(lambda: d.rows("SELECT count(*) FROM events") == [(n,)], 30, f"{n} events")
        placed = d.rows("SELECT DISTINCT entity, key, tenant FROM events WHERE tenant IS NOT NULL"
                        " AND tenant != ''")
        assert placed, "the gateway's records name their company"
        kept = d.rows("SELECT entity, key, tenant FROM record_tenants WHERE source = 'gw'")
        assert sorted(kept) == sorted(placed)
        assert d.rows("SELECT count(*) FROM entity_state") == [(0,)]


# ---------------------------------------------------------------- 3. bad frames

async def test_malformed_frames_and_unknown_topics_go_to_dead_letters(tmp_path: Path) -> None:
    n = 400
    async with Gateway(tmp_path, Knobs(count=n, malformed_every=50, unknown_every=70)) as sim, \
            InProcess(config(tmp_path, sim)) as d:
        await until(lambda: d.rows("SELECT count(*) FROM events") == [(n,)], 30, f"{n} events")
        await until(lambda: d.rows("SELECT count(*) FROM dead_letters") == [(n // 50 + n // 70,)], 10,
                    "the dead letters")
        raws = [bytes(r) for (r,) in d.rows("SELECT raw FROM dead_letters")]
        assert raws.count(sim_mod.MALFORMED) == n // 50
        assert sum(b"FORECAST_UPDATE" in r for r in raws) == n // 70
        reasons = {r for (r,) in d.rows("SELECT reason FROM dead_letters")}
        assert any(r.startswith("malformed frame") for r in reasons)
        assert "unknown topic 'FORECAST_UPDATE'" in reasons
        assert await d.metric('streamd_source_events_rejected_total{source="gw"}') == n // 50 + n // 70
        assert sim.upgrades == 1, "bad frames never cost the connection"


async def test_a_text_frame_that_is_not_utf8_goes_to_dead_letters_not_the_connection(tmp_path: Path) -> None:
    # The source reads frames as bytes; the UTF-8 of a text frame is checked with the rest
    # of the frame, so a bad one is kept like any malformed frame (it used to fail the
    # connection, 1007, and the frame was gone).
    n = 5
    async with Gateway(tmp_path, Knobs(count=n)) as sim, InProcess(config(tmp_path, sim)) as d:
        await until(lambda: d.rows("SELECT count(*) FROM events") == [(n,)], 20, f"{n} events")
        bad = wire.encode_frame("CLIENT_UPDATE", b'{"_id": "c1", "companyId": "t", "note": "\xff"}')
        sim.send_raw(bad, text=True)
        sim.send_raw(wire.encode_frame(*sim.event(n)).decode())
        await until(lambda: d.rows("SELECT count(*) FROM events") == [(n + 1,)], 20, "the frame after it")
        at = bad.index(b"\xff")
        assert [(bytes(raw), reason) for raw, reason in d.rows("SELECT raw, reason FROM dead_letters")] == [
            (bad, f"malformed frame: not UTF-8 (invalid start byte at byte {at})")]
        assert set(feed_ids(d)) == expected_ids(sim, n + 1)
        assert sim.upgrades == 1


# ---------------------------------------------------------------- 4. webhooks

async def test_webhooks_authenticate_limit_and_deduplicate_against_the_websocket(tmp_path: Path) -> None:
    n = 60
    async with Gateway(tmp_path, Knobs(count=n)) as sim, InProcess(config(tmp_path, sim)) as d:
        await until(lambda: d.rows("SELECT count(*) FROM events") == [(n,)], 20, "the websocket's events")
        url = f"{d.url}/webhooks/gw"
        topic, body = sim.event(5)
        hook = {"content-type": "application/json", "x-asteria-topic": topic}
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.post(url, content=body, headers=hook)).status_code == 401
            r = await http.post(url, content=body, headers={**hook, "x-partner-secret": "wrong"})
            assert r.status_code == 401
            big = b'{"_id": "x", "pad": "' + b"x" * 70_000 + b'"}'
            r = await http.post(url, content=big, headers={**hook, "x-partner-secret": SECRET})
            assert r.status_code == 413
            r = await http.post(url, content=body, headers={**hook, "x-partner-secret": SECRET,
                                                             "content-type": "text/plain"})
            assert r.status_code == 415
            r = await http.post(url, content=body, headers={**hook, "x-partner-secret": SECRET,
                                                             "x-asteria-topic": "INVOICE_EXPLODE"})
            assert r.status_code == 400 and "unknown topic" in r.json()["error"]
        # The same change by webhook: one event, counted as a duplicate.
        (same,) = await send_webhooks(url, [sim.event(5)], header="x-partner-secret", secret=SECRET)
        assert same.status_code == 200 and same.json() == {
            "appended": 0, "duplicates": 1, "ids": [expected_id(sim, 5)]}
        fresh = await send_webhooks(url, [sim.event(i) for i in range(n, n + 3)], header="x-partner-secret",
                                    secret=SECRET)
        assert [r.json()["appended"] for r in fresh] == [1, 1, 1]
        assert d.rows("SELECT count(*) FROM events") == [(n + 3,)]
        (dl,) = d.rows("SELECT raw, context FROM dead_letters")
        assert bytes(dl[0]) == body and json.loads(dl[1]) == {"via": "webhook", "topic": "INVOICE_EXPLODE"}


def expected_id(sim: AsteriaSimulator, i: int) -> str:
    return expected_events(sim, i + 1)[i].id


async def test_a_bad_client_key_is_a_config_error_not_a_crash(tmp_path: Path) -> None:
    from streamd.errors import ConfigError

    certs = sim_mod.make_certs(tmp_path / "certs")
    (tmp_path / "bad.key").write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    text = (f'[sources.gw]\nprovider = "asteria"\nurl = "wss://127.0.0.1:9"\nclient_id = "x"\n'
            f'cert = "{certs.client_cert}"\nkey = "{tmp_path / "bad.key"}"\nca = "{certs.ca}"\n')
    with pytest.raises(ConfigError) as info:
        parse(text, base_dir=tmp_path)
    (problem,) = info.value.problems
    assert problem.startswith("sources.gw.cert: cannot load the client certificate and key")
    assert "nope" not in problem
    with pytest.raises(ConfigError) as info:
        parse(text.replace("wss://", "ws://").replace(str(tmp_path / "bad.key"), str(certs.client_key)),
              base_dir=tmp_path)
    assert info.value.problems[0].startswith('sources.gw.url: expected "wss://')


async def test_stopping_commits_every_frame_already_read(tmp_path: Path) -> None:
    # The gateway has no acks: a frame read from the socket and dropped at shutdown would
    # be lost for good. Stop mid-stream and account for every frame that was read.
    async with Gateway(tmp_path, Knobs(count=200_000)) as sim:
        d = InProcess(config(tmp_path, sim))
        async with d:
            await until(lambda: d.rows("SELECT count(*) FROM events")[0][0] > 2000, 20, "a busy stream")
            source = d.daemon.sources["gw"]
        # Leaving the block stopped the daemon (SIGTERM's path) while frames were in flight.
        assert source.frames_read < 200_000, "stopped mid-stream"  # type: ignore[attr-defined]
        m = d.daemon.metrics.registry.get_sample_value
        settled = sum(m(f"streamd_source_events_{k}_total", {"source": "gw"}) or 0
                      for k in ("appended", "duplicate", "rejected"))
        assert settled == source.frames_read  # type: ignore[attr-defined]
        assert d.rows("SELECT count(*) FROM events") == [(source.frames_read,)]  # type: ignore[attr-defined]


async def test_frames_left_when_the_reader_stops_are_committed_not_dropped(tmp_path: Path) -> None:
    """The reader closes its end of the frame stream when it stops; frames still in the
    stream then are one batch that must be committed. (The committer used to take the
    closed stream's end for an error, mid-batch: that batch was gone, with a traceback.)"""
    from streamd.providers.asteria import wire

    sim = sim_mod.simulator(tmp_path / "certs", Knobs())
    sim.url = "wss://127.0.0.1:1"  # nothing there: the source only ever retries; no frame comes
    async with InProcess(config(tmp_path, sim)) as d:
        source = d.daemon.sources["gw"]
        send, receive = anyio.create_memory_object_stream[bytes](10)
        for i in range(3):
            send.send_nowait(wire.encode_frame(*sim.event(i)))
        send.close()  # as `run` does when it stops, with frames still in the stream
        with receive, anyio.fail_after(10):
            await source._commit_frames(receive)  # type: ignore[attr-defined]
        assert set(feed_ids(d)) == expected_ids(sim, 3)

