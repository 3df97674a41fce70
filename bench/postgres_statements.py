"""The postgres sink's statements alone: PostgreSQL's CPU per event, one variant at a time.

    python bench/postgres_statements.py                 # 20,000 events, batches of 4,000, 3 rounds
    python bench/postgres_statements.py --perf current  # and a `perf record` of the backend

What the server spends per event is the postgres sink's ceiling (one backend, one core),
and unlike events/s it hardly moves with the machine's load: the CPU time of the
backend (`/proc/<pid>/stat`) over the batches, per event, and the WAL written. Each
variant loads the same events (the http sink bench's prefilled feed, bench/out/) into
empty tables made by the sink's own migrations, in batches, one transaction each:

- `two-documents`: the first release's statements and tables (version 1): the entity
  and the CloudEvent both sent as JSON (each parsed into jsonb), `events` with
  PostgreSQL's default 2 kB compression threshold, an entity's indexes in the order
  (provider, tenant, entity, key);
- `one-document`: only the CloudEvent sent; `data` taken from its jsonb in SQL;
- `whole-rows`: that, and `events` rows kept whole up to a page;
- `current`: that, and an entity's indexes key first (tables version 2).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from http_sink import prefilled
from postgres_sink import Postgres, cpu_seconds, feed_lines

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamd.sinks.postgres.schema import migrate  # noqa: E402

KEYS = ("id", "seq", "time", "provider", "source", "tenant", "entity", "key", "op")
TYPES = ("text", "bigint", "timestamptz", "text", "text", "text", "text", "text", "text")
S = '"streamd"'


def rows(feed: Path, n: int) -> list[tuple[Any, ...]]:
    """The COPY's records: the columns, the entity and the CloudEvent as text."""
    return [(ident, seq, datetime.fromisoformat(t), provider, source, tenant, entity, key, op,
             data.decode(), line[:-1].decode())
            for seq, ident, source, provider, tenant, entity, op, key, t, data, line in feed_lines(feed, n)]


V1_ORDER = "provider, tenant, entity, key"
V2_ORDER = "key, entity, tenant, provider"


def layout(order: str, target: str) -> list[str]:
    """The tables' storage and an entity's index order, as version 1 or 2 has them."""
    return [f"ALTER TABLE {S}.events SET (toast_tuple_target = {target})",
            f"DROP INDEX {S}.events_entity",
            f"CREATE INDEX events_entity ON {S}.events ({order}, seq)",
            f"ALTER TABLE {S}.entities DROP CONSTRAINT entities_pkey, "
            f"ADD CONSTRAINT entities_pkey PRIMARY KEY ({order})"]


def statements(table: str, data: str, order: str) -> tuple[str, str]:
    insert = (f"INSERT INTO {S}.events (id, seq, time, type, provider, source, tenant, entity, key, op, "
              "data, cloudevent) SELECT id, seq, time, entity || '.' || op, provider, source, tenant, "
              f"entity, key, op, {data}, cloudevent FROM pg_temp.{table} ON CONFLICT (id) DO NOTHING")
    upsert = (f"INSERT INTO {S}.entities AS e (provider, tenant, entity, key, seq, event_id, deleted, data, "
              f"time, updated_at) SELECT DISTINCT ON ({order}) provider, tenant, "
              f"entity, key, seq, id, op = 'deleted', {data}, time, now() FROM pg_temp.{table} "
              f"ORDER BY {order}, seq DESC "
              "ON CONFLICT (provider, tenant, entity, key) DO UPDATE SET "
              "seq = excluded.seq, event_id = excluded.event_id, deleted = excluded.deleted, "
              "data = excluded.data, time = excluded.time, updated_at = excluded.updated_at "
              "WHERE e.seq < excluded.seq")
    return insert, upsert


