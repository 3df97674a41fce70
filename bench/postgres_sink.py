"""The `postgres` sink: a prefilled feed drained by a real `streamd run` into PostgreSQL,
and the same load done the ways a user would otherwise do it.

    python bench/postgres_sink.py                  # 200,000 events; 1,000,000 rows already there
    python bench/postgres_sink.py --events 50000 --prefill-rows 200000 --alt-events 20000 --repeat 1
    python bench/postgres_sink.py --singer-target /tmp/singer/bin/target-postgres

PostgreSQL is the machine's own (Debian's `postgresql` package): a cluster made by
`initdb` for this run in a temporary directory (as the `postgres` user when run as root),
on a loopback port, with its defaults for durability: `fsync = on`, `synchronous_commit =
on` (both printed from the server). streamd runs as its own process (`synchronous =
"full"`), with the postgres sink added to a copy of the prefilled feed (bench/http_sink.py's,
cached in bench/out/); the clock runs from its READY to PostgreSQL's `sink_offsets`
holding the feed's head.

Rows:
- the sink into empty tables;
- the sink into tables already holding `--prefill-rows` events of another feed (random
  ids, invoices of the same size) and a third as many entities; each run's rows are
  deleted (and vacuumed) after it, so every run starts from the same million;
- Singer's target-postgres (MeltanoLabs, `pip install meltanolabs-target-postgres` in a
  venv of its own; `use_copy` on, its fastest): the same events as RECORD messages of two
  streams, `events` (key `id`) and `entities` (key provider, tenant, entity, key), read
  from a file written before the clock starts; the clock is the target's process, start
  to exit. Skipped without `--singer-target` or `target-postgres` on PATH;
- a plain INSERT loop with psycopg 3 (`pip install "psycopg[binary]"`): per event one
  INSERT … ON CONFLICT DO NOTHING into events and one upsert into entities, a commit
  every 500 events. Skipped without psycopg.
The alternatives load `--alt-events` of the feed's events (they are slower); the ratio
column is the sink's events/s on empty tables over theirs. Prints a table (median of
--repeat runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import free_port, start_streamd, stop_streamd, wait
from http_sink import CONFIG, prefilled


class Postgres:
    """A throwaway cluster: initdb, pg_ctl, and psql as its superuser (trust on loopback)."""

    def __init__(self) -> None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not found and not shutil.which("initdb"):
            raise SystemExit("PostgreSQL's server binaries are not installed (apt-get install postgresql)")
        self.bin = found[-1].parent if found else Path(shutil.which("initdb") or "").parent
        self.user = "postgres" if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="streamd-bench-pg-"))
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.data = self.root / "data"
        self.port = free_port()
        self.as_server([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                        "--locale=C.UTF-8", "--auth=trust"])
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = ''\n"
                       "max_wal_size = 4GB\n")
        self.as_server([str(self.bin / "pg_ctl"), "start", "-D", str(self.data), "-l",
                        str(self.root / "log"), "-w"])
        self.sql("CREATE DATABASE bench")

    def as_server(self, cmd: list[str]) -> None:
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "LC_ALL": "C.UTF-8"})

    def sql(self, sql: str, db: str = "postgres") -> str:
        out = subprocess.run([str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h",
                              "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db, "-c", sql],
                             check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def dsn(self, db: str = "bench") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def close(self) -> None:
        try:
            self.as_server([str(self.bin / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w"])
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def migrate(dsn: str) -> None:
    """streamd's own tables, as the sink makes them."""
    import asyncpg

    from streamd.sinks.postgres.schema import migrate as run

    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await run(conn, "streamd")
        finally:
            await conn.close()

    asyncio.run(go())


def prefill_rows(pg: Postgres, feed: Path, rows: int) -> None:
    """`rows` events of another feed (random ids, the feed's own invoice as data) and a
    third as many entities, then VACUUM ANALYZE and CHECKPOINT."""
    db = sqlite3.connect(feed)
    row = db.execute("SELECT data FROM events WHERE entity = 'invoice' LIMIT 1").fetchone()
    data = bytes(row[0]).decode()
    db.close()
    migrate(pg.dsn())
    lit = "'" + data.replace("'", "''") + "'"
    keys = rows // 3
    ce = (f"jsonb_build_object('specversion', '1.0', 'id', md5('old' || i), 'source', '/synthetic/old', "
          f"'type', 'invoice.updated', 'subject', 'invoice/old-' || (i % {keys}), "
          f"'time', '2025-01-01T00:00:00.000Z', 'datacontenttype', 'application/json', 'seq', i, "
          f"'provider', 'synthetic', 'tenant', 't' || (i % 100), 'entity', 'invoice', 'data', {lit}::jsonb)")
    t0 = time.monotonic()
    pg.sql(f"INSERT INTO streamd.events SELECT md5('old' || i), i, "
           f"timestamptz '2025-01-01' + i * interval '1s', "
           f"'invoice.updated', 'synthetic', 'old', 't' || (i % 100), 'invoice', 'old-' || (i % {keys}), "
           f"'updated', {lit}::jsonb, {ce} FROM generate_series(1, {rows}) i", "bench")
    pg.sql("INSERT INTO streamd.entities SELECT DISTINCT ON (provider, tenant, entity, key) "
           "provider, tenant, "
           "entity, key, seq, id, false, data, time, now() FROM streamd.events "
           "ORDER BY provider, tenant, entity, key, seq DESC", "bench")
    pg.sql("VACUUM ANALYZE", "bench")
    pg.sql("CHECKPOINT", "bench")
    size = pg.sql("SELECT pg_size_pretty(pg_database_size('bench'))")
    print(f"# prefilled {rows:,} events in PostgreSQL in {time.monotonic() - t0:.0f}s ({size})",
          file=sys.stderr)


