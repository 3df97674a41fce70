"""The daemon in-process over real sockets: listener, webhooks, readiness, retention, dead letters."""

from __future__ import annotations

import gc
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import pytest

from streamd.config import Config
from streamd.configfile import parse
from streamd.daemon import DaemonState
from streamd.providers.synthetic import wire
from streamd.sinks.dispatcher import DispatcherState

from .conftest import InProcess, feed_lines, until

pytestmark = pytest.mark.anyio
TOKEN = "hook-token-0123456789"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def config(tmp_path: Path, extra: str = "", **store: str) -> Config:
    store_lines = "".join(f"{k} = {v}\n" for k, v in store.items())
    return parse(f"""
[store]
path = "feed.db"
{store_lines}
[http]
listen = "127.0.0.1:0"
body_limit = "64KiB"
commit_timeout = "1s"
[sources.hook]
provider = "synthetic"
generate = false
webhook = true
token = "env:STREAMD_TEST_HOOK_TOKEN"
[sinks.file]
type = "file"
path = "out/feed.jsonl"
{extra}
""", base_dir=tmp_path)


class Running(InProcess):
    async def post(self, body: bytes | list[bytes], *, token: str | None = TOKEN,
                   ctype: str = "application/json") -> httpx.Response:
        if isinstance(body, list):
            body = b"[" + b",".join(body) + b"]"
        headers = {"content-type": ctype}
        if token:
            headers["authorization"] = f"Bearer {token}"
        return await self.http.post("/webhooks/hook", content=body, headers=headers)


@pytest.fixture
def start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., object]:
    monkeypatch.setenv("STREAMD_TEST_HOOK_TOKEN", TOKEN)

    def make(cfg: Config | None = None, clock: Callable[[], float] | None = None) -> Running:
        return Running(cfg or config(tmp_path), clock)

    return make


def rec(n: int, tenant: str = "t") -> bytes:
    return wire.record(3, n, [tenant], EPOCH)


async def test_health_readiness_and_metrics_endpoints(start: Callable[..., object]) -> None:
    async with start() as d:  # type: ignore[attr-defined]
        r = await d.http.get("/healthz")
        assert r.status_code == 200
        r = await d.http.get("/readyz")
        assert r.status_code == 200
        assert r.text.splitlines()[0] == "ready"
        assert "source hook: ok" in r.text and "sink file: ok" in r.text
        r = await d.http.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        for name in ("streamd_feed_head_seq", "streamd_source_events_appended_total",
                     "streamd_sink_lag_events", "streamd_store_commit_duration_seconds_bucket"):
            assert name in r.text


async def test_a_webhook_answers_2xx_only_with_its_events_committed(start: Callable[..., object]) -> None:
    async with start() as d:  # type: ignore[attr-defined]
        r = await d.post([rec(0), rec(1), rec(2)])
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["appended"], body["duplicates"], body["rejected"]) == (3, 0, 0)
        # already on disk, read by another connection
        ids = {bytes(i).hex() for (i,) in d.rows("SELECT id FROM events")}
        assert set(body["ids"]) == ids
        again = await d.post([rec(1), rec(3)])
        assert (again.json()["appended"], again.json()["duplicates"]) == (1, 1)


