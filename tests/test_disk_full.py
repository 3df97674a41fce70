"""The disk-full drill on a real full filesystem: the store on a small tmpfs, a filler
file taking every free block, then the filler removed.

The drill: a real `streamd run` fed by webhooks and by a HORISEN poller. While full,
every webhook is answered 503 with a Retry-After (never a 2xx without a commit), the
poller's progress and events do not move, /readyz and /metrics name the store and the
full disk, the log says so, the watchdog is still fed and the process stays up. Once
the filler is gone everything resumes without a restart: the senders' retries get in
exactly once, the poller's changes arrive, and the file sink (outside the tmpfs) holds
every event once.

What "full" means for SQLite: its WAL only grows between checkpoints (the default
`checkpoint_every` is far beyond this filesystem), so with no free block no commit can
succeed. A WAL restarted after a checkpoint would reuse blocks it already holds, and
commits could go on for a while on a full disk; they would be real commits.

The in-process tests pin what the drill cannot reach in seconds: a full disk showing up
as an I/O error (growing the -shm file), opening the store on a full disk, and a sink
waiting on its offset commit while the disk is full.

The tmpfs needs root, or `sudo -n mount`; without either these tests skip (fail with
STREAMD_REQUIRE_TOOLS=1).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamd.config import StoreConfig
from streamd.configfile import parse
from streamd.errors import DiskFull
from streamd.health import Health, State
from streamd.metrics import Metrics
from streamd.model import Event, Party, make_event
from streamd.providers.horisen import simulator as sim_mod
from streamd.providers.horisen.simulator import HorisenSimulator, Knobs
from streamd.providers.synthetic import wire
from streamd.sinks import dispatcher
from streamd.store import Batch, Writer, connect

from .conftest import Background, InProcess, Streamd, feed_lines, streamd_cli, until, wait_for

TOKEN = "disk-full-token"
EPOCH = datetime(2026, 1, 1)
Mount = Callable[[str], Path]


# ---------------------------------------------------------------- the small filesystem


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def _sudo() -> list[str]:
    return [] if os.geteuid() == 0 else ["sudo", "-n"]


def _mount(target: Path, size: str) -> None:
    """A tmpfs on `target`: as root, else with `sudo -n`; skip (or fail, with
    STREAMD_REQUIRE_TOOLS=1) when neither works."""
    if os.geteuid() != 0 and not shutil.which("sudo"):
        why = "not root, and no sudo"
    else:
        try:
            done = _run([*_sudo(), "mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                         str(target)])
        except (OSError, subprocess.SubprocessError) as exc:
            why = str(exc)
        else:
            if done.returncode == 0:
                return
            why = done.stderr.strip() or f"mount exited with {done.returncode}"
    if os.environ.get("STREAMD_REQUIRE_TOOLS") == "1":
        pytest.fail(f"cannot mount a tmpfs (STREAMD_REQUIRE_TOOLS=1 requires it): {why}")
    pytest.skip(f"cannot mount a tmpfs for the disk-full drill: {why}")


def _unmount(target: Path) -> None:
    # A process still holding files there (a daemon the test could not stop) makes a
    # plain umount fail: detach it lazily then; the memory goes when the files close.
    for cmd in (["umount", str(target)], ["umount", "-l", str(target)]):
        try:
            if _run([*_sudo(), *cmd]).returncode == 0:
                return
        except (OSError, subprocess.SubprocessError):
            pass


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Mount]:
    """`small_fs(size)`: a fresh tmpfs of that size, unmounted after the test whatever
    happened. Request it before the fixtures that run processes using it."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        target = tmp_path / f"small{len(mounted)}"
        target.mkdir()
        _mount(target, size)
        mounted.append(target)
        return target

    try:
        yield mount
    finally:
        for target in reversed(mounted):
            _unmount(target)


def fill(fs: Path, leave: int = 0) -> Path:
    """Write a file until the filesystem has not one block left; then give `leave` back."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1):
            block = b"\0" * chunk
            while True:
                try:
                    if os.write(fd, block) < chunk:
                        break
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    assert os.statvfs(fs).f_bavail == 0, "the filler left blocks free"
    if leave:
        os.truncate(filler, os.path.getsize(filler) - leave * os.statvfs(fs).f_frsize)
    return filler


# ---------------------------------------------------------------- the drill


def ro_query(db: Path, sql: str) -> list[Any]:
    """Read the feed as an operator would while the disk is full: read-only."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def metric(url: str, sample: str, **labels: str) -> float | None:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