def clear_run(pg: Postgres) -> None:
    """Take a run's rows out again, so the next run finds the same tables."""
    pg.sql("DELETE FROM streamd.events WHERE source = 'gen'; DELETE FROM streamd.entities WHERE tenant IN "
           "('acme', 'globex', 'initech'); DELETE FROM streamd.sink_offsets", "bench")
    pg.sql("VACUUM ANALYZE streamd.events, streamd.entities", "bench")
    pg.sql("CHECKPOINT", "bench")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU a process has used (0 when there is none: not connected yet)."""
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend_pids(pg: Postgres) -> set[int]:
    """The PostgreSQL backends serving the sink's connections (`streamd sink pg`, `… #2`, …)."""
    out = pg.sql("SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'streamd sink pg%'", "bench")
    return {int(p) for p in out.split()}


def sink_run(pg: Postgres, feed: Path, events: int, want: int,
             connections: int | None = None) -> tuple[float, str, float, float]:
    """events/s from READY until PostgreSQL's offset is the feed's head; the batch size at the
    end; CPU µs per event of the sink's PostgreSQL backends and of streamd's process meanwhile
    (what each costs, whatever else the machine runs)."""
    with tempfile.TemporaryDirectory(prefix="streamd-bench-pg-") as tmp:
        work, port = Path(tmp), free_port()
        shutil.copy(feed, work / "feed.db")
        os.sync()  # the copy's writeback must not compete with the run's fsyncs
        sink = f'[sinks.pg]\ntype = "postgres"\ndsn = "{pg.dsn()}"\nsslmode = "disable"\n'
        if connections is not None:
            sink += f"connections = {connections}\n"
        proc = start_streamd(work, CONFIG.format(port=port, events=events, sink=sink), port)
        try:
            t0 = time.monotonic()
            ours0 = cpu_seconds(proc.pid)
            backends: set[int] = set()

            def done() -> bool:
                try:
                    backends.update(backend_pids(pg))
                    at = pg.sql("SELECT seq FROM streamd.sink_offsets WHERE sink = 'pg'", "bench")
                    return at == str(want)
                except subprocess.CalledProcessError:
                    return False  # the tables are not there yet

            wait(done, 900, "the sink to load every event")
            elapsed = time.monotonic() - t0
            theirs, ours = sum(cpu_seconds(p) for p in backends), cpu_seconds(proc.pid) - ours0
            import httpx

            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            size = next((line.rsplit(" ", 1)[1] for line in metrics.splitlines()
                         if line.startswith("streamd_sink_postgres_batch_size_events{")), "?")
        finally:
            stop_streamd(proc)
    rows = int(pg.sql("SELECT count(*) FROM streamd.events WHERE source = 'gen'", "bench"))
    assert rows == want, f"{rows} rows loaded, {want} expected"
    return want / elapsed, size, theirs / want * 1e6, ours / want * 1e6


def feed_lines(feed: Path, n: int) -> list[tuple[Any, ...]]:
    """The feed's first n events: their columns (the id as hex, data as bytes) and the line
    the sinks send, as (seq, id, source, provider, tenant, entity, op, key, time, data, line)."""
    from streamd.model import cloudevent, render_line

    db = sqlite3.connect(feed)
    rows = db.execute("SELECT seq, id, source, provider, tenant, entity, op, key, time, data FROM events "
                      "ORDER BY seq LIMIT ?", (n,)).fetchall()
    db.close()
    out = []
    for seq, idb, source, provider, tenant, entity, op, key, t, data in rows:
        ident = bytes(idb).hex()
        line = render_line(cloudevent(seq=seq, id=ident, source=source, provider=provider, tenant=tenant,
                                      entity=entity, op=op, key=key, time=t, data=bytes(data)))
        out.append((seq, ident, source, provider, tenant, entity, op, key, t, bytes(data), line))
    return out


