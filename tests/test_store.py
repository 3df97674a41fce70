"""The feed store on a real SQLite file: the single writer, dedupe, seq, schema, retention."""

from __future__ import annotations

import ctypes
import ctypes.util
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from streamd.config import StoreConfig
from streamd.errors import StoreFatal, WriterClosed
from streamd.health import Health, State
from streamd.metrics import Metrics
from streamd.model import Event, Party, make_event
from streamd.store import Batch, DeadLetter, EntityState, FeedReader, RecordTenant, Writer, connect
from streamd.store.schema import MIGRATIONS, SCHEMA_VERSION, in_thread
from streamd.store.writer import WriterState
from streamd.units import Duration, Size

from .conftest import until

pytestmark = pytest.mark.anyio
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ev(key: str, version: str = "v1", tenant: str = "t", source: str = "s") -> Event:
    return make_event(provider="synthetic", source=source, tenant=tenant, entity="party",
                      op="created", key=key, time=T0, data=Party(name=key), version=version)


@dataclass
class Store:
    cfg: StoreConfig
    writer: Writer
    reader: FeedReader
    metrics: Metrics
    health: Health


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(tmp_path / "feed.db") as s:
        yield s


class open_store:
    def __init__(self, path: Path, **kw: object) -> None:
        self.cfg = StoreConfig(path=str(path), commit_linger=Duration(0.005), **kw)  # type: ignore[arg-type]

    async def __aenter__(self) -> Store:
        self.db = await connect(self.cfg)
        self.metrics = Metrics()
        self.health = Health()
        self.writer = Writer(self.db, self.cfg, self.metrics, self.health.add("store", "writer"))
        self.tg = anyio.create_task_group()
        await self.tg.__aenter__()
        await self.tg.start(self.writer.run)
        self.reader = await FeedReader.open(self.cfg)
        return Store(self.cfg, self.writer, self.reader, self.metrics, self.health)

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()
        await self.tg.__aexit__(None, None, None)
        await self.reader.close()
        await self.db.close()


def sample(m: Metrics, metric: str, **labels: str) -> float:
    v = m.registry.get_sample_value(metric, labels)
    return 0.0 if v is None else v


async def test_events_get_dense_increasing_seqs(store: Store) -> None:
    done = await store.writer.submit(Batch(source="s", events=[ev("a"), ev("b"), ev("c")]))
    assert (done.appended, done.duplicates, done.first_seq, done.last_seq) == (3, 0, 1, 3)
    rows = await store.reader.read(0, 10, 10)
    assert [e.seq for e in rows] == [1, 2, 3] and [e.key for e in rows] == ["a", "b", "c"]
    assert store.writer.head == 3 == await store.reader.head()


