"""One commit group's transaction: the SQL the writer runs, on SQLite's thread.

`commit` writes a group of batches in one transaction: their events' ids recorded (a
duplicate dropped, here and within the group) and their rows appended under the next
seqs, then everything else the batches carry (progress, entity state, record tenants,
dead letters, sink offsets and state, meta, retention's prune). Pure of the event loop:
the writer (`writer.py`) hands it the whole group in one trip to SQLite's thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from itertools import chain

import msgspec

from ..model import Event, dedupe_bucket
from .batch import Batch, Committed
from .sealed import Sealer, encode_state

# Rows per multi-row statement. Small enough that the statements compiled for every piece
# size stay small (see `chunks`): 256 rows and 1,024 pairs keep them at 2 MB, where 2,000
# and 8,000 held 11 MB of a 100 MB budget, for no speed (docs/benchmarks.md, "Peak RSS
# under the full-speed run"). SQLite allows 32,766 parameters.
_CHUNK = 1024  # (bucket, id) pairs per statement
_ROWS = 256  # event rows per INSERT (13 parameters each)
_EVENT_ROW = "(" + ",".join("?" * 13) + ")"


def chunks(n: int, most: int) -> list[tuple[int, int]]:
    """(start, size) pieces of n rows: full pieces of `most`, the rest in powers of two.

    Why not pieces of whatever size a group has: Python's sqlite3 keeps the last 128
    statements it compiled, keyed by their text, and a multi-row INSERT of k rows is a
    statement of its own for every k. Commit groups of ever-changing sizes filled that
    cache with statements of up to 26,000 parameters, ~1.2 MB compiled per 1,000 rows:
    tens of MB that stayed (docs/benchmarks.md, "Memory while the store is slow"). In
    powers of two the texts are few (9 for 256 rows) and a group costs at most 8
    more statements."""
    out: list[tuple[int, int]] = []
    i = 0
    while n - i >= most:
        out.append((i, most))
        i += most
    size = 1 << max(0, (n - i).bit_length() - 1)
    while i < n:
        if n - i >= size:
            out.append((i, size))
            i += size
        size >>= 1
    return out


_json = msgspec.json.Encoder(decimal_format="string")
UPSERT_STATE = ("INSERT INTO source_state (source, key, value, updated) VALUES (?,?,?,?)"
                " ON CONFLICT (source, key) DO UPDATE SET value = excluded.value,"
                " updated = excluded.updated")


def _record_ids(db: sqlite3.Connection, pieces: list[tuple[list[object], list[bytes]]]) -> list[bytes]:
    """Record each piece's (bucket, id) pairs (`params`) of its `ids` in the dedupe index;
    the ids that were not there (each once).

    Most often all of them are new, and an INSERT that steps once per piece says so by
    its count of rows. `RETURNING id` would say which, but steps once per new id, and at
    each step Python's sqlite3 gives the GIL up and waits to get it back from the event
    loop, busy normalizing the next frames: measured, recording the ids took 24 µs an
    event of the writer's time with `RETURNING`, where SQLite's CPU for the whole commit
    is 15 (docs/benchmarks.md, issue 18). When some were there already, or an id comes
    twice, the inserts are undone and done again with `RETURNING`. (On an error nothing
    is released: `commit` rolls the whole transaction back.)"""
    insert = "INSERT OR IGNORE INTO event_ids (bucket, id) VALUES "
    db.execute("SAVEPOINT ids")
    if all(db.execute(insert + ",".join(["(?,?)"] * len(ids)), params).rowcount == len(ids)
           for params, ids in pieces):
        db.execute("RELEASE ids")
        return [idb for _, ids in pieces for idb in ids]
    db.execute("ROLLBACK TO ids")
    new = [r[0] for params, ids in pieces
           for r in db.execute(insert + ",".join(["(?,?)"] * len(ids)) + " RETURNING id", params).fetchall()]
    db.execute("RELEASE ids")
    return new


def commit(db: sqlite3.Connection, *, batches: Sequence[Batch], head: int, now_ms: int, keep_raw: bool,
           sealer: Sealer) -> tuple[list[Committed], int]:
    """The group's transaction, on SQLite's thread (it must not touch the event loop):
    a `Committed` per batch, and how many events retention pruned."""
    db.execute("BEGIN IMMEDIATE")
    try:
        done = _statements(db, batches, head, now_ms, keep_raw, sealer)
        db.execute("COMMIT")
    except BaseException:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the failed statement may already have rolled back
        raise
    return done


def _statements(db: sqlite3.Connection, group: Sequence[Batch], head: int, now_ms: int, keep_raw: bool,
                sealer: Sealer) -> tuple[list[Committed], int]:
    """Every statement of the transaction; `head` is the feed's head before it."""
    events = [ev for batch in group for ev in batch.events]
    ids: list[bytes] = []
    blobs: list[bytearray] = []
    new: set[bytes] = set()
    if events:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        head = int(row[0]) if row else 0
        ids = [bytes.fromhex(ev.id) for ev in events]
        # The events' blobs (ids, data, raw) are bound as bytearrays, copies of the bytes:
        # CPython 3.11's sqlite3 binds int, float, str and bytearray directly but looks up
        # an adapter for `bytes` first, 310 ns a value more than the copy costs, with the
        # GIL held while the event loop waits (four a seed-shaped event;
        # bench/sqlite_params.py). The ids stay bytes too, for the sets; each id's copy is
        # made once and bound in both of its statements.
        blobs = list(map(bytearray, ids))
        pieces: list[tuple[list[object], list[bytes]]] = []
        for i, size in chunks(len(ids), _CHUNK):
            params: list[object] = []
            for ev, blob in zip(events[i:i + size], blobs[i:i + size], strict=True):
                params += (dedupe_bucket(ev.version), blob)
            pieces.append((params, ids[i:i + size]))
        new.update(_record_ids(db, pieces))

    rows: list[tuple[int, bytearray, Event]] = []  # (seq, id, event) of each event appended
    results: list[Committed] = []
    k = 0
    for batch in group:
        appended = dup = 0
        first = 0
        for ev in batch.events:
            idb = ids[k]
            k += 1
            if idb in new:
                new.discard(idb)  # a second copy later in this group is a duplicate
                head += 1
                first = first or head
                appended += 1
                rows.append((head, blobs[k - 1], ev))
            else:
                dup += 1
        results.append(Committed(appended, dup, first, head if appended else 0, head))
    for i, size in chunks(len(rows), _ROWS):
        # Each statement's rows made for it alone, so that only one statement's copies of
        # the blobs (bytearrays, above) are held at a time.
        db.execute(
            "INSERT INTO events (seq, id, source, provider, tenant, entity, op, key, version,"
            " time, received, data, raw) VALUES " + ",".join([_EVENT_ROW] * size),
            list(chain.from_iterable(
                (seq, blob, ev.source, ev.provider, ev.tenant, ev.entity, ev.op, ev.key,
                 ev.version, ev.time, now_ms, bytearray(ev.data),
                 bytearray(ev.raw) if keep_raw and ev.raw is not None else None)
                for seq, blob, ev in rows[i:i + size])))

    progress = [row for batch in group if batch.source
                for row in encode_state(sealer, batch.source, batch.progress, now_ms)]
    if progress:
        db.executemany(UPSERT_STATE, progress)
    upserts, deletes = [], []
    for batch in group:
        for st in batch.entity_states:
            if st.version is None:
                deletes.append((batch.source, st.tenant, st.entity, st.key))
            else:
                upserts.append((batch.source, st.tenant, st.entity, st.key, st.version,
                                st.data, now_ms))
    if upserts:
        db.executemany(
            "INSERT INTO entity_state (source, tenant, entity, key, version, data, updated)"
            " VALUES (?,?,?,?,?,?,?) ON CONFLICT (source, tenant, entity, key) DO UPDATE SET"
            " version = excluded.version, data = excluded.data, updated = excluded.updated",
            upserts)
    if deletes:
        db.executemany(
            "DELETE FROM entity_state WHERE source = ? AND tenant = ? AND entity = ?"
            " AND key = ?", deletes)
    tenants = [(batch.source, t.entity, t.key, t.tenant) for batch in group
               for t in batch.record_tenants]
    # Multi-row statements, not `executemany`: that steps once per row, and gives the GIL
    # up and waits to get it back from the event loop at every step (as `_record_ids`).
    # A record twice in one statement is upserted in order, as by `executemany`.
    for i, size in chunks(len(tenants), _ROWS):
        db.execute(
            "INSERT INTO record_tenants (source, entity, key, tenant) VALUES "
            + ",".join(["(?,?,?,?)"] * size)
            + " ON CONFLICT (source, entity, key) DO UPDATE SET tenant = excluded.tenant",
            list(chain.from_iterable(tenants[i:i + size])))
    dls = [(now_ms, d.origin, d.name, d.provider, d.reason, _json.encode(d.context), d.raw,
            d.event_seq, d.attempts) for batch in group for d in batch.dead_letters]
    if dls:
        db.executemany(
            "INSERT INTO dead_letters (created, origin, name, provider, reason, context, raw,"
            " event_seq, attempts) VALUES (?,?,?,?,?,?,?,?,?)", dls)
    offsets = [(sink, seq, now_ms) for batch in group for sink, seq in batch.offsets.items()]
    if offsets:
        db.executemany(
            "INSERT INTO sink_offsets (sink, seq, updated) VALUES (?,?,?) ON CONFLICT (sink)"
            " DO UPDATE SET seq = excluded.seq, updated = excluded.updated", offsets)
    kept = [(sink, st.key, st.seq, st.value) for batch in group
            for sink, states in batch.sink_states.items() for st in states]
    if kept:
        db.executemany(
            "INSERT INTO sink_state (sink, key, seq, value) VALUES (?,?,?,?) ON CONFLICT (sink, key)"
            " DO UPDATE SET seq = excluded.seq, value = excluded.value", kept)
    resolved = [(i,) for batch in group for i in batch.resolved_dead_letters]
    if resolved:
        db.executemany("DELETE FROM dead_letters WHERE id = ?", resolved)
    meta = [(k, v) for batch in group for k, v in batch.meta.items()]
    if meta:
        db.executemany("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key)"
                       " DO UPDATE SET value = excluded.value", meta)
    pruned = 0
    prune = max((batch.prune_upto for batch in group), default=0)
    if prune:
        # Retention is the dedupe horizon: a pruned event's id goes with it.
        gone = db.execute("SELECT version, id FROM events WHERE seq <= ?", (prune,)).fetchall()
        db.executemany("DELETE FROM event_ids WHERE bucket = ? AND id = ?",
                       [(dedupe_bucket(v), i) for v, i in gone])
        cur = db.execute("DELETE FROM events WHERE seq <= ?", (prune,))
        pruned = max(cur.rowcount, 0)
    return results, pruned
