"""The postgres sink against a real PostgreSQL (tests/postgres_server.py), in the daemon:
the tables and what lands in them, the offset PostgreSQL holds (resumed from, reset by
`streamd sink reset`, refused from another feed), the batch size, a batch in parts over
several connections committing in feed order, refused rows to dead
letters, an older event never over a newer state, the server down, schema drift, a
wrong password, an untrusted certificate, and the config's checks; and the drill:
SIGKILLs and a PostgreSQL crash while 20,000 records load."""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
import trustme

from streamd.config import Config
from streamd.configfile import parse
from streamd.errors import ConfigError, Permanent
from streamd.health import State
from streamd.sinks.postgres.sink import BatchSizer, PostgresSink
from streamd.store import FeedEvent

from .conftest import InProcess, streamd_cli, until, wait_for
from .postgres_server import ADMIN_PASSWORD, PASSWORD, PostgresServer, Template, require_bindir

pytestmark = pytest.mark.anyio
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
HOOK_TOKEN = "hook-token-for-the-synthetic-webhook"


@pytest.fixture(scope="session")
def pg_template() -> Iterator[Template]:
    template = Template(require_bindir())
    try:
        yield template
    finally:
        template.close()


@pytest.fixture
def pg(pg_template: Template, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PostgresServer]:
    """A fresh PostgreSQL of this test's own, started; the sink's password in the environment."""
    monkeypatch.setenv("STREAMD_TEST_PG_PASSWORD", PASSWORD)
    server = pg_template.server(tmp_path / "pg")
    try:
        yield server
    finally:
        server.close()


# ---------------------------------------------------------------- helpers

def config(tmp_path: Path, pg: PostgresServer, *, count: int = 0, sink: bool = True, seed: int = 7,
           **keys: Any) -> Config:
    """The synthetic source (generating `count` records at full speed, and a webhook) and
    the sink `out` into `pg`."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "hook.token").write_text(HOOK_TOKEN)
    keys.setdefault("backoff", {"min": "10ms", "max": "200ms"})
    return parse(f"""