class Poster(threading.Thread):
    """A webhook sender with one batch of five records: posts it until it gets a 2xx
    (again 0.2 s after each refusal, the Retry-After shortened for the test), and
    remembers every answer."""

    def __init__(self, url: str, k: int) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.body = b"[" + b",".join(wire.record(7, 1000 * k + i, [f"hook{k}"], EPOCH)
                                     for i in range(5)) + b"]"
        self.answers: list[tuple[float, int, str | None]] = []  # (when, status, Retry-After)
        self.acked: list[str] = []

    def post(self, client: httpx.Client) -> bool:
        try:
            r = client.post(f"{self.url}/webhooks/hook", content=self.body, headers={
                "content-type": "application/json", "authorization": f"Bearer {TOKEN}"})
        except httpx.HTTPError:
            self.answers.append((time.monotonic(), 0, None))
            return False
        self.answers.append((time.monotonic(), r.status_code, r.headers.get("retry-after")))
        if 200 <= r.status_code < 300:
            self.acked = r.json()["ids"]
            return True
        return False

    def run(self) -> None:
        give_up = time.monotonic() + 60  # a failed test leaves no sender behind for long
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < give_up and not self.post(client):
                time.sleep(0.2)

    def refused(self) -> int:
        return sum(1 for _, status, _ in self.answers if status == 503)


def drill_config(store: Path, source: str) -> str:
    return f"""
[store]
path = "{store}"
commit_linger = "1ms"
[http]
listen = "127.0.0.1:0"
commit_timeout = "1s"
[sources.hook]
provider = "synthetic"
generate = false
webhook = true
token = "env:DISK_FULL_HOOK_TOKEN"
{source}
[sinks.file]
type = "file"
path = "out/feed.jsonl"
"""


def keep_reading_notifications(d: Streamd) -> None:
    """Drain the sd_notify socket (it queues only a few datagrams) into `d.notes`."""
    try:
        while d.notify is not None:
            d.notifications()
            time.sleep(0.02)
    except (OSError, AttributeError):
        pass  # closed (and set to None) by the fixture's teardown


def serve_horisen(bg: Background, tmp_path: Path) -> HorisenSimulator:
    sim = sim_mod.simulator(tmp_path / "sim", Knobs(days=4, documents_per_day=3))
    bg.start(sim.serve)
    wait_for(lambda: getattr(sim, "url", ""), 10, "the simulator to listen")
    return sim