def feed_rows(feed: Path, n: int) -> list[dict[str, Any]]:
    return [{"id": ident, "seq": seq, "time": t, "type": f"{entity}.{op}", "provider": provider,
             "source": source, "tenant": tenant, "entity": entity, "key": key, "op": op,
             "data": json.loads(data), "cloudevent": json.loads(line)}
            for seq, ident, source, provider, tenant, entity, op, key, t, data, line in feed_lines(feed, n)]


_S = {"type": "string"}
_O = {"type": ["object", "null"]}


def singer_run(pg: Postgres, target: str, events: list[dict[str, Any]], db: str) -> float:
    pg.sql(f"DROP DATABASE IF EXISTS {db}")
    pg.sql(f"CREATE DATABASE {db}")
    with tempfile.TemporaryDirectory(prefix="streamd-bench-singer-") as tmp:
        messages = Path(tmp) / "messages.jsonl"
        with open(messages, "w") as out:
            ev_props = {k: _S for k in ("id", "type", "provider", "source", "tenant", "entity", "key", "op")}
            ev_props |= {"seq": {"type": "integer"}, "time": {"type": "string", "format": "date-time"},
                         "data": _O, "cloudevent": _O}
            out.write(json.dumps({"type": "SCHEMA", "stream": "events", "key_properties": ["id"],
                                  "schema": {"type": "object", "properties": ev_props}}) + "\n")
            en_props = {k: _S for k in ("provider", "tenant", "entity", "key", "event_id")}
            en_props |= {"seq": {"type": "integer"}, "deleted": {"type": "boolean"}, "data": _O,
                         "time": {"type": "string", "format": "date-time"}}
            out.write(json.dumps({"type": "SCHEMA", "stream": "entities",
                                  "key_properties": ["provider", "tenant", "entity", "key"],
                                  "schema": {"type": "object", "properties": en_props}}) + "\n")
            for i, e in enumerate(events, 1):
                out.write(json.dumps({"type": "RECORD", "stream": "events", "record": e}) + "\n")
                out.write(json.dumps({"type": "RECORD", "stream": "entities", "record": {
                    "provider": e["provider"], "tenant": e["tenant"], "entity": e["entity"], "key": e["key"],
                    "event_id": e["id"], "seq": e["seq"], "deleted": e["op"] == "deleted", "data": e["data"],
                    "time": e["time"]}}) + "\n")
                if i % 10_000 == 0:
                    out.write(json.dumps({"type": "STATE", "value": {"seq": e["seq"]}}) + "\n")
            out.write(json.dumps({"type": "STATE", "value": {"seq": events[-1]["seq"]}}) + "\n")
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps({"host": "127.0.0.1", "port": pg.port, "user": "postgres",
                                      "password": "",
                                      "database": db, "default_target_schema": "singer",
                                      "use_copy": True, "add_record_metadata": False,
                                      "activate_version": False}))
        os.sync()
        t0 = time.monotonic()
        with open(messages, "rb") as stdin:
            done = subprocess.run([target, "--config", str(config)], stdin=stdin, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        if done.returncode != 0:
            raise SystemExit(f"target-postgres exited {done.returncode}: {done.stderr.decode()[-3000:]}")
        elapsed = time.monotonic() - t0
    rows = int(pg.sql("SELECT count(*) FROM singer.events", db))
    assert rows == len(events), f"target-postgres loaded {rows} of {len(events)} events"
    return len(events) / elapsed


def psycopg_run(pg: Postgres, events: list[dict[str, Any]], db: str) -> float:
    import psycopg
    from psycopg.types.json import Jsonb

    pg.sql(f"DROP DATABASE IF EXISTS {db}")
    pg.sql(f"CREATE DATABASE {db}")
    migrate(pg.dsn(db))
    t0 = time.monotonic()
    with psycopg.connect(pg.dsn(db)) as conn:
        for i, e in enumerate(events, 1):
            conn.execute(
                "INSERT INTO streamd.events (id, seq, time, type, provider, source, tenant, entity, key, op, "
                "data, cloudevent) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (id) DO NOTHING",
                (e["id"], e["seq"], e["time"], e["type"], e["provider"], e["source"], e["tenant"],
                 e["entity"], e["key"], e["op"], Jsonb(e["data"]), Jsonb(e["cloudevent"])))
            conn.execute(
                "INSERT INTO streamd.entities AS x VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now()) "
                "ON CONFLICT (provider, tenant, entity, key) DO UPDATE SET seq = excluded.seq, "
                "event_id = excluded.event_id, deleted = excluded.deleted, data = excluded.data, "
                "time = excluded.time, updated_at = excluded.updated_at WHERE x.seq < excluded.seq",
                (e["provider"], e["tenant"], e["entity"], e["key"], e["seq"], e["id"], e["op"] == "deleted",
                 Jsonb(e["data"]), e["time"]))
            if i % 500 == 0:
                conn.commit()
        conn.commit()
    return len(events) / (time.monotonic() - t0)


def alternatives(pg: Postgres, alt: list[dict[str, Any]], args: argparse.Namespace,
                 results: list[tuple[str, int, list[float], str]]) -> None:
    """The same load done the ways a user would otherwise do it."""
    if args.singer_target:
        runs = [singer_run(pg, args.singer_target, alt, "singer") for _ in range(args.repeat)]
        results.append(("Singer target-postgres (use_copy)", len(alt), runs, ""))
    else:
        print("# no target-postgres: pass --singer-target", file=sys.stderr)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        print("# no psycopg: pip install 'psycopg[binary]' for the INSERT loop", file=sys.stderr)
    else:
        runs = [psycopg_run(pg, alt, "loop") for _ in range(args.repeat)]
        results.append(("INSERT loop, psycopg 3, commit per 500", len(alt), runs, ""))


def _cpu(runs: list[tuple[float, float]]) -> str:
    return (f"CPU per event: PostgreSQL backend {statistics.median(r[0] for r in runs):.0f} µs, "
            f"streamd {statistics.median(r[1] for r in runs):.0f} µs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--events", type=int, default=200_000, help="events in the feed")
    ap.add_argument("--prefill-rows", type=int, default=1_000_000, help="rows already in events")
    ap.add_argument("--alt-events", type=int, default=50_000, help="events the alternatives load")
    ap.add_argument("--singer-target", default=shutil.which("target-postgres"),
                    help="target-postgres executable (default: on PATH)")
    ap.add_argument("--repeat", type=int, default=3, help="runs (median reported)")
    ap.add_argument("--connections", type=int, default=None,
                    help="the sink's connections (default: the sink's default)")
    ap.add_argument("--skip-full", action="store_true", help="only the empty tables")
    args = ap.parse_args()
    feed = prefilled(args.events)
    db = sqlite3.connect(feed)
    want = int(db.execute("SELECT count(*) FROM events").fetchone()[0])
    db.close()
    pg = Postgres()
    results: list[tuple[str, int, list[float], str]] = []
    try:
        settings = pg.sql("SELECT string_agg(name || ' = ' || setting, ', ' ORDER BY name) FROM pg_settings "
                          "WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'server_version')")
        empty, sizes, cpu = [], [], []
        for _ in range(args.repeat):
            pg.sql("DROP DATABASE bench")
            pg.sql("CREATE DATABASE bench")
            rate, size, theirs, ours = sink_run(pg, feed, args.events, want, args.connections)
            empty.append(rate)
            sizes.append(size)
            cpu.append((theirs, ours))
        results.append(("streamd postgres sink, empty tables", want, empty,
                        f"batch size {sizes[-1]}; {_cpu(cpu)}"))
        if not args.skip_full:
            pg.sql("DROP DATABASE bench")
            pg.sql("CREATE DATABASE bench")
            prefill_rows(pg, feed, args.prefill_rows)
            full, cpu = [], []
            for _ in range(args.repeat):
                rate, size, theirs, ours = sink_run(pg, feed, args.events, want, args.connections)
                full.append(rate)
                cpu.append((theirs, ours))
                clear_run(pg)
            results.append((f"streamd postgres sink, {args.prefill_rows:,} rows already there", want, full,
                            f"batch size {size}; {_cpu(cpu)}"))
        alt = feed_rows(feed, args.alt_events) if args.alt_events else []
        if alt:
            alternatives(pg, alt, args, results)
    finally:
        pg.close()
    base = statistics.median(empty)
    print(f"# postgres sink: a prefilled feed loaded by streamd into PostgreSQL on loopback ({settings}); "
          f"sink connections = {args.connections or 'default'}; "
          f"streamd synchronous = \"full\"; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} "
          f"at the end; median of {args.repeat} runs")
    print(f"| {'how':<52} | {'events':>8} | {'events/s':>9} | {'sink / it':>9} | {'runs':<26} | note |")
    print(f"|{'-' * 54}|{'-' * 9}:|{'-' * 10}:|{'-' * 10}:|{'-' * 28}|------|")
    for label, n, runs, note in results:
        rate = statistics.median(runs)
        print(f"| {label:<52} | {n:>8,} | {rate:>9,.0f} | {base / rate:>8.1f}x | "
              f"{', '.join(f'{r:,.0f}' for r in runs):<26} | {note} |")


if __name__ == "__main__":
    main()