async def test_a_commit_is_one_trip_to_sqlites_thread(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything a group commits (events, their ids, states, tenants, dead letters,
    offsets, meta, BEGIN to COMMIT) is one call on SQLite's thread: between two statements
    the writer never waits for the event loop to come back to it. Each such wait held
    every event of the group back (issue 18: the steady run's tail)."""
    async with open_store(tmp_path / "feed.db") as s:
        db = s.writer._db
        real = db._execute
        trips: list[object] = []

        async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
            trips.append(fn)
            return await real(fn, *args, **kwargs)

        monkeypatch.setattr(db, "_execute", counting)
        done = await s.writer.submit(Batch(
            source="s", events=[ev("a"), ev("b")], entity_states=[EntityState("t", "party", "a", "v1")],
            record_tenants=[RecordTenant("party", "a", "t")], offsets={"file": 1}, meta={"m": "v"},
            dead_letters=[DeadLetter(origin="source", name="s", reason="bad", raw=b"x")]))
        assert done.appended == 2
        assert len(trips) == 1


async def test_a_group_of_new_events_takes_a_few_statements_not_a_step_per_row(tmp_path: Path) -> None:
    """Each step of a statement gives the GIL up and waits to get it back from the event
    loop: the dedupe index's `RETURNING` stepped once per new id, and the record tenants'
    `executemany` once per record, and together they took most of the writer's time at
    full speed (issue 18). All new: one INSERT of the ids, its count of rows says so; the
    tenants in multi-row statements, upserted in order."""
    async with open_store(tmp_path / "feed.db") as s:
        traced: list[str] = []
        await in_thread(s.writer._db, lambda conn: conn.set_trace_callback(traced.append))
        tenants = [RecordTenant("party", f"r{i}", "t1") for i in range(300)]
        done = await s.writer.submit(Batch(source="s", events=[ev(f"k{i}") for i in range(300)],
                                           record_tenants=[*tenants, RecordTenant("party", "r7", "t2")]))
        assert (done.appended, done.duplicates) == (300, 0)
        assert not [t for t in traced if "RETURNING" in t]
        # 301 records: pieces of 256, 32, 8, 4 and 1 rows (`chunks`), not 301 steps.
        assert len([t for t in traced if "record_tenants" in t]) == 5
        assert len(traced) < 20, traced
        found = await s.reader.entity_tenants("s", "party", ["r0", "r7", "r299"])
        assert found == {"r0": "t1", "r7": "t2", "r299": "t1"}  # the later of the two for r7
        # Some there already: undone and done again, saying which.
        traced.clear()
        done = await s.writer.submit(Batch(source="s", events=[ev("k1"), ev("new"), ev("k299")]))
        assert (done.appended, done.duplicates) == (1, 2)
        assert [t for t in traced if "RETURNING" in t]
        await in_thread(s.writer._db, lambda conn: conn.set_trace_callback(None))
        assert [e.key for e in await s.reader.read(300, 400, 100)] == ["new"]


async def test_duplicates_are_dropped_inside_the_transaction_and_counted(store: Store) -> None:
    await store.writer.submit(Batch(source="s", events=[ev("a"), ev("b")]))
    # an old id again, a new one, and the same new one twice in one batch
    done = await store.writer.submit(Batch(source="s", events=[ev("a"), ev("c"), ev("c")]))
    assert (done.appended, done.duplicates) == (1, 2)
    assert [e.key for e in await store.reader.read(0, 100, 100)] == ["a", "b", "c"]
    assert sample(store.metrics, "streamd_source_events_appended_total", source="s") == 3
    assert sample(store.metrics, "streamd_source_events_duplicate_total", source="s") == 2


async def test_concurrent_submits_are_group_committed(store: Store) -> None:
    results = {}

    async def submit(i: int) -> None:
        results[i] = await store.writer.submit(Batch(source="s", events=[ev(f"k{i}")]))

    async with anyio.create_task_group() as tg:
        for i in range(200):
            tg.start_soon(submit, i)
    assert sorted(r.last_seq for r in results.values()) == list(range(1, 201))
    commits = sample(store.metrics, "streamd_store_commit_duration_seconds_count")
    assert 0 < commits < 200, "batches waiting together must share a transaction"


async def test_progress_and_entity_state_commit_with_the_events(store: Store) -> None:
    await store.writer.submit(Batch(source="poll", events=[ev("a", source="poll")],
                                    progress={"cursor": "2026-01-01", "page": 3},
                                    entity_states=[EntityState("t", "party", "a", "h1", b"{}"),
                                                   EntityState("t", "party", "b", "h2")]))
    assert await store.reader.progress("poll") == {"cursor": "2026-01-01", "page": 3}
    assert await store.reader.entity_versions("poll", "t", "party") == {"a": "h1", "b": "h2"}
    await store.writer.submit(Batch(source="poll", entity_states=[EntityState("t", "party", "b", None)],
                                    progress={"page": 4}))
    assert await store.reader.entity_versions("poll", "t", "party") == {"a": "h1"}
    assert await store.reader.progress("poll") == {"cursor": "2026-01-01", "page": 4}


async def test_dead_letters_and_offsets(store: Store) -> None:
    await store.writer.submit(Batch(dead_letters=[DeadLetter(
        origin="source", name="s", provider="synthetic", reason="bad", raw=b"\x00raw",
        context={"topic": "X"})], offsets={"file": 7}))
    (row,) = await store.reader.dead_letters()
    assert (row.origin, row.name, row.reason, row.raw, row.context) == ("source", "s", "bad", b"\x00raw",
                                                                         {"topic": "X"})
    assert await store.reader.offsets() == {"file": 7}
    await store.writer.submit(Batch(resolved_dead_letters=[row.id]))
    assert await store.reader.dead_letters() == []
    assert sample(store.metrics, "streamd_dead_letters_total", origin="source", name="s") == 1


async def test_seq_is_never_reused_even_after_retention_empties_the_feed(tmp_path: Path) -> None:
    async with open_store(tmp_path / "feed.db") as s:
        await s.writer.submit(Batch(source="s", events=[ev("a"), ev("b")]))
        await s.writer.submit(Batch(prune_upto=2))
        assert await s.reader.read(0, 100, 100) == []
    async with open_store(tmp_path / "feed.db") as s:  # and across a restart
        done = await s.writer.submit(Batch(source="s", events=[ev("c")]))
        assert done.first_seq == 3
        # retention is the dedupe horizon: a pruned id is new again (documented)
        again = await s.writer.submit(Batch(source="s", events=[ev("a")]))
        assert again.appended == 1


async def test_seq_at_finds_the_commit_time_boundary(store: Store) -> None:
    clock = iter([1000.0, 1000.0, 2000.0, 2000.0, 3000.0, 3000.0])
    store.writer._clock = lambda: next(clock)  # the writer's wall clock, as a test double
    for k in ("a", "b", "c"):
        await store.writer.submit(Batch(source="s", events=[ev(k)]))
    assert await store.reader.seq_at(1_500_000) == 1
    assert await store.reader.seq_at(2_000_000) == 1
    assert await store.reader.seq_at(2_000_001) == 2
    assert await store.reader.seq_at(9_000_000) == 3
    assert await store.reader.seq_at(0) == 0


async def test_a_full_disk_pauses_commits_and_they_resume(tmp_path: Path) -> None:
    async with open_store(tmp_path / "feed.db") as s:
        await s.writer.submit(Batch(source="s", events=[ev("a")]))
        side = sqlite3.connect(s.cfg.path)
        pages = side.execute("PRAGMA page_count").fetchone()[0]
        side.close()
        # The writer's own connection: cap the file where it is, as a full disk would.
        await s.writer._db.execute(f"PRAGMA max_page_count={pages}")
        big = [ev(f"k{i}", version="x" * 200) for i in range(3000)]
        result: list[object] = []

        async def submit() -> None:
            result.append(await s.writer.submit(Batch(source="s", events=big)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(submit)
            comp = s.health.get("store", "writer")
            await until(lambda: comp.state is State.RETRYING)
            assert "disk is full" in comp.reason
            assert result == [], "nothing may be acknowledged while the disk is full"
            assert sample(s.metrics, "streamd_store_errors_total", kind="busy") >= 1
            await s.writer._db.execute("PRAGMA max_page_count=1073741823")
        assert result and result[0].appended == 3000  # type: ignore[attr-defined]
        assert comp.state is State.OK


async def test_a_store_written_by_a_newer_streamd_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "feed.db"
    async with open_store(path):
        pass
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreFatal, match="newer streamd"):
        await connect(StoreConfig(path=str(path)))


async def test_a_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(StoreFatal, match="not a streamd feed"):
        await connect(StoreConfig(path=str(path)))


async def test_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "feed.db"
    path.write_bytes(b"this is not a database" * 500)
    with pytest.raises(StoreFatal, match="not a database"):
        await connect(StoreConfig(path=str(path)))


async def test_the_writer_queue_is_bounded(tmp_path: Path) -> None:
    cfg = StoreConfig(path=str(tmp_path / "feed.db"), queue_batches=2)
    db = await connect(cfg)
    try:
        writer = Writer(db, cfg, Metrics(), Health().add("store", "writer"))  # never started
        await writer.enqueue(Batch())
        await writer.enqueue(Batch())
        with anyio.move_on_after(0.2) as scope:
            await writer.enqueue(Batch())
        assert scope.cancelled_caught, "a full queue must make the submitter wait"
        writer.close()
    finally:
        await db.close()


async def test_the_writer_runs_once_and_refuses_batches_once_closed(tmp_path: Path) -> None:
    """Its lifecycle goes one way: a second `run` is refused, not a second task committing
    beside the first; after `close()` a submitter hears WriterClosed at once."""
    async with open_store(tmp_path / "feed.db") as store:
        writer = store.writer
        assert writer.state is WriterState.RUNNING
        with pytest.raises(RuntimeError, match="runs once"):
            await writer.run()
        assert (await writer.submit(Batch(events=[ev("a")]))).appended == 1
        writer.close()
        assert writer.state is WriterState.CLOSING
        with pytest.raises(WriterClosed):
            await writer.submit(Batch(events=[ev("b")]))
        with anyio.fail_after(10):
            await writer.finished.wait()
        assert writer.state is WriterState.CLOSED
        writer.close()  # closing twice does nothing
        assert writer.state is WriterState.CLOSED


def sqlite_memory() -> int:
    """Bytes SQLite holds in this process (its own count: page caches, compiled statements)."""
    lib = ctypes.CDLL(ctypes.util.find_library("sqlite3"))
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return int(lib.sqlite3_memory_used())


async def test_commit_groups_of_every_size_do_not_fill_memory_with_compiled_statements(
        tmp_path: Path) -> None:
    """A multi-row INSERT is a statement text of its own for each number of rows, and
    Python's sqlite3 keeps the last 128 it compiled: groups of ever-changing sizes (a fast
    source filling its window) held tens of MB of compiled statements that never went."""
    if not ctypes.util.find_library("sqlite3"):
        pytest.skip("SQLite is linked statically here: its memory count is not reachable")
    async with open_store(tmp_path / "feed.db", cache=Size(256 * 1024)) as s:
        await s.writer.submit(Batch(source="s", events=[ev("warm")]))
        before = sqlite_memory()
        if before == 0:
            pytest.skip("SQLite keeps no memory count here (SQLITE_DEFAULT_MEMSTATUS=0)")
        for size in range(1, 161):  # one commit per group: each submit waits for its own
            done = await s.writer.submit(Batch(source="s", events=[ev(f"{size}.{i}") for i in range(size)]))
            assert done.appended == size
        grown = (sqlite_memory() - before) / 2**20
    # 160 sizes used to leave 128 statements of 33-160 rows compiled: 17.9 MB measured.
    assert grown < 4, f"SQLite's memory grew {grown:.1f} MB over 12,880 events in 160 commits"


async def test_record_tenants_kept_since_schema_4_win_over_the_rows_kept_before(tmp_path: Path) -> None:
    """Upgraded from schema 3, a feed holds Asteria's record tenants in `entity_state`;
    from then on they are written to `record_tenants`. A deletion finds a record in either
    (nothing was copied), and a record that moved since is placed where it moved to."""
    path = tmp_path / "feed.db"
    db = sqlite3.connect(path)
    for step in MIGRATIONS[:3]:
        for stmt in step:
            db.execute(stmt)
    db.execute("PRAGMA user_version=3")
    db.executemany("INSERT INTO entity_state (source, tenant, entity, key, version, data, updated)"
                   " VALUES ('gw', ?, 'party', ?, 'v1', NULL, 10)", [("t-old", "stayed"), ("t-old", "moved")])
    db.commit()
    db.close()
    async with open_store(path) as s:
        await s.writer.submit(Batch(source="gw", record_tenants=[
            RecordTenant("party", "moved", "t-new"), RecordTenant("party", "new", "t-new")]))
        found = await s.reader.entity_tenants("gw", "party", ["stayed", "moved", "new", "never"])
        assert found == {"stayed": "t-old", "moved": "t-new", "new": "t-new"}
        assert await s.reader.entity_tenants("other", "party", ["moved"]) == {}


async def test_upgrading_to_schema_2_places_the_records_asteria_already_sent(tmp_path: Path) -> None:
    """A feed written before Asteria kept its records' tenants: the migration fills them from
    the Asteria events already there (the last tenant of each record wins), and adds the
    index a deletion's lookup uses."""
    path = tmp_path / "feed.db"
    db = sqlite3.connect(path)
    for stmt in MIGRATIONS[0]:
        db.execute(stmt)
    db.execute("PRAGMA user_version=1")
    rows = [  # seq, source, provider, tenant, entity, key, version, received
        (1, "gw", "asteria", "5eafe37ddc7a940058c76479", "party", "5ef5add7c3cd659588c53242", "v1", 10),
        (2, "gw", "asteria", "5eafe37ddc7a940058c7647a", "party", "5ef5add7c3cd659588c53242", "v2", 20),
        (3, "gw", "asteria", "", "invoice", "5ef5adfcc3cd659588c53295", "deleted:", 30),
        (4, "acme", "synthetic", "acme", "invoice", "inv-1", "v1", 40),
    ]
    db.executemany("INSERT INTO events (seq, id, source, provider, tenant, entity, op, key, version, time,"
                   " received, data) VALUES (?, randomblob(16), ?, ?, ?, ?, 'updated', ?, ?, 't', ?, 'null')",
                   rows)
    db.commit()
    db.close()
    writer_db = await connect(StoreConfig(path=str(path)))  # the daemon's writer migrates
    await writer_db.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (4,)
        assert db.execute("SELECT source, tenant, entity, key, version FROM entity_state ORDER BY updated"
                          ).fetchall() == [
            ("gw", "5eafe37ddc7a940058c76479", "party", "5ef5add7c3cd659588c53242", "v1"),
            ("gw", "5eafe37ddc7a940058c7647a", "party", "5ef5add7c3cd659588c53242", "v2")]
        plan = db.execute("EXPLAIN QUERY PLAN SELECT tenant FROM entity_state WHERE source = 'gw' AND"
                          " entity = 'party' AND key = 'k'").fetchall()
        assert "entity_state_key" in str(plan)
    finally:
        db.close()
    async with open_store(path) as s:
        found = await s.reader.entity_tenants("gw", "party", ["5ef5add7c3cd659588c53242", "nope"])
        assert found == {"5ef5add7c3cd659588c53242": "5eafe37ddc7a940058c7647a"}  # the last one