[store]
path = "feed.db"
commit_linger = "1ms"
[http]
listen = "127.0.0.1:0"
[sources.gen]
provider = "synthetic"
tenants = ["acme", "globex"]
generate = {"true" if count else "false"}
rate = 0
count = {count}
batch = 200
seed = {seed}
webhook = true
token = "file:hook.token"
{pg.sink_toml("out", **keys) if sink else ""}
""", base_dir=tmp_path)


class Running(InProcess):
    async def post(self, *records: bytes | dict[str, Any]) -> None:
        body = b"[" + b",".join(r if isinstance(r, bytes) else json.dumps(r).encode()
                                for r in records) + b"]"
        r = await self.http.post("/webhooks/gen", content=body, headers={
            "content-type": "application/json", "authorization": f"Bearer {HOOK_TOKEN}"})
        assert r.status_code == 200, r.text

    def head(self) -> int:
        return int(self.rows("SELECT coalesce(max(seq), 0) FROM events")[0][0])

    async def readyz(self) -> str:
        return (await self.http.get("/readyz")).text

    def component(self) -> Any:
        return self.daemon.health.components[("sink", "out")]


def pg_offset(pg: PostgresServer, schema: str = "streamd") -> int:
    try:
        return int(pg.value(f"SELECT seq FROM {schema}.sink_offsets WHERE sink = 'out'") or 0)
    except Exception:  # the tables are not there yet
        return 0


async def loaded(d: Running, pg: PostgresServer, upto: int | None = None, seconds: float = 30) -> None:
    """Wait until PostgreSQL's offset for `out` reached `upto` (default: the feed's head)."""
    await until(lambda: pg_offset(pg) >= (upto if upto is not None else max(d.head(), 1)), seconds,
                "the sink's offset in PostgreSQL")


def feed(db: Path) -> list[dict[str, Any]]:
    """Every event in the feed, as the sink should have loaded it."""
    from streamd.model import cloudevent, render_line

    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT seq, id, source, provider, tenant, entity, op, key, time, data "
                           "FROM events ORDER BY seq").fetchall()
    finally:
        con.close()
    out = []
    for seq, idb, source, provider, tenant, entity, op, key, time, data in rows:
        ident = bytes(idb).hex()
        line = render_line(cloudevent(seq=seq, id=ident, source=source, provider=provider, tenant=tenant,
                                      entity=entity, op=op, key=key, time=time, data=bytes(data)))
        out.append({"id": ident, "seq": seq, "source": source, "provider": provider, "tenant": tenant,
                    "entity": entity, "op": op, "key": key, "time": time, "type": f"{entity}.{op}",
                    "data": json.loads(data), "cloudevent": json.loads(line)})
    return out


def last_per_entity(events: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    last: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for e in events:
        last[(e["provider"], e["tenant"], e["entity"], e["key"])] = e
    return last


def assert_loaded_exactly(pg: PostgresServer, db: Path, schema: str = "streamd") -> list[dict[str, Any]]:
    """Every feed event in `events` once, as the feed has it; `entities` the last event of
    each entity. Returns the feed."""
    events = feed(db)
    rows = pg.rows(f"SELECT id, seq, source, provider, tenant, entity, op, key, type, data, cloudevent, "
                   f"to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS time "
                   f"FROM {schema}.events ORDER BY seq")
    assert len(rows) == len(events)
    assert [r["id"] for r in rows] == [e["id"] for e in events]
    assert rows == [{k: e[k] for k in rows[0]} for e in events] if rows else True
    ents = pg.rows(f"SELECT provider, tenant, entity, key, seq, event_id, deleted, data "
                   f"FROM {schema}.entities")
    want = last_per_entity(events)
    assert len(ents) == len(want)
    for r in ents:
        e = want[(r["provider"], r["tenant"], r["entity"], r["key"])]
        assert (r["seq"], r["event_id"], r["deleted"], r["data"]) == (e["seq"], e["id"], e["op"] == "deleted",
                                                                     e["data"])
    return events


def invoice(key: str, *, version: str, status: str = "open", total: str = "125.00", unpaid: str | None = None,
            tenant: str = "acme", op: str = "created", due: str = "2099-02-01") -> dict[str, Any]:
    """A synthetic webhook record of one invoice."""
    return {"tenant": tenant, "entity": "invoice", "op": op, "key": key, "version": version, "time": version,
            "data": {"direction": "receivable", "number": key.upper(), "status": status, "currency": "EUR",
                     "total": total, "unpaid": total if unpaid is None else unpaid, "due": due,
                     "party": {"key": "p1", "name": "Nordlys AB"}}}


def stamp(second: int) -> str:
    return f"2026-01-01T00:00:{second:02d}.000Z"


# ---------------------------------------------------------------- what lands where

async def test_loads_every_event_and_the_current_state_of_every_entity(
        tmp_path: Path, pg: PostgresServer) -> None:
    cfg = config(tmp_path, pg, count=1500)
    async with Running(cfg) as d:
        await until(lambda: d.head() == 1500, 30, "the generator")
        await loaded(d, pg)
    events = assert_loaded_exactly(pg, tmp_path / "feed.db")
    assert {e["op"] for e in events} == {"created", "updated"}  # updates replaced earlier states
    assert len(last_per_entity(events)) < len(events)
    # Money stays the feed's decimal strings, exactly.
    totals = pg.rows("SELECT data->'total' AS total, jsonb_typeof(data->'total') AS kind FROM "
                     "streamd.events WHERE entity = 'invoice' ORDER BY seq LIMIT 5")
    assert {t["kind"] for t in totals} == {"string"}
    invoices = [e for e in events if e["entity"] == "invoice"]
    assert [t["total"] for t in totals] == [e["data"]["total"] for e in invoices][:5]
    # The tables are versioned, and indexed for the queries users make.
    assert pg.value("SELECT max(version) FROM streamd.schema_migrations") == 2
    indexes = {r["indexname"] for r in pg.rows("SELECT indexname FROM pg_indexes "
                                               "WHERE schemaname = 'streamd'")}
    assert {"events_entity", "events_tenant_time", "events_seq", "entities_tenant"} <= indexes


async def test_the_views_list_open_invoices_per_tenant(tmp_path: Path, pg: PostgresServer) -> None:
    cfg = config(tmp_path, pg)
    async with Running(cfg) as d:
        await d.post(invoice("a1", version=stamp(1), total="100.10"),
                     invoice("a2", version=stamp(2), total="50.00", status="partially_paid", unpaid="20.05"),
                     invoice("a3", version=stamp(3), total="70.00", status="paid", unpaid="0.00"),
                     invoice("a4", version=stamp(4), total="9.99"),
                     invoice("g1", version=stamp(5), total="10.00", tenant="globex", due="2025-01-01"))
        # a1 paid, a4 deleted: neither is open any more.
        await d.post(invoice("a1", version=stamp(6), op="updated", status="paid", unpaid="0.00",
                             total="100.10"),
                     {"tenant": "acme", "entity": "invoice", "op": "deleted", "key": "a4",
                      "version": stamp(7), "time": stamp(7)})
        await loaded(d, pg)
    assert pg.rows("SELECT tenant, key, number, party, unpaid::text AS unpaid, due::text AS due "
                   "FROM streamd.open_invoices ORDER BY tenant, key") == [
        {"tenant": "acme", "key": "a2", "number": "A2", "party": "Nordlys AB", "unpaid": "20.05",
         "due": "2099-02-01"},
        {"tenant": "globex", "key": "g1", "number": "G1", "party": "Nordlys AB", "unpaid": "10.00",
         "due": "2025-01-01"}]
    assert pg.rows("SELECT tenant, currency, invoices, unpaid::text AS unpaid, overdue FROM "
                   "streamd.open_invoices_per_tenant ORDER BY tenant") == [
        {"tenant": "acme", "currency": "EUR", "invoices": 1, "unpaid": "20.05", "overdue": 0},
        {"tenant": "globex", "currency": "EUR", "invoices": 1, "unpaid": "10.00", "overdue": 1}]
    deleted = pg.rows("SELECT deleted, data FROM streamd.entities WHERE key = 'a4'")
    assert deleted == [{"deleted": True, "data": None}]  # JSON null: deleted, last state not sent


# ---------------------------------------------------------------- the offset PostgreSQL holds

async def test_on_start_it_resumes_after_the_offset_postgresql_holds(
        tmp_path: Path, pg: PostgresServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamd")
    cfg = config(tmp_path, pg, count=600)
    async with Running(cfg) as d:
        await until(lambda: d.head() == 600, 30, "the generator")
        await loaded(d, pg)
    # As a crash between PostgreSQL's commit and the feed's offset commit leaves it: the
    # feed's copy of the offset behind what PostgreSQL holds.
    con = sqlite3.connect(tmp_path / "feed.db")
    with con:
        con.execute("UPDATE sink_offsets SET seq = 100 WHERE sink = 'out'")
    con.close()
    async with Running(cfg) as d:
        dispatcher = d.daemon.dispatchers["out"]
        await until(lambda: d.component().state is State.OK and dispatcher.offset == 600, 20, "the resume")
        assert await d.metric('streamd_sink_events_delivered_total{sink="out"}') == 0
        await until(lambda: d.rows("SELECT seq FROM sink_offsets WHERE sink = 'out'") == [(600,)], 10,
                    "the feed's copy catching up")
    assert "resuming after seq 600, the offset it holds itself (the feed's copy said 100)" in caplog.text
    assert_loaded_exactly(pg, tmp_path / "feed.db")


async def test_sink_reset_moves_the_offset_in_postgresql_too(tmp_path: Path, pg: PostgresServer) -> None:
    cfg = config(tmp_path, pg, count=300)
    async with Running(cfg) as d:
        await until(lambda: d.head() == 300, 30, "the generator")
        await loaded(d, pg)
    pg.execute("TRUNCATE streamd.events, streamd.entities")  # the rows gone, the offset kept
    con = sqlite3.connect(tmp_path / "feed.db")
    with con:  # the in-process daemon's pid is this test's own, alive: as if it had run apart
        con.execute("DELETE FROM meta WHERE key = 'daemon.pid'")
    con.close()
    r = await anyio.to_thread.run_sync(lambda: streamd_cli(
        "sink", "reset", "out", "--to-seq", "0", "--db", str(tmp_path / "feed.db")))
    assert r.returncode == 0, r.stderr
    async with Running(cfg) as d:
        await until(lambda: pg.value("SELECT count(*) FROM streamd.events") == 300, 30, "the reload")
        await loaded(d, pg)
        assert d.rows("SELECT value FROM meta WHERE key = 'sink.out.reset'") == [("",)]  # done once
    assert_loaded_exactly(pg, tmp_path / "feed.db")


async def test_an_offset_written_from_another_feed_is_refused(tmp_path: Path, pg: PostgresServer) -> None:
    first = config(tmp_path / "one", pg, count=300)
    async with Running(first) as d:
        await until(lambda: d.head() == 300, 30, "the generator")
        await loaded(d, pg)
    # Another feed (its own events, other ids) pointed at the same sink in the same schema.
    async with Running(config(tmp_path / "two", pg, count=400, sink=False, seed=8)) as d:
        await until(lambda: d.head() == 400, 30, "the other feed")
    async with Running(config(tmp_path / "two", pg, count=400, seed=8)) as d:
        await until(lambda: "its own offset is seq 300 (event " in d.component().reason, 20, "the refusal")
        assert "but this feed's event at seq 300 is" in d.component().reason
        assert "give this sink its own schema or name" in d.component().reason
        assert await d.metric('streamd_sink_events_delivered_total{sink="out"}') == 0
    # And a feed that is behind what PostgreSQL holds.
    async with Running(config(tmp_path / "three", pg, count=10, seed=9)) as d:
        await until(lambda: "its own offset is seq 300, past this feed's head" in d.component().reason,
                    20, "the refusal")
    assert pg_offset(pg) == 300



async def test_a_second_streamd_with_the_same_sink_name_waits_for_the_first(
        tmp_path: Path, pg: PostgresServer) -> None:
    async with Running(config(tmp_path / "one", pg)) as first:
        await first.post(invoice("a0", version=stamp(0)))
        await loaded(first, pg)
        async with Running(config(tmp_path / "two", pg, seed=8)) as second:
            await until(lambda: "another connection is loading sink out into schema streamd"
                        in second.component().reason, 20, "the second one waiting")
            assert await second.metric('streamd_sink_events_delivered_total{sink="out"}') == 0
    assert pg_offset(pg) == 1

def test_batch_size_grows_while_commits_are_quick_and_shrinks_when_slow() -> None:
    s = BatchSizer(10_000, target=0.5)
    assert s.size == 500
    s.committed(500, 0.1)
    assert s.size == 1000
    s.committed(300, 0.01)  # not a full batch: says nothing about a bigger one
    assert s.size == 1000
    s.committed(1000, 0.3)  # over half the target: big enough
    assert s.size == 1000
    for _ in range(10):
        s.committed(s.size, 0.1)
    assert s.size == 10_000  # batch_max caps it
    s.committed(10_000, 2.0)  # four times the target: a quarter the size
    assert s.size == 2500
    assert not s.split
    s.timed_out()
    assert s.size == 625 and s.split  # the batch that timed out is tried again in pieces
    s.committed(625, 0.1)
    assert not s.split
    for _ in range(10):
        s.timed_out()
    assert s.size == 50
    assert BatchSizer(20).size == 20


async def test_the_dispatcher_reads_batches_of_the_size_the_sink_asks_for(
        tmp_path: Path, pg: PostgresServer) -> None:
    async with Running(config(tmp_path, pg, count=1200, sink=False)) as d:
        await until(lambda: d.head() == 1200, 30, "the generator")
    # A backlog of 1,200 and batch_max 10,000: the sink starts at 500 a batch.
    async with Running(config(tmp_path, pg, count=1200, batch_max=10_000)) as d:
        await loaded(d, pg)
        commits = await d.metric('streamd_sink_postgres_commit_duration_seconds_count{sink="out"}')
        assert commits is not None and commits >= 2  # one read of 1,200 would be one transaction
        assert await d.metric('streamd_sink_postgres_batch_size_events{sink="out"}') in (500, 1000, 2000)
    assert_loaded_exactly(pg, tmp_path / "feed.db")


# ---------------------------------------------------------------- a batch in parts

def feed_events(n: int) -> list[FeedEvent]:
    """n feed events, one invoice each (seq 1..n), as the dispatcher hands them over."""
    out = []
    for i in range(1, n + 1):
        when = (EPOCH + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        data = json.dumps(invoice(f"p{i}", version=when)["data"]).encode()
        out.append(FeedEvent(seq=i, id=f"{i:064x}", source="gen", provider="synthetic", tenant="acme",
                             entity="invoice", op="created", key=f"p{i}", time=when,
                             received_ms=0, data=data))
    return out


def the_sink(tmp_path: Path, pg: PostgresServer, **keys: Any) -> PostgresSink:
    sink = PostgresSink("out", config(tmp_path, pg, **keys).sinks["out"])  # type: ignore[arg-type]
    return sink


async def test_a_batch_loads_in_parts_at_once_and_they_commit_in_feed_order(
        tmp_path: Path, pg: PostgresServer) -> None:
    """Two parts of 500, loaded at once; while the first cannot commit (an entity row it
    upserts is locked), the second waits for it: it commits after the first, never before."""
    import asyncpg

    pg.execute("ALTER SYSTEM SET track_commit_timestamp = on")  # to read the commit order
    pg.stop()
    pg.start()
    sink = the_sink(tmp_path, pg, connections=2)
    events = feed_events(1000)
    await sink.recover()  # the tables
    admin = await asyncpg.connect(pg.dsn(user="postgres"), password=ADMIN_PASSWORD, ssl=False)
    blocker = await asyncpg.connect(pg.dsn(user="postgres"), password=ADMIN_PASSWORD, ssl=False)

    async def stalled() -> bool:
        """The first part waits on the locked row, the second is not running a statement."""
        rows = await admin.fetch("SELECT application_name AS name, state, wait_event_type AS wait "
                                 "FROM pg_stat_activity WHERE application_name LIKE 'streamd sink out%'")
        states = {r["name"]: (r["state"], r["wait"]) for r in rows}
        return (states.get("streamd sink out") == ("active", "Lock")
                and states.get("streamd sink out #2", ("active",))[0] != "active")

    try:
        await blocker.execute("BEGIN")
        await blocker.execute(
            "INSERT INTO streamd.entities VALUES ('synthetic', 'acme', 'invoice', 'p7', 0, 'x', false, "
            "'{}', now(), now())")
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.deliver, events)
            await until(stalled, 30, "the first part waiting on the locked row")
            await blocker.execute("ROLLBACK")
    finally:
        await blocker.close()
        await admin.close()
        await sink.aclose()
    assert pg.value("SELECT count(*) FROM streamd.events") == 1000
    assert pg_offset(pg) == 1000
    # Two transactions, committed in feed order.
    parts = pg.rows("SELECT min(seq) AS first, max(seq) AS last FROM streamd.events GROUP BY xmin "
                    "ORDER BY pg_xact_commit_timestamp(xmin)")
    assert [(p["first"], p["last"]) for p in parts] == [(1, 500), (501, 1000)]


async def test_when_a_part_fails_the_parts_after_it_do_not_commit(tmp_path: Path, pg: PostgresServer) -> None:
    sink = the_sink(tmp_path, pg, connections=4)
    events = feed_events(2000)
    try:
        await sink.recover()
        pg.execute("ALTER TABLE streamd.events ADD CONSTRAINT no_p700 CHECK (key <> 'p700')")
        with pytest.raises(Permanent, match='violates check constraint "no_p700"'):
            await sink.deliver(events)
        # The first part (1-500) may stand with its offset; nothing after the refused row does.
        assert pg.value("SELECT coalesce(max(seq), 0) FROM streamd.events") in (0, 500)
        assert pg_offset(pg) in (0, 500)
        pg.execute("ALTER TABLE streamd.events DROP CONSTRAINT no_p700")
        await sink.deliver(events)  # again, whole: nothing twice
    finally:
        await sink.aclose()
    assert pg.value("SELECT count(*) FROM streamd.events") == 2000
    assert pg.value("SELECT count(*) FROM streamd.entities") == 2000
    assert pg_offset(pg) == 2000


# ---------------------------------------------------------------- refused rows, late events

async def test_a_row_postgresql_refuses_goes_to_dead_letters_and_the_rest_goes_on(
        tmp_path: Path, pg: PostgresServer) -> None:
    cfg = config(tmp_path, pg, max_tries=2)
    async with Running(cfg) as d:
        await d.post(invoice("a0", version=stamp(0)))
        await loaded(d, pg)
        pg.execute("ALTER TABLE streamd.events ADD CONSTRAINT no_x9 CHECK (key <> 'x9')")
        await d.post(*[invoice(f"x{i}", version=stamp(i + 1)) for i in range(20)])
        await loaded(d, pg)
        dead = d.rows("SELECT reason, event_seq, raw FROM dead_letters WHERE origin = 'sink'")
        delivered = await d.metric('streamd_sink_events_delivered_total{sink="out"}')
    assert len(dead) == 1
    reason, seq, raw = dead[0]
    assert 'violates check constraint "no_x9"' in reason and "SQLSTATE 23514" in reason, reason
    assert json.loads(raw)["subject"] == "invoice/x9" and json.loads(raw)["seq"] == seq
    assert delivered == 20
    keys = [r["key"] for r in pg.rows("SELECT key FROM streamd.events ORDER BY seq")]
    assert keys == ["a0"] + [f"x{i}" for i in range(20) if i != 9]
    assert pg.value("SELECT count(*) FROM streamd.entities WHERE key = 'x9'") == 0


async def test_an_older_event_arriving_late_never_overwrites_a_newer_state(
        tmp_path: Path, pg: PostgresServer) -> None:
    cfg = config(tmp_path, pg, max_tries=1)
    async with Running(cfg) as d:
        await d.post(invoice("a0", version=stamp(0)))
        await loaded(d, pg)
        # The first version of inv-1 is refused for now, so it arrives after the second.
        pg.execute("ALTER TABLE streamd.events ADD CONSTRAINT hold CHECK (NOT (key = 'inv-1' AND "
                   "data->>'status' = 'open'))")
        await d.post(invoice("inv-1", version=stamp(1)))
        await d.post(invoice("inv-1", version=stamp(2), op="updated", status="paid", unpaid="0.00"))
        await loaded(d, pg)
        assert len(d.rows("SELECT id FROM dead_letters")) == 1
        pg.execute("ALTER TABLE streamd.events DROP CONSTRAINT hold")
        r = await anyio.to_thread.run_sync(lambda: streamd_cli(
            "dlq", "retry", "--all", "--db", str(tmp_path / "feed.db")))
        assert r.returncode == 0, r.stderr
        await until(lambda: not d.rows("SELECT id FROM dead_letters"), 20, "the dead letter delivered")
    versions = pg.rows("SELECT seq, data->>'status' AS status FROM streamd.events WHERE key = 'inv-1' "
                       "ORDER BY seq")
    assert [v["status"] for v in versions] == ["open", "paid"]
    state = pg.rows("SELECT seq, data->>'status' AS status FROM streamd.entities WHERE key = 'inv-1'")
    assert state == [versions[1]]  # still the newer one
    assert pg_offset(pg) == 3  # and the offset did not move back


# ---------------------------------------------------------------- the server down, drift, TLS

async def test_postgresql_down_is_retried_readyz_says_so_and_the_backlog_waits_on_disk(
        tmp_path: Path, pg: PostgresServer) -> None:
    pg.stop()
    cfg = config(tmp_path, pg, count=400)
    async with Running(cfg) as d:
        await until(lambda: d.head() == 400, 30, "the generator")
        await until(lambda: d.component().state is State.RETRYING, 10, "the sink retrying")
        assert "cannot connect: Connection refused" in d.component().reason
        await until(lambda: d.http.get("/readyz"), 1)
        await until(_not_ready(d, "sink out"), 10, "/readyz failing")
        assert "Connection refused" in await d.readyz()
        assert (await d.metric('streamd_retries_total{component="sink",name="out"}') or 0) > 0
        await until(lambda: d.metric('streamd_sink_lag_events{sink="out"}'), 5, "the lag published")
        assert await d.metric('streamd_sink_lag_events{sink="out"}') == 400  # in the feed, on disk
        await anyio.to_thread.run_sync(pg.start)
        await loaded(d, pg)
        assert (await d.http.get("/readyz")).status_code == 200
        # Restarted while loading: the same again.
        await anyio.to_thread.run_sync(pg.stop, "fast")
        await d.post(*[invoice(f"late{i}", version=stamp(i)) for i in range(5)])
        await until(lambda: d.component().state is State.RETRYING, 10, "the sink retrying")
        await anyio.to_thread.run_sync(pg.start)
        await loaded(d, pg)
    assert_loaded_exactly(pg, tmp_path / "feed.db")


def _not_ready(d: Running, what: str) -> Any:
    async def check() -> bool:
        r = await d.http.get("/readyz")
        return r.status_code == 503 and what in r.text
    return check


async def test_schema_drift_is_named_and_retried_not_a_crash(tmp_path: Path, pg: PostgresServer) -> None:
    cfg = config(tmp_path, pg)
    async with Running(cfg) as d:
        await d.post(invoice("a0", version=stamp(0)))
        await loaded(d, pg)
        pg.execute("ALTER TABLE streamd.entities RENAME COLUMN deleted TO is_deleted")
        await d.post(invoice("a1", version=stamp(1)))
        await until(lambda: "streamd.entities.deleted is missing" in d.component().reason, 20, "the drift")
        assert "the tables differ from what streamd made them" in d.component().reason
        await until(_not_ready(d, "streamd.entities.deleted is missing"), 10, "/readyz naming it")
        before = await d.metric('streamd_retries_total{component="sink",name="out"}') or 0
        await until(lambda: d.metric('streamd_retries_total{component="sink",name="out"}'), 1)
        pg.execute("ALTER TABLE streamd.entities RENAME COLUMN is_deleted TO deleted")  # undone
        await loaded(d, pg)
        assert (await d.metric('streamd_retries_total{component="sink",name="out"}') or 0) >= before
        assert (await d.http.get("/readyz")).status_code == 200
    # Found at start too, each difference named.
    pg.execute("ALTER TABLE streamd.events ALTER COLUMN data TYPE text; "
               "ALTER TABLE streamd.events ADD COLUMN note text NOT NULL DEFAULT ''; "
               "ALTER TABLE streamd.events ALTER COLUMN note DROP DEFAULT")
    async with Running(cfg) as d:
        await until(lambda: "streamd.events.data is text, streamd writes jsonb" in d.component().reason,
                    20, "the drift")
        assert "streamd.events.note is NOT NULL without a default" in d.component().reason
        assert (await d.http.get("/healthz")).status_code == 200  # alive, retrying: no crash loop


async def test_a_schema_of_version_1_is_migrated_to_cheaper_rows_and_indexes(
        tmp_path: Path, pg: PostgresServer) -> None:
    """Version 2 stores `events` rows whole up to 8 kB (no pglz on every insert) and puts
    an entity's key first in its indexes; tables made by version 1 are migrated in place,
    their rows kept."""
    import asyncpg

    from streamd.sinks.postgres.schema import MIGRATIONS

    conn = await asyncpg.connect(pg.dsn(), password=PASSWORD, ssl=False)
    try:  # the tables as the first release made them, with an event in them
        await conn.execute("CREATE SCHEMA streamd; CREATE TABLE streamd.schema_migrations (version integer "
                           "PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now()); "
                           "INSERT INTO streamd.schema_migrations (version) VALUES (1)")
        for stmt in MIGRATIONS[0]:
            await conn.execute(stmt.format(s='"streamd"'))
    finally:
        await conn.close()
    sink = the_sink(tmp_path, pg)
    try:
        await sink.deliver(feed_events(3))
    finally:
        await sink.aclose()
    assert pg.value("SELECT max(version) FROM streamd.schema_migrations") == 2
    assert pg.value("SELECT array_to_string(reloptions, ',') FROM pg_class WHERE oid = "
                    "'streamd.events'::regclass") == "toast_tuple_target=8160"
    # An entity's key first in its indexes.
    defs = {r["indexname"]: r["indexdef"].partition(" USING btree ")[2] for r in pg.rows(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'streamd' AND indexname IN "
        "('events_entity', 'entities_pkey')")}
    assert defs == {"events_entity": "(key, entity, tenant, provider, seq)",
                    "entities_pkey": "(key, entity, tenant, provider)"}
    # An invoice row of about 2.5 kB, stored whole: no compression, nothing moved out.
    big = feed_events(4)[3]
    body = json.loads(big.data)
    body["lines"] = [{"text": f"line {i} " + "x" * 40, "amount": "1.00"} for i in range(20)]
    sink = the_sink(tmp_path, pg)
    try:
        await sink.deliver([msgspec.structs.replace(big, data=json.dumps(body).encode())])
    finally:
        await sink.aclose()
    stored = pg.rows("SELECT pg_column_size(cloudevent) AS stored, octet_length(cloudevent::text) AS text, "
                     "pg_column_compression(cloudevent) AS how FROM streamd.events WHERE seq = 4")[0]
    assert stored["how"] is None and stored["stored"] > 1200, stored
    assert pg.value("SELECT count(*) FROM streamd.events") == 4


async def test_a_schema_from_a_newer_streamd_or_not_from_streamd_is_refused(
        tmp_path: Path, pg: PostgresServer) -> None:
    pg.execute("SET ROLE streamd; CREATE SCHEMA streamd; CREATE TABLE streamd.schema_migrations "
               "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now()); "
               "INSERT INTO streamd.schema_migrations (version) VALUES (1), (2), (3)")
    async with Running(config(tmp_path, pg)) as d:
        await until(lambda: "written by a newer streamd (version 3; this streamd knows up to 2)"
                    in d.component().reason, 20, "the refusal")
    pg.execute("SET ROLE streamd; CREATE SCHEMA theirs; CREATE TABLE theirs.events (id int)")
    async with Running(config(tmp_path, pg, schema="theirs")) as d:
        await until(lambda: "schema theirs holds events but no schema_migrations" in d.component().reason,
                    20, "the refusal")
    assert pg.rows("SELECT column_name FROM information_schema.columns WHERE table_schema = 'theirs'") == [
        {"column_name": "id"}]  # left as it was


async def test_a_wrong_password_is_named_and_never_shown(
        tmp_path: Path, pg: PostgresServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-password-4711"
    monkeypatch.setenv("STREAMD_TEST_PG_PASSWORD", wrong)
    async with Running(config(tmp_path, pg)) as d:
        await until(lambda: "password authentication failed" in d.component().reason, 20, "the refusal")
        assert "streamd@127.0.0.1" in d.component().reason and "check password" in d.component().reason
        shown = (await d.readyz()) + (await d.http.get("/metrics")).text
    assert wrong not in shown + caplog.text


async def test_an_untrusted_certificate_is_named(tmp_path: Path, pg: PostgresServer) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    async with Running(config(tmp_path, pg, sslmode="verify-full", ca=str(other))) as d:
        await until(lambda: "certificate is not trusted" in d.component().reason, 20, "the refusal")
        assert f"sslmode verify-full, checked against ca {other}" in d.component().reason
    # The server's own CA, by name: loads over TLS.
    cfg = config(tmp_path, pg, sslmode="verify-full", ca=str(pg.ca_file), dsn=pg.dsn(host="localhost"))
    async with Running(cfg) as d:
        await d.post(invoice("a0", version=stamp(0)))
        await loaded(d, pg)
        assert pg.rows("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                       "WHERE a.application_name = 'streamd sink out'") == [{"ssl": True}]


# ---------------------------------------------------------------- config

def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse(text)
    return exc.value.problems


def sink(**keys: Any) -> str:
    keys.setdefault("dsn", "postgresql://streamd@db.example.com:5432/feed")
    return "[sinks.pg]\ntype = \"postgres\"\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())


@pytest.mark.parametrize("keys, says", [
    ({"dsn": "postgresql://streamd:hunter2@db.example.com/feed"}, "dsn: must not hold a password"),
    ({"dsn": "postgresql://db.example.com/feed"}, "dsn: name the user"),
    ({"dsn": "postgresql://streamd@db.example.com"}, "dsn: name the database"),
    ({"dsn": "mysql://streamd@db.example.com/feed"}, "dsn: expected postgresql://"),
    ({"dsn": "postgresql://streamd@db.example.com/feed?sslmode=disable"},
     "dsn: parameter sslmode is not taken in the DSN; use the sink's key sslmode"),
    ({"dsn": "postgresql://streamd@db.example.com/feed?password=x"},
     "use the sink's key password or passfile"),
    ({"dsn": "postgresql://streamd@db.example.com/feed?options=-c"},
     "dsn: parameter options is not supported"),
    ({"dsn": "postgresql://streamd@db.example.com:99999/feed"}, "dsn: port '99999' is not a number"),
    ({"password": "hunter2"}, "secrets cannot be written inline"),
    ({"schema": "Not-A-Schema"}, "schema: 'Not-A-Schema' is not a schema name"),
    ({"schema": "pg_catalog"}, "schema: 'pg_catalog' is not a schema name"),
    ({"dsn": "postgresql://streamd@127.0.0.1/feed", "ca": "/etc/hostname"},
     "ca: only used with sslmode verify-ca or verify-full (sslmode is prefer)"),
    ({"sslmode": "verify-full", "ca": "/nonexistent/ca.pem"},
     "ca: /nonexistent/ca.pem is not a readable file"),
    ({"sslmode": "sometimes"}, "sinks.pg.sslmode: invalid enum value 'sometimes'"),
    ({"timeout": "0s"}, "timeout: must be more than 0"),
    ({"connections": 0}, "connections: must be between 1 and 8, got 0"),
    ({"connections": 9}, "connections: must be between 1 and 8, got 9"),
])
def test_config_refuses(keys: dict[str, Any], says: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_PW", "pw")
    found = problems(sink(**keys))
    assert any(says in p for p in found), found
    assert not any("hunter2" in p for p in found)


def test_config_refuses_a_passfile_others_can_read_and_a_password_with_it(tmp_path: Path) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text("*:*:*:streamd:secret\n")
    passfile.chmod(0o644)
    found = problems(sink(passfile=str(passfile)))
    assert any("is readable by others than its owner (mode 0644); chmod 600 it" in p for p in found), found
    passfile.chmod(0o600)
    (tmp_path / "pw").write_text("secret")
    found = problems(sink(passfile=str(passfile), password=f"file:{tmp_path / 'pw'}"))
    assert any("password, passfile: set one of them, not both" in p for p in found), found


def test_sslmode_defaults_to_verify_full_off_this_machine_and_warns_when_weaker() -> None:
    from streamd.sinks.postgres import SPEC
    from streamd.sinks.postgres.config import sslmode

    def cfg(**keys: Any) -> Any:
        return parse(sink(**keys)).sinks["pg"]

    assert sslmode(cfg()) == "verify-full"
    for local in ("127.0.0.1", "localhost", "[::1]:5433"):
        assert sslmode(cfg(dsn=f"postgresql://streamd@{local}/feed")) == "prefer"
    assert sslmode(cfg(dsn="postgresql://streamd@/feed?host=/run/postgresql")) == "prefer"
    assert sslmode(cfg(dsn="postgresql://streamd@127.0.0.1,db.example.com/feed")) == "verify-full"
    assert SPEC.warnings(cfg()) == []
    assert "encrypted, but the server is not verified" in SPEC.warnings(cfg(sslmode="require"))[0]
    assert "may cross the network unencrypted" in SPEC.warnings(cfg(sslmode="disable"))[0]
    assert SPEC.warnings(cfg(dsn="postgresql://streamd@localhost/feed", sslmode="disable")) == []


def test_check_shows_the_password_as_its_reference(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(sink(password="env:PG_SINK_PW"))
    r = streamd_cli("check", "-c", str(tmp_path / "config.toml"), env={"PG_SINK_PW": "hunter2-value"})
    assert r.returncode == 0, r.stderr
    assert "<redacted env:PG_SINK_PW>" in r.stdout and "hunter2-value" not in r.stdout + r.stderr
    (tmp_path / "config.toml").write_text(sink(dsn="postgresql://streamd:hunter2-value@db/feed"))
    r = streamd_cli("check", "-c", str(tmp_path / "config.toml"))
    assert r.returncode == 78 and "dsn: must not hold a password" in r.stderr
    assert "hunter2-value" not in r.stdout + r.stderr


# ---------------------------------------------------------------- the drill

DRILL_RECORDS = 20_000
DRILL = """
[store]
path = "feed.db"
commit_linger = "1ms"
[http]
listen = "127.0.0.1:0"
[sources.gen]
provider = "synthetic"
tenants = ["acme", "globex", "initech"]
rate = 2000
count = {count}
batch = 100
seed = 17
{sink}"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_drill_sigkills_and_a_postgresql_crash_leave_every_event_applied_once(
        tmp_path: Path, pg: PostgresServer, streamd_proc: Any) -> None:
    """20,000 records from the generator into the sink while `streamd run` is SIGKILLed
    five times and PostgreSQL is stopped with `-m immediate` and restarted once. After
    every kill, and at the end: `events` holds seqs 1..offset and nothing past it (a
    batch's rows and its offset commit together); at the end, every feed event once,
    and `entities` the last event of each entity in the feed."""
    rng = random.Random(17)
    sink = pg.sink_toml("out", backoff={"min": "20ms", "max": "300ms"})
    d = streamd_proc(DRILL.format(count=DRILL_RECORDS, sink=sink), env=pg.env())

    def offset() -> int:
        return pg_offset(pg)

    def consistent(what: str) -> int:
        # One statement, one snapshot: it may run while streamd loads.
        row = pg.rows("SELECT (SELECT seq FROM streamd.sink_offsets WHERE sink = 'out') AS at, "
                      "count(*) AS n, coalesce(max(seq), 0) AS top FROM streamd.events")[0]
        assert row["n"] == row["top"] == row["at"], f"{what}: {row}"
        return int(row["at"])

    def loading_past(seq: int, what: str) -> None:
        wait_for(lambda: offset() > seq, 30, what)

    kills, at = 0, 0
    for run in range(6):
        d.start()
        loading_past(at, f"run {run} loading")  # each kill lands while it loads
        if run == 2:  # PostgreSQL crashes under the load, recovers, and the load goes on
            pg.stop("immediate")
            wait_for(lambda: "cannot connect" in d.log(), 30, "the sink noticing")
            pg.start()
            at = consistent("after PostgreSQL's recovery")
            loading_past(at, "loading again after PostgreSQL's recovery")
        threading.Event().wait(rng.uniform(0.05, 0.6))
        d.kill()
        kills += 1
        at = consistent(f"kill {kills}")
    assert at < DRILL_RECORDS, "the drill must kill it while it loads"

    d.start()
    wait_for(lambda: d.query("SELECT value FROM source_state WHERE source = 'gen' AND key = 'next'")
             == [(str(DRILL_RECORDS).encode(),)], 60, "the generator's last record")
    wait_for(lambda: offset() == d.query("SELECT max(seq) FROM events")[0][0], 60, "the last load")
    assert d.terminate() == 0
    events = assert_loaded_exactly(pg, d.db)
    assert len(events) == DRILL_RECORDS
