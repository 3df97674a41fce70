"""Reading the feed: sinks, `streamd tail`, `status` and `dlq` each use their own
connection (WAL lets them read while the writer commits). Nothing here writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite
import msgspec

from ..config import Match, StoreConfig
from ..model import cloudevent, render_line
from .schema import classify, connect
from .sealed import SECRET_PREFIX, Sealer

_COLUMNS = "seq, id, source, provider, tenant, entity, op, key, time, received, data"


class Lines:
    """Feed lines already rendered, by seq, shared by the readers of one daemon's sinks:
    an event committed once is rendered once, however many sinks send it. A seq never
    names another event (the feed's seq is AUTOINCREMENT and events are never rewritten),
    so a line kept is never stale. Bounded by `budget` bytes, oldest first out: sinks
    near the head (the usual case) share it; one far behind renders its own."""

    def __init__(self, budget: int = 4 << 20) -> None:
        self.budget = budget
        self._lines: dict[int, bytes] = {}
        self._bytes = 0

    def get(self, seq: int) -> bytes | None:
        return self._lines.get(seq)

    def put(self, seq: int, line: bytes) -> None:
        if seq in self._lines:
            return
        self._lines[seq] = line
        self._bytes += len(line)
        while self._bytes > self.budget:
            self._bytes -= len(self._lines.pop(next(iter(self._lines))))


class FeedEvent(msgspec.Struct, eq=False):
    """One committed event as sinks see it: the columns, and its feed line, the CloudEvent
    bytes every sink sends. The line is rendered once, when first asked for (a sink that
    sends only `data` never pays for it), and kept: a batch delivered again, or by another
    sink through the same `Lines`, sends the same bytes without encoding them again.
    Not frozen only so that the line can be kept; nothing else changes an event. Equal
    when the columns are: whether the line was rendered yet is no part of an event."""

    seq: int
    id: str
    source: str
    provider: str
    tenant: str
    entity: str
    op: str
    key: str
    time: str
    received_ms: int
    data: bytes
    rendered: bytes | None = None  # the line, once rendered (or given)
    lines: Lines | None = None  # where lines are shared with other sinks' readers

    @property
    def type(self) -> str:
        return f"{self.entity}.{self.op}"

    @property
    def line(self) -> bytes:
        line = self.rendered
        if line is None:
            shared = self.lines
            line = shared.get(self.seq) if shared is not None else None
            if line is None:
                line = render_line(cloudevent(
                    seq=self.seq, id=self.id, source=self.source, provider=self.provider,
                    tenant=self.tenant, entity=self.entity, op=self.op, key=self.key,
                    time=self.time, data=self.data))
                if shared is not None:
                    shared.put(self.seq, line)
            self.rendered = line
        return line

    def _columns(self) -> tuple[object, ...]:
        return (self.seq, self.id, self.source, self.provider, self.tenant, self.entity, self.op,
                self.key, self.time, self.received_ms, self.data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FeedEvent):
            return NotImplemented
        return self._columns() == other._columns()

    def __ne__(self, other: object) -> bool:
        if not isinstance(other, FeedEvent):
            return NotImplemented
        return self._columns() != other._columns()


def _row_to_event(row: Sequence[Any], lines: Lines | None = None) -> FeedEvent:
    seq, idb, source, provider, tenant, entity, op, key, time, received, data = row
    return FeedEvent(seq, idb.hex(), source, provider, tenant, entity, op, key, time, received,
                     data, None, lines)


#: Whether an event's data is a forecast (`"forecast": true`, model.Invoice): only an
#: invoice can be one, so the JSON is parsed for invoices alone.
_FORECAST = ("(entity = 'invoice' AND coalesce(json_extract(CAST(data AS TEXT), '$.forecast'), 0)"
             " IS 1)")


def match_clause(match: Match) -> tuple[str, list[str]]:
    """SQL for a sink's `match`: OR within a key, AND across keys, globs allowed."""
    parts: list[str] = []
    params: list[str] = []
    for column, values in (("provider", match.provider), ("source", match.source),
                           ("entity", match.entity), ("tenant", match.tenant),
                           ("entity || '.' || op", match.type)):
        if values:
            parts.append("(" + " OR ".join([f"{column} GLOB ?"] * len(values)) + ")")
            params.extend(values)
    if match.forecast is not None:
        parts.append(_FORECAST if match.forecast else f"NOT {_FORECAST}")
    return (" AND ".join(parts), params)


class DeadLetterRow(msgspec.Struct, frozen=True):
    id: int
    created_ms: int
    origin: str
    name: str
    provider: str | None
    reason: str
    context: dict[str, str]
    raw: bytes | None
    event_seq: int | None
    attempts: int
    status: str


class FeedReader:
    def __init__(self, db: aiosqlite.Connection, path: str, sealer: Sealer | None = None,
                 lines: Lines | None = None) -> None:
        self._db = db
        self.path = path
        self._sealer = sealer or Sealer()
        self._lines = lines

    @classmethod
    async def open(cls, cfg: StoreConfig, lines: Lines | None = None) -> FeedReader:
        """`lines`: the rendered lines this reader's events share with other readers'."""
        sealer = Sealer.from_config(cfg)
        return cls(await connect(cfg, create=False, reader=True), cfg.path, sealer, lines)

    async def close(self) -> None:
        await self._db.close()

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return list(await self._db.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise classify(exc, self.path) from None

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._all(sql, params)
        return rows[0] if rows else None

    async def head(self) -> int:
        row = await self._one("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
        return int(row[0]) if row else 0

    async def first_seq(self) -> int:
        """The lowest seq still in the feed (retention prunes below it); head+1 when empty."""
        row = await self._one("SELECT min(seq) FROM events")
        return int(row[0]) if row and row[0] is not None else await self.head() + 1

    async def read(self, after: int, upto: int, limit: int, match: Match | None = None) -> list[FeedEvent]:
        """Events with after < seq <= upto that match, in seq order, at most `limit`."""
        where, params = match_clause(match) if match else ("", [])
        sql = f"SELECT {_COLUMNS} FROM events WHERE seq > ? AND seq <= ?"
        if where:
            sql += " AND " + where
        sql += " ORDER BY seq LIMIT ?"
        rows = await self._all(sql, [after, upto, *params, limit])
        lines = self._lines
        return [_row_to_event(r, lines) for r in rows]

    async def nth_last_seq(self, n: int, match: Match | None = None) -> int | None:
        """seq of the n-th last matching event (n=1: the last), None if there are fewer."""
        where, params = match_clause(match) if match else ("", [])
        sql = "SELECT seq FROM events" + (f" WHERE {where}" if where else "")
        row = await self._one(sql + " ORDER BY seq DESC LIMIT 1 OFFSET ?", [*params, n - 1])
        return int(row[0]) if row else None

    async def received_at(self, seq: int) -> int | None:
        """Commit time (unix ms) of the first event at or after `seq`."""
        row = await self._one("SELECT received FROM events WHERE seq >= ? ORDER BY seq LIMIT 1",
                              (seq,))
        return int(row[0]) if row else None

    async def seq_at(self, ms: int) -> int:
        """The last seq committed before unix time `ms` (0 if none). `received` never
        decreases along seq, so this is a binary search over the rowid."""
        lo, hi = await self.first_seq(), await self.head()
        best = lo - 1
        while lo <= hi:
            mid = (lo + hi) // 2
            row = await self._one("SELECT seq, received FROM events WHERE seq >= ? ORDER BY seq"
                                  " LIMIT 1", (mid,))
            if row is None:
                hi = mid - 1
                continue
            seq, received = int(row[0]), int(row[1])
            if received < ms:
                best = seq
                lo = seq + 1
            else:
                hi = mid - 1
        return max(best, 0)

    async def offsets(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in await self._all("SELECT sink, seq FROM sink_offsets")}

    async def offset(self, sink: str) -> int | None:
        row = await self._one("SELECT seq FROM sink_offsets WHERE sink = ?", (sink,))
        return int(row[0]) if row else None

    async def progress(self, source: str) -> dict[str, Any]:
        """A source's last committed progress, credentials decrypted. Raises
        `SecretUnreadable` (not a StoreError: that source's problem alone) when one
        cannot be."""
        rows = await self._all("SELECT key, value FROM source_state WHERE source = ?", (source,))
        return {k: self._sealer.decode(source, k, bytes(v)) for k, v in rows}

    async def progress_under(self, source: str, prefix: str) -> dict[str, Any]:
        """The part of a source's progress whose keys start with `prefix` (never a
        credential: those need `progress`)."""
        if prefix.startswith(SECRET_PREFIX):
            raise ValueError("credentials are read with progress()")
        rows = await self._all("SELECT key, value FROM source_state WHERE source = ? AND"
                               " substr(key, 1, ?) = ?", (source, len(prefix), prefix))
        return {k: msgspec.json.decode(v) for k, v in rows}

    async def all_progress(self) -> dict[str, tuple[dict[str, Any], int]]:
        out: dict[str, tuple[dict[str, Any], int]] = {}
        for source, key, value, updated in await self._all(
                "SELECT source, key, value, updated FROM source_state ORDER BY source, key"):
            values, last = out.get(source, ({}, 0))
            # Tokens kept as progress (e.g. a rotated OAuth2 refresh token) are never shown,
            # nor decrypted.
            values[key] = "<secret>" if key.startswith(SECRET_PREFIX) else msgspec.json.decode(value)
            out[source] = (values, max(last, int(updated)))
        return out

    async def entity_versions(self, source: str, tenant: str, entity: str) -> dict[str, str]:
        rows = await self._all("SELECT key, version FROM entity_state WHERE source = ? AND"
                               " tenant = ? AND entity = ?", (source, tenant, entity))
        return {k: v for k, v in rows}

    async def entity_data(self, source: str, tenant: str, entity: str,
                          keys: Sequence[str]) -> dict[str, bytes | None]:
        """The last state a poller kept for these records (what a `deleted` event carries)."""
        out: dict[str, bytes | None] = {}
        for i in range(0, len(keys), 500):
            chunk = list(keys[i:i + 500])
            rows = await self._all(
                "SELECT key, data FROM entity_state WHERE source = ? AND tenant = ? AND entity = ?"
                f" AND key IN ({','.join('?' * len(chunk))})", (source, tenant, entity, *chunk))
            out.update({k: d for k, d in rows})
        return out

    async def entity_tenants(self, source: str, entity: str, keys: Sequence[str]) -> dict[str, str]:
        """The tenant each of these records is in, for a source whose changes do not always
        say (Asteria's deletions): from `record_tenants`, else from the rows schema 2 to 3
        kept in `entity_state` (the last one written winning: a record that moved). One
        index lookup per key in each."""
        out: dict[str, str] = {}
        for i in range(0, len(keys), 500):
            chunk = list(keys[i:i + 500])
            marks = ",".join("?" * len(chunk))
            rows = await self._all("SELECT key, tenant FROM record_tenants WHERE source = ? AND"
                                   f" entity = ? AND key IN ({marks})", (source, entity, *chunk))
            out.update({k: t for k, t in rows})
            older = [k for k in chunk if k not in out]
            if older:
                rows = await self._all(
                    "SELECT key, tenant FROM entity_state WHERE source = ? AND entity = ? AND"
                    f" key IN ({','.join('?' * len(older))}) AND tenant != '' ORDER BY updated",
                    (source, entity, *older))
                out.update({k: t for k, t in rows})
        return out

    async def sink_state(self, sink: str, keys: Sequence[str]) -> dict[str, tuple[int, bytes]]:
        """What a sink remembers of these keys: key -> (seq, value)."""
        out: dict[str, tuple[int, bytes]] = {}
        for i in range(0, len(keys), 500):
            chunk = list(keys[i:i + 500])
            rows = await self._all("SELECT key, seq, value FROM sink_state WHERE sink = ? AND key IN"
                                   f" ({','.join('?' * len(chunk))})", (sink, *chunk))
            out.update({k: (int(seq), bytes(v)) for k, seq, v in rows})
        return out

    async def dead_letters(self, *, origin: str | None = None, name: str | None = None,
                           status: str | None = None, ids: Sequence[int] = (),
                           limit: int = 1000) -> list[DeadLetterRow]:
        sql = ("SELECT id, created, origin, name, provider, reason, context, raw, event_seq,"
               " attempts, status FROM dead_letters WHERE 1=1")
        params: list[Any] = []
        for column, value in (("origin", origin), ("name", name), ("status", status)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        if ids:
            sql += " AND id IN (" + ",".join("?" * len(ids)) + ")"
            params.extend(ids)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        return [DeadLetterRow(r[0], r[1], r[2], r[3], r[4], r[5], msgspec.json.decode(r[6]),
                              None if r[7] is None else bytes(r[7]), r[8], r[9], r[10])
                for r in await self._all(sql, params)]

    async def counts(self) -> list[tuple[str, str, int]]:
        """(provider, entity, events retained) for every pair in the feed."""
        rows = await self._all("SELECT provider, entity, count(*) FROM events GROUP BY 1, 2 ORDER BY 1, 2")
        return [(p, e, int(n)) for p, e, n in rows]

    async def dead_letter_counts(self) -> dict[tuple[str, str], int]:
        rows = await self._all("SELECT origin, name, count(*) FROM dead_letters GROUP BY 1, 2")
        return {(o, n): int(c) for o, n, c in rows}

    async def meta(self) -> dict[str, str]:
        return {k: v for k, v in await self._all("SELECT key, value FROM meta")}
