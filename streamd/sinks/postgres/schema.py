"""The postgres sink's tables: created and migrated by streamd, checked before every load.

`MIGRATIONS[n]` takes a schema from version n to n+1, in one transaction, under an
advisory lock (two sinks, or two streamd, may start on one schema at once);
`<schema>.schema_migrations` records each version applied. A schema newer than this
build knows is refused, never guessed at, and so is one that holds tables of the same
names that streamd did not make.

Why the tables look the way they do (docs/sinks/postgres.md has them for users):
- `events` is keyed by the event id, so an event loaded twice is one row (ON CONFLICT
  DO NOTHING); `seq` is this feed's position and gets a BRIN index, nearly free to keep
  as it grows with the load order.
- `entities` holds the last event applied per (provider, tenant, entity, key); the
  upsert only replaces a row with an event of a higher seq, so an older event arriving
  late (a dead letter retried) never overwrites a newer state.
- `sink_offsets` is the sink's offset, written in the same transaction as the rows of
  its batch, with the id of the event at that seq (checked against the feed at start).

`drift` compares what is there with `EXPECTED` and names every difference: someone
altering the tables gets a clear error, not a stream of refused rows. Additions that do
not get in the way (an index, a constraint, a column with a default) are left alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import SinkSchemaError

if TYPE_CHECKING:
    import asyncpg

TABLES = ("events", "entities", "sink_offsets")
_MIGRATIONS_TABLE = "schema_migrations"

MIGRATIONS: list[list[str]] = [
    # 0 -> 1: the first schema
    [
        """CREATE TABLE {s}.events (
            id         text        PRIMARY KEY,   -- the event's id: stable, derived from the change
            seq        bigint      NOT NULL,      -- its position in the feed
            time       timestamptz NOT NULL,      -- when the change happened (the provider's time)
            type       text        NOT NULL,      -- <entity>.<op>
            provider   text        NOT NULL,
            source     text        NOT NULL,      -- the [sources.<name>] it came from
            tenant     text        NOT NULL,
            entity     text        NOT NULL,
            key        text        NOT NULL,
            op         text        NOT NULL,      -- created | updated | deleted
            data       jsonb       NOT NULL,      -- the entity (JSON null: deleted, state unknown)
            cloudevent jsonb       NOT NULL       -- the CloudEvent as the feed has it
        )""",
        "CREATE INDEX events_entity ON {s}.events (provider, tenant, entity, key, seq)",
        "CREATE INDEX events_tenant_time ON {s}.events (tenant, entity, time)",
        "CREATE INDEX events_seq ON {s}.events USING brin (seq)",
        """CREATE TABLE {s}.entities (
            provider   text        NOT NULL,
            tenant     text        NOT NULL,
            entity     text        NOT NULL,
            key        text        NOT NULL,
            seq        bigint      NOT NULL,      -- of the last event applied
            event_id   text        NOT NULL,      -- that event
            deleted    boolean     NOT NULL,
            data       jsonb       NOT NULL,      -- the state that event carried
            time       timestamptz NOT NULL,      -- when it happened
            updated_at timestamptz NOT NULL,      -- when streamd wrote this row
            PRIMARY KEY (provider, tenant, entity, key)
        )""",
        "CREATE INDEX entities_tenant ON {s}.entities (tenant, entity)",
        """CREATE TABLE {s}.sink_offsets (
            sink       text        PRIMARY KEY,   -- the [sinks.<name>]
            seq        bigint      NOT NULL,      -- the last seq it applied
            event_id   text        NOT NULL,      -- the id of the event at seq ('' for none)
            updated_at timestamptz NOT NULL
        )""",
        # Examples of what the tables are for: invoices not (fully) paid, per tenant.
        """CREATE VIEW {s}.open_invoices AS
        SELECT tenant, provider, key,
               data->>'kind' AS kind,
               data->>'direction' AS direction,
               data->>'number' AS number,
               data#>>'{{party,name}}' AS party,
               (data->>'issued')::date AS issued,
               (data->>'due')::date AS due,
               data->>'status' AS status,
               data->>'currency' AS currency,
               (data->>'total')::numeric AS total,
               coalesce((data->>'unpaid')::numeric, (data->>'total')::numeric) AS unpaid,
               time AS changed
        FROM {s}.entities
        WHERE entity = 'invoice' AND NOT deleted
          AND (data->>'status' IN ('open', 'partially_paid')
               OR (data->>'status' = 'unknown' AND (data->>'unpaid')::numeric > 0))""",
        """CREATE VIEW {s}.open_invoices_per_tenant AS
        SELECT tenant, direction, currency,
               count(*) AS invoices,
               sum(unpaid) AS unpaid,
               count(*) FILTER (WHERE due < current_date) AS overdue,
               min(due) AS oldest_due
        FROM {s}.open_invoices
        GROUP BY tenant, direction, currency""",
    ],
    # 1 -> 2: what each insert costs the server (bench/postgres_statements.py).
    [
        # Rows of `events` kept whole up to a page. With the entity twice in a row (in
        # `data`, and in `cloudevent`), most rows pass PostgreSQL's default 2 kB
        # threshold, and each insert then tried to compress them (pglz): about a tenth
        # of the server's CPU per event, for little space. Rows over 8 kB are still
        # compressed and moved out.
        "ALTER TABLE {s}.events SET (toast_tuple_target = 8160)",
        # An entity's columns key first in its two indexes: a comparison is then mostly
        # decided by the first column, not after three that nearly every row shares
        # (provider, tenant, entity): about an eighth of the server's CPU per event. The
        # same queries use them (equality on all four; a tenant's rows have
        # events_tenant_time and entities_tenant).
        "DROP INDEX {s}.events_entity",
        "CREATE INDEX events_entity ON {s}.events (key, entity, tenant, provider, seq)",
        "ALTER TABLE {s}.entities DROP CONSTRAINT entities_pkey, "
        "ADD CONSTRAINT entities_pkey PRIMARY KEY (key, entity, tenant, provider)",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)

# What the tables must have for the sink's statements: (column, type, nullable) and the
# primary key, as `format_type` names them. Kept in step with MIGRATIONS; a test migrates
# a new schema and checks it against this.
_TS = "timestamp with time zone"
EXPECTED: dict[str, tuple[list[tuple[str, str]], list[str]]] = {
    "events": ([("id", "text"), ("seq", "bigint"), ("time", _TS), ("type", "text"),
                ("provider", "text"), ("source", "text"), ("tenant", "text"), ("entity", "text"),
                ("key", "text"), ("op", "text"), ("data", "jsonb"), ("cloudevent", "jsonb")],
               ["id"]),
    "entities": ([("provider", "text"), ("tenant", "text"), ("entity", "text"), ("key", "text"),
                  ("seq", "bigint"), ("event_id", "text"), ("deleted", "boolean"), ("data", "jsonb"),
                  ("time", _TS), ("updated_at", _TS)],
                 ["key", "entity", "tenant", "provider"]),
    "sink_offsets": ([("sink", "text"), ("seq", "bigint"), ("event_id", "text"), ("updated_at", _TS)],
                     ["sink"]),
}


def q(name: str) -> str:
    """A quoted identifier (schema names are checked to be plain, quoted all the same)."""
    return '"' + name.replace('"', '""') + '"'


async def migrate(conn: asyncpg.Connection, schema: str) -> tuple[int, int]:
    """Create or migrate `schema` to SCHEMA_VERSION; return (version found, version now)."""
    s = q(schema)
    async with conn.transaction():
        # One migrator per schema at a time; the lock goes with the transaction.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"streamd.schema:{schema}")
        exists = await conn.fetchval("SELECT true FROM pg_namespace WHERE nspname = $1", schema)
        if not exists:
            # Only when missing: an existing schema needs no CREATE privilege on the database.
            await conn.execute(f"CREATE SCHEMA {s}")
        tables = {r[0] for r in await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm')", schema)}
        version = 0
        if _MIGRATIONS_TABLE in tables:
            version = int(await conn.fetchval(
                f"SELECT coalesce(max(version), 0) FROM {s}.{_MIGRATIONS_TABLE}"))
        elif theirs := sorted(tables & set(TABLES)):
            raise SinkSchemaError(f"schema {schema} holds {', '.join(theirs)} but no "
                              f"{_MIGRATIONS_TABLE}: tables streamd did not create; give the sink "
                              "another schema")
        else:
            await conn.execute(f"CREATE TABLE {s}.{_MIGRATIONS_TABLE} (version integer PRIMARY KEY, "
                               "applied_at timestamptz NOT NULL DEFAULT now())")
        if version > SCHEMA_VERSION:
            raise SinkSchemaError(f"schema {schema} was written by a newer streamd (version {version}; this "
                              f"streamd knows up to {SCHEMA_VERSION}): upgrade streamd")
        found = version
        while version < SCHEMA_VERSION:
            for stmt in MIGRATIONS[version]:
                await conn.execute(stmt.format(s=s))
            version += 1
            await conn.execute(f"INSERT INTO {s}.{_MIGRATIONS_TABLE} (version) VALUES ($1)", version)
    return found, version


async def drift(conn: asyncpg.Connection, schema: str) -> list[str]:
    """Every way the tables differ from what the sink writes, or []."""
    rows = await conn.fetch(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull, "
        "       a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '' AS filled "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) AND c.relkind IN ('r', 'p') "
        "  AND a.attnum > 0 AND NOT a.attisdropped ORDER BY c.relname, a.attnum", schema, list(TABLES))
    keys = {r[0]: list(r[1]) for r in await conn.fetch(
        "SELECT c.relname, array_agg(a.attname::text ORDER BY k.ord) "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum "
        "WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) AND i.indisprimary "
        "GROUP BY c.relname", schema, list(TABLES))}
    have: dict[str, dict[str, tuple[str, bool, bool]]] = {}
    for r in rows:
        have.setdefault(r["relname"], {})[r["attname"]] = (r["type"], r["attnotnull"], r["filled"])
    problems = []
    for table, (columns, key) in EXPECTED.items():
        where = f"{schema}.{table}"
        if table not in have:
            problems.append(f"{where} is missing")
            continue
        got = have[table]
        ours = dict(columns)
        for column, type_ in columns:
            if column not in got:
                problems.append(f"{where}.{column} is missing")
            elif got[column][0] != type_:
                problems.append(f"{where}.{column} is {got[column][0]}, streamd writes {type_}")
        for column, (_, notnull, filled) in got.items():
            if column not in ours and notnull and not filled:
                problems.append(f"{where}.{column} is NOT NULL without a default, and streamd does "
                                "not write it")
        if keys.get(table) != key:
            now = f"({', '.join(keys[table])})" if table in keys else "none"
            problems.append(f"{where}: primary key is {now}, streamd needs ({', '.join(key)})")
    return problems