async def test_webhook_refusals(start: Callable[..., object]) -> None:
    async with start() as d:  # type: ignore[attr-defined]
        assert (await d.post([rec(0)], token=None)).status_code == 401
        assert (await d.post([rec(0)], token="wrong")).status_code == 401
        assert (await d.post([rec(0)], ctype="text/plain")).status_code == 415
        assert (await d.post(b"[" + b" " * 70_000 + b"]")).status_code == 413

        async def chunked() -> AsyncIterator[bytes]:  # no content-length: the limit still holds
            for _ in range(100):
                yield b" " * 1000

        r = await d.http.post("/webhooks/hook", content=chunked(), headers={
            "content-type": "application/json", "authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 413
        r = await d.post(b"[{not json")
        assert r.status_code == 400
        assert d.rows("SELECT count(*) FROM events") == [(0,)]
        (dl,) = d.rows("SELECT origin, name, raw FROM dead_letters")
        assert dl == ("source", "hook", b"[{not json")
        metrics = (await d.http.get("/metrics")).text
        assert 'streamd_webhook_requests_total{code="401",source="hook"} 2.0' in metrics
        assert 'streamd_webhook_requests_total{code="413",source="hook"} 2.0' in metrics


async def test_a_partly_invalid_body_commits_the_good_and_dead_letters_the_bad(
        start: Callable[..., object]) -> None:
    bad = b'{"tenant":"t","entity":"invoice","op":"created","key":"x","data":{"total":"1,5"}}'
    async with start() as d:  # type: ignore[attr-defined]
        r = await d.post([rec(0), bad, rec(1)])
        assert r.status_code == 200
        assert (r.json()["appended"], r.json()["rejected"]) == (2, 1)
        (row,) = d.rows("SELECT raw, reason FROM dead_letters")
        assert row[0] == bad and "x" in str(row[1])
        metrics = (await d.http.get("/metrics")).text
        assert 'streamd_source_events_rejected_total{source="hook"} 1.0' in metrics
        assert 'streamd_source_events_appended_total{source="hook"} 2.0' in metrics


async def test_while_draining_webhooks_get_503(start: Callable[..., object]) -> None:
    async with start() as d:  # type: ignore[attr-defined]
        assert d.daemon.web is not None
        d.daemon.web.draining = True
        r = await d.post([rec(0)])
        assert r.status_code == 503 and r.headers["retry-after"]
        assert (await d.http.get("/readyz")).status_code == 503
        d.daemon.web.draining = False


async def test_a_stalled_commit_answers_503_never_2xx(start: Callable[..., object]) -> None:
    async with start() as d:  # type: ignore[attr-defined]
        w = d.daemon.writer
        assert w is not None
        (pages,) = d.rows("PRAGMA page_count")[0]
        await w._db.execute(f"PRAGMA max_page_count={pages}")  # the disk is full
        r = await d.post([wire.record(3, n, ["t"], EPOCH) for n in range(40)])
        assert r.status_code == 503, "no 2xx without a commit"
        await w._db.execute("PRAGMA max_page_count=1073741823")
        # The sender retries until it gets a 2xx (the writer may still be in its backoff);
        # the events, committed meanwhile or now, appear exactly once.
        async def accepted() -> bool:
            return (await d.post([wire.record(3, n, ["t"], EPOCH) for n in range(40)])).status_code == 200

        await until(accepted, 20, "the retried webhook to be accepted")
        assert d.rows("SELECT count(*) FROM events") == [(40,)]


async def test_readyz_names_an_unhealthy_sink(start: Callable[..., object], tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("not a directory")
    cfg = config(tmp_path, extra='[sinks.broken]\ntype = "file"\npath = "blocked/x.jsonl"\n'
                                 'backoff = { min = "10ms", max = "50ms" }\n')
    async with start(cfg) as d:  # type: ignore[attr-defined]
        async def unready() -> bool:
            return (await d.http.get("/readyz")).status_code == 503

        await until(unready, what="/readyz to report the broken sink")
        r = await d.http.get("/readyz")
        assert r.text.splitlines()[0] == "not ready"
        assert r.text.splitlines()[1].startswith("sink broken: retrying for")
        assert "sink file: ok" in r.text
        metrics = (await d.http.get("/metrics")).text
        assert 'streamd_component_healthy{component="sink",name="broken"} 0.0' in metrics
        # Its lag keeps growing while it retries, so an alert on lag can fire.
        assert (await d.post([rec(n) for n in range(3)])).status_code == 200

        async def lagging() -> bool:
            text = (await d.http.get("/metrics")).text
            return 'streamd_sink_lag_events{sink="broken"} 3.0' in text and \
                'streamd_sink_lag_events{sink="file"} 0.0' in text

        await until(lagging, 10, "the broken sink's lag to show")

        async def aging() -> bool:
            return (await d.metric('streamd_sink_lag_seconds{sink="broken"}') or 0) > 0

        await until(aging, 10, "the broken sink's lag in seconds to grow")
        daemon = d.daemon
    # Stopping does not wait out the deadline for a sink that keeps failing: its offset
    # holds and it resumes next start.
    assert daemon.state is DaemonState.STOPPED, "shutdown hit its 30s deadline"
    assert daemon.dispatchers["broken"].state is DispatcherState.GAVE_UP
    assert daemon.dispatchers["file"].state is DispatcherState.DRAINING


async def test_stop_drains_every_sink(start: Callable[..., object], tmp_path: Path) -> None:
    async with start() as d:  # type: ignore[attr-defined]
        for i in range(10):
            assert (await d.post([rec(n) for n in range(i * 10, i * 10 + 10)])).status_code == 200
    lines = (tmp_path / "out" / "feed.jsonl").read_bytes().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == list(range(1, 101))


async def test_streamd_run_leaves_start_ups_objects_out_of_later_collections(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`streamd run` builds its daemon with `freeze_gc`: once ready, what start-up made is
    frozen out of the garbage collector's walks (issue 18: a full collection every ~15 s
    at 2,000 events/s paused the event loop 30-45 ms). A daemon built without it, as in
    a process that runs one daemon after another, freezes nothing."""
    from streamd.daemon import Daemon

    monkeypatch.setenv("STREAMD_TEST_HOOK_TOKEN", TOKEN)
    # What the test session froze (tests/conftest.py): only `gc.freeze()` adds to it, and
    # it shrinks as frozen objects are freed.
    frozen = gc.get_freeze_count()
    async with InProcess(config(tmp_path)):
        assert gc.get_freeze_count() <= frozen
    daemon = Daemon(config(tmp_path), freeze_gc=True)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            with anyio.fail_after(10):
                await daemon.ready.wait()
            await until(lambda: gc.get_freeze_count() > frozen, 10, "start-up's objects frozen")
            daemon.request_stop()
    finally:
        gc.unfreeze()
        gc.collect()
        gc.freeze()  # back to the session's freeze, with what is alive now


async def test_a_daemon_runs_once(start: Callable[..., object]) -> None:
    """Its lifecycle goes one way: once stopped, `run` is refused rather than starting a
    second life on the first one's half-closed parts."""
    async with start() as d:  # type: ignore[attr-defined]
        daemon = d.daemon
        assert daemon.state is DaemonState.RUNNING
        with pytest.raises(RuntimeError, match="runs once"):
            await daemon.run()
    assert daemon.state is DaemonState.STOPPED
    with pytest.raises(RuntimeError, match="a Daemon runs once"):
        await daemon.run()


async def test_retention_prunes_only_what_every_sink_passed(start: Callable[..., object],
                                                             tmp_path: Path) -> None:
    now = [1_000_000.0]
    cfg = config(tmp_path, retention='"1h"')
    async with start(cfg, clock=lambda: now[0]) as d:  # type: ignore[attr-defined]
        assert (await d.post([rec(n) for n in range(10)])).status_code == 200
        dispatcher = d.daemon.dispatchers["file"]
        await until(lambda: dispatcher.offset == 10 and d.rows("SELECT seq FROM sink_offsets") == [(10,)])
        assert await d.daemon.retention.prune() == 0, "nothing is older than the retention yet"
        now[0] += 3601
        assert (await d.post([rec(n) for n in range(10, 15)])).status_code == 200
        assert await d.daemon.retention.prune() == 10
        assert d.rows("SELECT min(seq), max(seq) FROM events") == [(11, 15)]
        assert d.rows("SELECT count(*) FROM event_ids") == [(5,)]


async def test_a_lagging_sink_holds_retention_back(start: Callable[..., object], tmp_path: Path) -> None:
    now = [1_000_000.0]
    cfg = config(tmp_path, retention='"1h"', extra='[sinks.slow]\ntype = "stdout"\nstart = "end"\n'
                 'match = { tenant = ["nobody"] }\n')
    async with start(cfg, clock=lambda: now[0]) as d:  # type: ignore[attr-defined]
        assert d.daemon.writer is not None
        # The slow sink's offset is pinned at 4 by hand, as if it had been down.
        assert (await d.post([rec(n) for n in range(10)])).status_code == 200
        d.daemon.dispatchers["slow"].drain()
        with anyio.fail_after(10):
            await d.daemon.dispatchers["slow"].done.wait()
        from streamd.store import Batch
        await d.daemon.writer.submit(Batch(offsets={"slow": 4}))
        # The file sink is past all ten (committed), so only the slow one holds retention.
        # (Found on a busy machine: pruned before the file sink had delivered, nothing went.)
        file = d.daemon.dispatchers["file"]
        await until(lambda: file.offset == 10
                    and ("file", 10) in d.rows("SELECT sink, seq FROM sink_offsets"))
        now[0] += 7200
        assert await d.daemon.retention.prune() == 4
        assert d.rows("SELECT min(seq) FROM events") == [(5,)]


async def test_dlq_retry_renormalizes_a_source_dead_letter(start: Callable[..., object]) -> None:
    async with start() as d:  # type: ignore[attr-defined]
        good = rec(0)
        from streamd.store import Batch, DeadLetter
        assert d.daemon.writer is not None
        await d.daemon.writer.submit(Batch(dead_letters=[
            DeadLetter(origin="source", name="hook", provider="synthetic", reason="was a bug",
                       raw=good),
            DeadLetter(origin="source", name="hook", provider="synthetic", reason="bad",
                       raw=b"{still bad"),
        ]))
        db = sqlite3.connect(d.daemon.cfg.store.path)
        db.execute("UPDATE dead_letters SET status = 'retry'")
        db.commit()
        db.close()
        await until(lambda: d.rows("SELECT count(*) FROM dead_letters WHERE status = 'retry'") == [(0,)],
                    15, "the daemon to retry the dead letters")
        assert d.rows("SELECT count(*) FROM events") == [(1,)]
        (row,) = d.rows("SELECT raw, attempts, status FROM dead_letters")
        assert row == (b"{still bad", 1, "new")


async def test_a_crashing_source_is_restarted_and_counted(start: Callable[..., object], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # A provider bug, not a peer failure: its run() raises. The daemon must log it,
    # show the source as retrying, and start it again after its backoff.
    from streamd.providers.synthetic.source import SyntheticSource

    calls: list[str] = []
    original = SyntheticSource.run

    async def crash_once(self: SyntheticSource, **kw: object) -> None:
        if self.name == "gen":
            calls.append(self.name)
            if len(calls) == 1:
                raise RuntimeError("provider bug")
        await original(self, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(SyntheticSource, "run", crash_once)
    cfg = config(tmp_path, extra='[sources.gen]\nprovider = "synthetic"\nrate = 50.0\n'
                                 'backoff = { min = "50ms", max = "100ms" }\n')
    async with start(cfg) as d:  # type: ignore[attr-defined]
        await until(lambda: len(calls) == 2, 10, "the source to be restarted")
        await until(lambda: d.rows("SELECT count(*) FROM events WHERE source = 'gen'")[0][0] > 0)
        metrics = (await d.http.get("/metrics")).text
        assert 'streamd_retries_total{component="source",name="gen"} 1.0' in metrics
        assert d.daemon.health.get("source", "gen").state.value == "ok"


async def test_a_webhook_already_being_handled_at_shutdown_is_in_the_drained_sinks(
        start: Callable[..., object]) -> None:
    """Shutdown waits for webhook requests that were past its 503 before its last commit:
    one committed (2xx) after the sinks drained would miss them until the next start."""
    d = start()
    await d.__aenter__()  # type: ignore[attr-defined]
    daemon = d.daemon  # type: ignore[attr-defined]
    release = anyio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"[" + rec(0)
        await release.wait()  # the rest comes only once shutdown has begun
        yield b"," + rec(1) + b"]"

    answers: list[httpx.Response] = []

    async def post() -> None:
        answers.append(await d.http.post("/webhooks/hook", content=body(), headers={  # type: ignore[attr-defined]
            "content-type": "application/json", "authorization": f"Bearer {TOKEN}"}))

    async with anyio.create_task_group() as tg:
        tg.start_soon(post)
        await until(lambda: daemon.web.inflight == 1, 10, "the request to be in the handler")
        daemon.request_stop()
        await until(lambda: daemon.web.draining, 10, "shutdown to begin")
        release.set()
    await d.__aexit__(None, None, None)  # type: ignore[attr-defined]
    assert answers[0].status_code == 200
    assert d.rows("SELECT count(*) FROM events") == [(2,)]  # type: ignore[attr-defined]
    lines = feed_lines(Path(d.cfg.store.path).parent / "out" / "feed.jsonl")  # type: ignore[attr-defined]
    assert len(lines) == 2, "the file sink drained before the request committed"