@pytest.mark.timeout(120)
def test_a_full_disk_pauses_intake_and_everything_resumes_when_space_returns(
        small_fs: Mount, background: Background, streamd_proc: Callable[..., Streamd],
        tmp_path: Path) -> None:
    fs = small_fs("8m")
    db = fs / "feed.db"
    sim = serve_horisen(background, tmp_path)
    source = sim.source_toml("hz", interval='"300ms"', page_size="20",
                             backoff='{ min = "50ms", max = "500ms" }')
    d = streamd_proc(drill_config(db, source), env={"DISK_FULL_HOOK_TOKEN": TOKEN})
    assert fs not in d.dir.parents, "the log and the file sink's output live off the tmpfs"
    d.start(extra_env={"WATCHDOG_USEC": "400000"})  # WATCHDOG=1 every 200 ms while healthy
    threading.Thread(target=keep_reading_notifications, args=(d,), daemon=True).start()
    out = d.dir / "out" / "feed.jsonl"

    def feed() -> list[tuple[int, str]]:
        return [(seq, bytes(i).hex()) for seq, i in ro_query(db, "SELECT seq, id FROM events ORDER BY seq")]

    def delivered() -> list[tuple[int, str]]:
        return [(x["seq"], x["id"]) for x in map(json.loads, feed_lines(out))]

    # 1. Up: both sources committed events, and the sink delivered them.
    first = Poster(d.url, 0)
    with httpx.Client(timeout=30) as client:
        assert first.post(client), first.answers
    invoices = len(sim.documents())
    wait_for(lambda: ro_query(db, "SELECT count(*) FROM events WHERE source = 'hz' AND entity = 'invoice'")
             == [(invoices,)], 20, "the poller's first listing")
    wait_for(lambda: delivered() == feed(), 20, "the sink to deliver what is committed")

    # 2. The disk fills up.
    filler = fill(fs)
    posters = [Poster(d.url, k) for k in (1, 2, 3)]
    for p in posters:
        p.start()
    wait_for(lambda: (metric(d.url, "streamd_store_errors_total", kind="busy") or 0) >= 1, 20,
             "a first failed commit")
    # From the first failure on, no commit can succeed (the WAL cannot grow).
    poller_state = "SELECT key, value, updated FROM source_state WHERE source = 'hz'"
    frozen = (ro_query(db, poller_state), feed())
    mutation = sim.mutate(new=2, paid=1)  # changes the poller must not bring in while full

    wait_for(lambda: all(p.refused() >= 2 for p in posters), 30, "every sender to be refused twice")
    busy = metric(d.url, "streamd_store_errors_total", kind="busy") or 0
    wait_for(lambda: (metric(d.url, "streamd_store_errors_total", kind="busy") or 0) > busy, 30,
             "the writer to keep retrying")
    pings = d.notes.count("WATCHDOG=1")
    wait_for(lambda: d.notes.count("WATCHDOG=1") > pings + 2, 10,
             "the watchdog to be fed while the disk is full")

    r = httpx.get(f"{d.url}/readyz", timeout=10)
    assert r.status_code == 503, r.text
    store_line = next(line for line in r.text.splitlines() if line.startswith("store writer:"))
    assert "retrying" in store_line and "the disk is full" in store_line, r.text
    assert metric(d.url, "streamd_component_healthy", component="store", name="writer") == 0
    # `streamd status` still reads the full store (and asks the daemon how it is).
    cli = streamd_cli("status", "-c", str(d.config), env={"DISK_FULL_HOOK_TOKEN": TOKEN})
    assert cli.returncode == 0 and "running, not ready" in cli.stdout, cli.stdout + cli.stderr
    log = d.log()
    assert "cannot commit: the disk is full (SQLITE_FULL); intake paused, retrying in" in log
    assert "crashed" not in log and "watchdog:" not in log and "CRITICAL" not in log, log
    assert d.proc is not None and d.proc.poll() is None, "the daemon stays up"
    answered = [a for p in posters for a in p.answers]
    assert all(status == 503 and retry_after for _, status, retry_after in answered), answered
    assert (ro_query(db, poller_state), feed()) == frozen, "nothing committed while full"

    # 3. Space comes back: everything resumes, without a restart.
    released = time.monotonic()
    filler.unlink()
    for p in posters:
        p.join(40)
        assert not p.is_alive(), f"a sender never got its 2xx: {p.answers}"
    ids = feed()
    for p in posters:
        *refusals, (at, status, _) = p.answers
        assert 200 <= status < 300 and at > released, p.answers
        assert refusals and all(s == 503 and ra for _, s, ra in refusals), p.answers
        # The refused posts queued their events too: the retries are dropped as duplicates.
        assert sorted(i for _, i in ids if i in p.acked) == sorted(p.acked) and len(p.acked) == 5

    def changes_arrived() -> bool:
        got = set(ro_query(db, "SELECT op, key FROM events WHERE source = 'hz' AND entity = 'invoice'"
                               f" AND seq > {frozen[1][-1][0]}"))
        want = {("created", str(i)) for i in mutation.created} | {("updated", str(i)) for i in mutation.paid}
        return want <= got

    wait_for(changes_arrived, 30, "the poller's changes")
    wait_for(lambda: ro_query(db, poller_state) != frozen[0], 30, "the poller's progress to move again")
    wait_for(lambda: httpx.get(f"{d.url}/readyz", timeout=10).status_code == 200, 30, "/readyz 200")
    assert metric(d.url, "streamd_component_healthy", component="store", name="writer") == 1
    wait_for(lambda: delivered() == feed(), 30, "the sink to deliver everything")
    final = feed()
    assert len({i for _, i in final}) == len(final), "an event twice in the feed"
    assert "store: commits resumed" in d.log()
    assert d.proc.poll() is None and d.runs == 1
    assert d.terminate() == 0
    assert delivered() == final, "the file sink holds every event once, in seq order"


# ---------------------------------------------------------------- the store, in-process


def _event(key: str) -> Event:
    return make_event(provider="synthetic", source="s", tenant="t", entity="party", op="created",
                      key=key, time=datetime(2026, 1, 1, tzinfo=UTC), data=Party(name=key),
                      version="v1")


@asynccontextmanager
async def running_writer(cfg: StoreConfig) -> AsyncIterator[tuple[Writer, Metrics, Health]]:
    db = await connect(cfg)
    metrics, health = Metrics(), Health()
    writer = Writer(db, cfg, metrics, health.add("store", "writer", grace=30.0, watched=True))
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(writer.run)
            yield writer, metrics, health
            writer.close()
    finally:
        await db.close()


def wal_frames(db: str) -> int:
    return (os.path.getsize(f"{db}-wal") - 32) // (4096 + 24)


def grow_wal(db: str, frames: int) -> None:
    """Append to the WAL, checkpointing nothing, until it holds exactly `frames` frames;
    each one-row update adds one."""
    side = sqlite3.connect(db, isolation_level=None)
    try:
        side.execute("PRAGMA wal_autocheckpoint=0")
        side.execute("CREATE TABLE pad (x BLOB)")
        side.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
                     " INSERT INTO pad SELECT zeroblob(3500) FROM n", (frames - 200,))
        while wal_frames(db) < frames:
            side.execute("UPDATE pad SET x = randomblob(3500) WHERE rowid = 1")
    finally:
        side.close()
    assert wal_frames(db) == frames


def shm_size(db: str) -> int | None:
    try:
        return os.path.getsize(f"{db}-shm")
    except FileNotFoundError:
        return None


