"""The postgres sink: one transaction per batch, with the sink's offset in it.

A batch is COPYed (binary) into a temporary table, then moved with two statements:
`INSERT … ON CONFLICT (id) DO NOTHING` into `events`, and an upsert of each entity's
last event of the batch into `entities` that replaces a row only with a higher seq.
Only the CloudEvent is sent as JSON: `data` is its `data` member, taken in SQL from the
`jsonb` PostgreSQL has already parsed (the feed's line holds the entity's bytes
verbatim), so each event's JSON is parsed once, not twice: a sixth less of the
server's CPU per event (docs/benchmarks.md).
`sink_offsets` takes the batch's last seq (it never moves back) in the same
transaction. So PostgreSQL holds a batch's rows and its offset, or neither; the
dispatcher resumes after the offset PostgreSQL holds (`held_offset`), and nothing is
applied twice whatever was killed when. The statements are idempotent besides: a
batch applied again changes nothing.

Batch size: the dispatcher asks `batch_size()` before each read. It starts small, doubles
while full batches commit in under half of `TARGET` seconds, and shrinks in proportion
when one takes longer: big enough that a commit's fsync is shared by thousands of rows,
small enough that a transaction stays short on a slow or busy server. A batch that timed
out is split into transactions of the new size when it is tried again.

Parts in flight (`connections`, 2 by default). One PostgreSQL backend parsing and
indexing a batch is the limit of a single connection (about 40 µs of the server's CPU an
event, docs/benchmarks.md), so a batch of at least `2 × MIN_PART` events is cut into
consecutive parts, one per connection, loaded at once. Each part is its own transaction
holding its rows and the offset of its last event, as a single batch would; and part
i+1 takes its entity rows, moves the offset and commits only once part i has
committed. So the parts commit in feed order: a reader of `events` never sees an event
before every earlier one, the offset in PostgreSQL is always that of rows all there,
and a crash between two parts leaves the first one's rows with their offset. Only the
COPY and the `events` insert run side by side (the larger part of the work); the entity
upserts wait their turn, so two parts never wait on each other's rows, and a part waiting
for its predecessor holds no entity row. If a part fails, the parts after it roll back.

The first connection holds a session advisory lock on (schema, sink) while open: a
second streamd loading the same sink name into the same schema waits (and says so)
rather than interleave offsets; it also migrates and checks the tables. The others only
load. All are opened when needed and dropped together after any failure that is not the
data's.

Failures: a row PostgreSQL refuses (SQLSTATE class 22 data exception, 23 integrity
constraint) is `Permanent`: the dispatcher splits the batch and dead-letters that
event with PostgreSQL's message. Everything else (the server down or restarting, wrong
password, an untrusted certificate, a timeout, a statement it cannot run) is
`Retryable`, with a reason that says which, and drops the connection: the next attempt
connects anew and checks the tables first, so a column someone renamed is named as such
(`schema.drift`) rather than retried blindly.
"""

from __future__ import annotations

import itertools
import logging
import os
import ssl
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import asyncpg

from ...errors import DeliveryError, Permanent, Retryable, SinkSchemaError
from ...metrics import Metrics
from ...store import FeedEvent
from ..base import Sink
from .config import PostgresSinkConfig, sslmode, tls_context, where
from .schema import drift, migrate, q

log = logging.getLogger("streamd.sink")

TARGET = 0.5  # seconds a batch's transaction aims at
FIRST_BATCH = 500
SMALLEST_BATCH = 50
MIN_PART = 500  # a batch is cut into parts of at least this many events
DETAIL_KEPT = 300  # characters of PostgreSQL's DETAIL kept in a reason (it may quote the row)
_LOAD = "streamd_load"  # the temporary table a batch is COPYed into
_LOAD_COLUMNS = ("id", "seq", "time", "provider", "source", "tenant", "entity", "key", "op", "cloudevent")