def record(pid: int, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["perf", "record", "-F", "999", "-o", f"bench/out/{name}.perf", "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def run(pg: Postgres, events: list[tuple[Any, ...]], batch: int, rounds: int,
              perf: str | None) -> dict[str, list[tuple[float, float]]]:
    import asyncpg

    conn = await asyncpg.connect(pg.dsn())
    await migrate(conn, "streamd")
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    cols = ", ".join(f"{c} {t}" for c, t in zip(KEYS, TYPES, strict=True))
    await conn.execute(f"CREATE TEMPORARY TABLE two ({cols}, data jsonb, cloudevent jsonb) "
                       "ON COMMIT DELETE ROWS")
    await conn.execute(f"CREATE TEMPORARY TABLE one ({cols}, cloudevent jsonb) ON COMMIT DELETE ROWS")
    await conn.execute(f"CREATE TEMPORARY TABLE whole ({cols}, cloudevent jsonb) "
                       "WITH (toast_tuple_target = 8160) ON COMMIT DELETE ROWS")
    def both(r: tuple[Any, ...]) -> tuple[Any, ...]:
        return r

    def line(r: tuple[Any, ...]) -> tuple[Any, ...]:
        return (*r[:9], r[10])

    inside = "cloudevent->'data'"
    variants = {
        "two-documents": ("two", (*KEYS, "data", "cloudevent"), both, "data", "2032", V1_ORDER),
        "one-document": ("one", (*KEYS, "cloudevent"), line, inside, "2032", V1_ORDER),
        "whole-rows": ("whole", (*KEYS, "cloudevent"), line, inside, "8160", V1_ORDER),
        "current": ("whole", (*KEYS, "cloudevent"), line, inside, "8160", V2_ORDER),
    }
    out: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    for _ in range(rounds):
        for name, (table, columns, shape, data, target, order) in variants.items():
            insert, upsert = statements(table, data, order)
            await conn.execute(f"TRUNCATE {S}.events, {S}.entities")
            for stmt in layout(order, target):
                await conn.execute(stmt)
            await conn.execute("CHECKPOINT")
            recorder = record(pid, name) if perf == name else None
            wal0 = await conn.fetchval("SELECT pg_current_wal_lsn()")
            cpu0 = cpu_seconds(pid)
            for i in range(0, len(events), batch):
                records = [shape(r) for r in events[i:i + batch]]
                async with conn.transaction():
                    await conn.copy_records_to_table(table, records=records, columns=columns,
                                                      schema_name="pg_temp")
                    await conn.execute(insert)
                    await conn.execute(upsert)
            cpu = cpu_seconds(pid) - cpu0
            wal = float(await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)", wal0))
            if recorder is not None:
                recorder.send_signal(signal.SIGINT)
                recorder.wait()
                perf = None  # one recording
            out[name].append((cpu / len(events) * 1e6, wal / len(events)))
    await conn.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=4_000)
    ap.add_argument("--rounds", type=int, default=3, help="each variant this many times, in turn")
    ap.add_argument("--perf", choices=("two-documents", "one-document", "whole-rows", "current"),
                    help="perf record the backend during this variant's first round (bench/out/<name>.perf)")
    args = ap.parse_args()
    events = rows(prefilled(100_000), args.events)
    pg = Postgres()
    try:
        got = asyncio.run(run(pg, events, args.batch, args.rounds, args.perf))
    finally:
        pg.close()
    size = statistics.mean(len(r[10]) for r in events)
    print(f"# the postgres sink's statements: {args.events:,} events (CloudEvent {size:.0f} bytes on "
          f"average) in batches of {args.batch:,}, empty tables; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at the end; median of {args.rounds}")
    print("| variant | PostgreSQL CPU per event | runs | WAL per event |")
    print("|---|---:|---|---:|")
    for name, runs in got.items():
        cpu = [r[0] for r in runs]
        print(f"| {name} | {statistics.median(cpu):.1f} µs | {', '.join(f'{c:.1f}' for c in cpu)} | "
              f"{statistics.median(r[1] for r in runs):,.0f} B |")


if __name__ == "__main__":
    main()