@pytest.mark.anyio
async def test_an_io_error_from_the_full_disk_pauses_commits_instead_of_stopping(
        small_fs: Mount, anyio_backend: str) -> None:
    """SQLite maps ENOSPC to SQLITE_FULL only for write(); growing the -shm file (each time
    the WAL passes another ~16 MiB) fails as SQLITE_IOERR_SHMSIZE, a "disk I/O error"."""
    fs = small_fs("24m")
    cfg = StoreConfig(path=str(fs / "feed.db"))
    async with running_writer(cfg) as (writer, metrics, health):
        await writer.submit(Batch(source="s", events=[_event("a")]))
        # One frame short of the end of the -shm file's first region (4062 frames).
        grow_wal(cfg.path, 4061)
        assert shm_size(cfg.path) == 32768
        # Room for the next commit's frames, not for the next 32 KiB of -shm.
        filler = fill(fs, leave=7)
        comp = health.get("store", "writer")
        result: list[object] = []

        async def submit() -> None:
            result.append(await writer.submit(Batch(source="s", events=[_event("b"), _event("c")])))

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(submit)
                await until(lambda: comp.state is State.RETRYING, 10, "the writer to retry")
                assert "the disk is full (SQLITE_IOERR_SHMSIZE)" in comp.reason
                assert not comp.healthy(health.now()), "a full disk makes the store unready at once"
                assert result == [] and writer.head == 1
                assert metrics.registry.get_sample_value("streamd_store_errors_total", {"kind": "busy"})
                filler.unlink()
        finally:
            filler.unlink(missing_ok=True)
        assert writer.head == 3 and comp.state is State.OK


@pytest.mark.anyio
async def test_opening_the_store_on_a_full_disk_says_the_disk_is_full(
        small_fs: Mount, anyio_backend: str) -> None:
    fs = small_fs("2m")
    cfg = StoreConfig(path=str(fs / "feed.db"))
    async with running_writer(cfg) as (writer, _, _):
        await writer.submit(Batch(source="s", events=[_event("a")]))
    assert shm_size(cfg.path) is None  # a clean close removes it: opening makes it again
    filler = fill(fs)
    try:
        with pytest.raises(DiskFull, match=r"the disk is full \(SQLITE_IOERR_SHMSIZE\)"):
            await connect(cfg)
    finally:
        filler.unlink()
    async with running_writer(cfg) as (writer, _, _):
        assert writer.head == 1


@pytest.mark.anyio
async def test_a_sink_waiting_on_a_full_disk_to_commit_its_offset_is_not_wedged(
        small_fs: Mount, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str) -> None:
    """The watchdog stops being fed when a watched loop misses its own promise to beat
    again; a sink whose offset commit waits behind a full disk has not missed anything."""
    monkeypatch.setattr(dispatcher, "IDLE_WAIT", 0.05)  # the sink promises to beat within 0.5 s
    monkeypatch.setenv("DISK_FULL_HOOK_TOKEN", TOKEN)
    fs = small_fs("8m")
    cfg = parse(drill_config(fs / "feed.db", "").replace(
        'path = "out/feed.jsonl"', 'path = "out/feed.jsonl"\nbatch_linger = "2s"'), base_dir=tmp_path)
    async with InProcess(cfg) as d:
        body = b"[" + b",".join(wire.record(7, i, ["t"], EPOCH) for i in range(5)) + b"]"
        r = await d.http.post("/webhooks/hook", content=body, headers={
            "content-type": "application/json", "authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200
        # The sink lingers for more before delivering: the disk fills meanwhile, so its
        # offset commit after the delivery cannot go through.
        filler = fill(fs)
        try:
            await wait_behind_the_full_disk(d, tmp_path / "out" / "feed.jsonl")
        finally:
            filler.unlink()
        await until(lambda: d.rows("SELECT seq FROM sink_offsets WHERE sink = 'file'") == [(5,)],
                    20, "the offset commit once space is back")


async def wait_behind_the_full_disk(d: InProcess, out: Path) -> None:
    """The sink delivered, its offset commit fails for longer than the sink promised to
    beat again, and the daemon does not count it as wedged (which would starve the watchdog)."""

    def busy() -> float:
        return d.daemon.metrics.registry.get_sample_value("streamd_store_errors_total",
                                                          {"kind": "busy"}) or 0.0

    await until(lambda: len(feed_lines(out)) == 5, 10, "the delivery")
    await until(lambda: busy() >= 1, 10, "the offset commit to fail")
    since = anyio.current_time()
    await until(lambda: busy() >= 4 and anyio.current_time() - since > 1.0, 20,
                "the writer to retry for longer than the sink's promise")
    assert d.rows("SELECT seq FROM sink_offsets WHERE sink = 'file'") == []
    assert d.daemon.health.wedged() == []