class BatchSizer:
    """How many events the next batch holds, from how long the last ones took."""

    def __init__(self, ceiling: int, target: float = TARGET) -> None:
        self.ceiling = ceiling
        self.floor = min(SMALLEST_BATCH, ceiling)
        self.target = target
        self.size = min(FIRST_BATCH, ceiling)
        self.split = False  # since a timeout, until a commit: split batches to `size`

    def committed(self, events: int, seconds: float) -> None:
        self.split = False
        if seconds > self.target:
            self.size = max(self.floor, min(self.size, int(events * self.target / seconds)))
        elif events >= self.size and seconds < self.target / 2:
            self.size = min(self.ceiling, self.size * 2)

    def timed_out(self) -> None:
        """A batch took longer than the timeout: much smaller ones, and the batch tried
        again split to that size (the dispatcher retries it whole)."""
        self.size = max(self.floor, self.size // 4)
        self.split = True


def _record(e: FeedEvent) -> tuple[Any, ...]:
    line = e.line[:-1] if e.line.endswith(b"\n") else e.line
    try:
        when = datetime.fromisoformat(e.time)
    except ValueError:
        raise Permanent(f"event {e.id} (seq {e.seq}): time {e.time!r} is not an RFC 3339 time") from None
    return (e.id, e.seq, when, e.provider, e.source, e.tenant, e.entity, e.key, e.op, line.decode())


def _said(exc: asyncpg.PostgresError) -> str:
    """PostgreSQL's message, its DETAIL (cut: it may quote a whole row) and SQLSTATE."""
    text = str(getattr(exc, "message", "") or exc)
    detail = getattr(exc, "detail", None)
    if detail:
        text += f" ({detail[:DETAIL_KEPT]}{'…' if len(detail) > DETAIL_KEPT else ''})"
    return f"{text} [SQLSTATE {exc.sqlstate}]"


class PostgresSink(Sink):
    holds_offset = True  # in sink_offsets, in the transaction that loads the rows

    def __init__(self, name: str, cfg: PostgresSinkConfig) -> None:
        self.name = name
        self.cfg = cfg
        self.where = where(cfg.dsn)
        self.mode = sslmode(cfg)
        self.schema = cfg.schema
        s = q(cfg.schema)
        self._conn: asyncpg.Connection | None = None
        self._more: list[asyncpg.Connection] = []  # the other connections parts load over
        self._checked = False  # the tables migrated and checked, on this connection
        self.sizer = BatchSizer(cfg.batch_max)
        self._commit_seconds: Any = None
        self._size_gauge: Any = None
        self._insert_events = (
            f"INSERT INTO {s}.events (id, seq, time, type, provider, source, tenant, entity, key, op, "
            f"data, cloudevent) SELECT id, seq, time, entity || '.' || op, provider, source, tenant, "
            f"entity, key, op, cloudevent->'data', cloudevent FROM pg_temp.{_LOAD} "
            "ON CONFLICT (id) DO NOTHING")
        self._upsert_entities = (
            f"INSERT INTO {s}.entities AS e (provider, tenant, entity, key, seq, event_id, deleted, data, "
            f"time, updated_at) SELECT DISTINCT ON (key, entity, tenant, provider) provider, tenant, "
            f"entity, key, seq, id, op = 'deleted', cloudevent->'data', time, now() FROM pg_temp.{_LOAD} "
            "ORDER BY key, entity, tenant, provider, seq DESC "  # the primary key's order
            "ON CONFLICT (provider, tenant, entity, key) DO UPDATE SET seq = excluded.seq, "
            "event_id = excluded.event_id, deleted = excluded.deleted, data = excluded.data, "
            "time = excluded.time, updated_at = excluded.updated_at WHERE e.seq < excluded.seq")
        self._advance_offset = (
            f"INSERT INTO {s}.sink_offsets AS o (sink, seq, event_id, updated_at) "
            "VALUES ($1, $2, $3, now()) ON CONFLICT (sink) DO UPDATE SET seq = excluded.seq, "
            "event_id = excluded.event_id, updated_at = excluded.updated_at WHERE o.seq < excluded.seq")

    def __repr__(self) -> str:
        return f"PostgresSink({self.name!r}, {self.where}, schema={self.schema})"

    def attach_metrics(self, metrics: Metrics) -> None:
        self._commit_seconds = metrics.sink_postgres_commit_seconds.labels(self.name)
        self._size_gauge = metrics.sink_postgres_batch_size.labels(self.name)
        self._size_gauge.set(self.sizer.size)

    def batch_size(self) -> int:
        return self.sizer.size

    # ------------------------------------------------------------ connection

    async def _connect(self, part: int = 0) -> asyncpg.Connection:
        """The first connection (`part` 0) takes the sink's advisory lock; every one gets
        the temporary table its parts are COPYed into."""
        cfg = self.cfg
        tls: ssl.SSLContext | str | bool
        if self.mode in ("require", "verify-ca", "verify-full"):
            # Loading a CA bundle reads files: not on the event loop.
            ctx = await anyio.to_thread.run_sync(tls_context, self.mode, cfg.ca)
            assert ctx is not None
            tls = ctx
        else:
            tls = False if self.mode == "disable" else self.mode
        # Only what the config says: with neither password nor passfile, an empty password
        # (the driver would otherwise read $PGPASSFILE or ~/.pgpass).
        if cfg.passfile is not None:
            password, passfile = None, cfg.passfile
        else:
            password, passfile = (cfg.password.reveal() if cfg.password is not None else ""), None
        named = "application_name" in dict(parse_qsl(urlsplit(cfg.dsn).query))
        app = f"streamd sink {self.name}" + (f" #{part + 1}" if part else "")
        conn = await asyncpg.connect(
            cfg.dsn, password=password, passfile=passfile, ssl=tls, timeout=cfg.timeout.seconds,
            command_timeout=None, server_settings=None if named else {"application_name": app})
        try:
            got = part or await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))",
                                              f"streamd.sink:{self.schema}.{self.name}")
            if not got:
                raise Retryable(f"{self.where}: another connection is loading sink {self.name} into "
                                f"schema {self.schema} (another streamd with the same sink name?); "
                                "waiting for it to end")
            cols = ", ".join(f"{c} {t}" for c, t in zip(_LOAD_COLUMNS, (
                "text", "bigint", "timestamptz", "text", "text", "text", "text", "text", "text",
                "jsonb"), strict=True))
            # Rows whole up to a page, as in `events` (schema.py, migration 2): a CloudEvent
            # compressed here would reach `events` compressed.
            await conn.execute(f"CREATE TEMPORARY TABLE {_LOAD} ({cols}) WITH (toast_tuple_target = 8160) "
                               "ON COMMIT DELETE ROWS")
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await self._connect()
            self._checked = False
        if not self._checked:
            await self._check(self._conn)
        return self._conn

    async def _check(self, conn: asyncpg.Connection) -> None:
        try:
            found, now = await migrate(conn, self.schema)
        except SinkSchemaError as exc:
            raise Retryable(f"{self.where}: {exc}") from None
        problems = await drift(conn, self.schema)
        if problems:
            raise Retryable(f"{self.where}: the tables differ from what streamd made them: "
                            + "; ".join(problems) + ". Undo the change, or rebuild the tables "
                            "(docs/sinks/postgres.md)")
        if found != now:
            log.info("sink %s: schema %s %s (version %d)", self.name, self.schema,
                     "created" if not found else f"migrated from version {found}", now)
        tls = await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        log.info("sink %s: connected to %s (sslmode %s: %s), schema %s", self.name, self.where,
                 self.mode, "TLS" if tls else "no TLS", self.schema)
        self._checked = True

    async def _connections(self, n: int) -> list[asyncpg.Connection]:
        """The first connection, made and checked, and n - 1 more."""
        first = await self._connection()
        self._more = [c for c in self._more if not c.is_closed()]
        while len(self._more) < n - 1:
            self._more.append(await self._connect(len(self._more) + 1))
        return [first, *self._more[:n - 1]]

    def _drop(self) -> None:
        conns = [self._conn, *self._more]
        self._conn, self._more = None, []
        for conn in conns:
            if conn is not None and not conn.is_closed():
                conn.terminate()

    async def _run(self, what: str, op: Any = None, parts: int = 1) -> Any:
        """`op(conn)` on the connection (made and checked first), or `op(conns)` on `parts`
        connections; every failure mapped to a DeliveryError. None for just the connection."""
        try:
            with anyio.fail_after(self.cfg.timeout.seconds):
                if parts > 1:
                    return await op(await self._connections(parts))
                conn = await self._connection()
                return await op(conn) if op is not None else None
        except Exception as exc:
            error = self._failure(exc, what)
            if not isinstance(error, Permanent) or parts > 1:
                # The next attempt connects anew, and checks the tables again; after parts,
                # also for a refused row: the parts after it were cut mid-transaction.
                self._drop()
            raise error from None

    def _failure(self, exc: BaseException, what: str) -> DeliveryError:
        where = self.where
        if isinstance(exc, DeliveryError):
            return exc
        if isinstance(exc, asyncpg.PostgresError):
            state = exc.sqlstate or ""
            if state.startswith(("22", "23")):
                return Permanent(f"PostgreSQL refused it: {_said(exc)}")
            if state == "28P01":
                return Retryable(f"{where}: password authentication failed for the DSN's user: check "
                                 f"{'passfile' if self.cfg.passfile else 'password'}")
            if state.startswith("28"):
                return Retryable(f"{where}: login refused: {_said(exc)}")
            return Retryable(f"{where}: {what}: {_said(exc)}")
        if isinstance(exc, ssl.SSLCertVerificationError):
            against = f"ca {self.cfg.ca}" if self.cfg.ca else "the system's trust store"
            return Retryable(f"{where}: the server's certificate is not trusted (sslmode {self.mode}, "
                             f"checked against {against}): {exc.verify_message}")
        if isinstance(exc, ssl.SSLError):
            return Retryable(f"{where}: TLS failed: {exc.reason or exc}")
        if isinstance(exc, TimeoutError):
            self.sizer.timed_out()
            return Retryable(f"{where}: {what}: no answer within {self.cfg.timeout}")
        if isinstance(exc, OSError):
            reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else (exc.strerror or str(exc))
            return Retryable(f"{where}: cannot connect: {reason}")
        if isinstance(exc, asyncpg.InterfaceError):
            return Retryable(f"{where}: {what}: {exc}")
        return Retryable(f"{where}: {what}: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------ the Sink protocol

    async def recover(self) -> int:
        await self._run("checking the tables")
        return 0  # where it stands is `held_offset`

    async def held_offset(self) -> tuple[int, str] | None:
        row = await self._run("reading its offset", lambda conn: conn.fetchrow(
            f"SELECT seq, event_id FROM {q(self.schema)}.sink_offsets WHERE sink = $1", self.name))
        return (int(row["seq"]), str(row["event_id"])) if row is not None else None

    async def reset_offset(self, seq: int, event_id: str) -> None:
        await self._run("resetting its offset", lambda conn: conn.execute(
            f"INSERT INTO {q(self.schema)}.sink_offsets (sink, seq, event_id, updated_at) "
            "VALUES ($1, $2, $3, now()) ON CONFLICT (sink) DO UPDATE SET seq = excluded.seq, "
            "event_id = excluded.event_id, updated_at = excluded.updated_at", self.name, seq, event_id))

    async def deliver(self, events: Sequence[FeedEvent]) -> None:
        if not events:
            return
        records = [_record(e) for e in events]
        # One transaction; after a timeout, the batch tried again in several smaller ones.
        step = self.sizer.size if self.sizer.split else len(events)
        for start in range(0, len(events), step):
            await self._load(events[start:start + step], records[start:start + step])

    async def _load(self, events: Sequence[FeedEvent], records: list[tuple[Any, ...]]) -> None:
        n = max(1, min(self.cfg.connections, len(events) // MIN_PART))
        cuts = [len(events) * i // n for i in range(n + 1)]
        parts = [(records[a:b], events[b - 1]) for a, b in itertools.pairwise(cuts)]

        async def part(conn: asyncpg.Connection, rows: list[tuple[Any, ...]], last: FeedEvent,
                       after: anyio.Event | None) -> None:
            async with conn.transaction():
                await conn.copy_records_to_table(_LOAD, records=rows, columns=_LOAD_COLUMNS,
                                                  schema_name="pg_temp")
                await conn.execute(self._insert_events)
                if after is not None:
                    await after.wait()  # the part before committed: feed order kept
                await conn.execute(self._upsert_entities)
                await conn.execute(self._advance_offset, self.name, last.seq, last.id)

        async def transaction(conn: asyncpg.Connection) -> None:
            await part(conn, *parts[0], None)

        async def in_parts(conns: list[asyncpg.Connection]) -> None:
            committed = [anyio.Event() for _ in parts]
            failed: list[tuple[int, Exception]] = []

            async def one(i: int) -> None:
                try:
                    await part(conns[i], *parts[i], committed[i - 1] if i else None)
                except Exception as exc:
                    failed.append((i, exc))
                    tg.cancel_scope.cancel()  # the parts after it must not commit
                else:
                    committed[i].set()

            async with anyio.create_task_group() as tg:
                for i in range(len(parts)):
                    tg.start_soon(one, i)
            if failed:
                raise min(failed, key=lambda f: f[0])[1]  # the first part's failure is the cause

        began = time.monotonic()
        if n == 1:
            await self._run(f"loading {len(events)} events", transaction)
        else:
            await self._run(f"loading {len(events)} events in {n} parts", in_parts, parts=n)
        took = time.monotonic() - began
        self.sizer.committed(len(events), took)
        if self._commit_seconds is not None:
            self._commit_seconds.observe(took)
            self._size_gauge.set(self.sizer.size)

    async def aclose(self) -> None:
        conns = [self._conn, *self._more]
        self._conn, self._more = None, []
        for conn in conns:
            if conn is not None and not conn.is_closed():
                with anyio.move_on_after(5):
                    try:
                        await conn.close()
                    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                        pass
                if not conn.is_closed():
                    conn.terminate()

