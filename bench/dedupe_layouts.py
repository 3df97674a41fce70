"""Why `event_ids` is a WITHOUT ROWID table and the WAL checkpoints rarely: the numbers.

    python bench/dedupe_layouts.py              # 1,000,000 events prefilled per layout
    python bench/dedupe_layouts.py --prefill 200000

Plain sqlite3 (no streamd code), synchronous=FULL, WAL, batches of 1000 events of
~850 bytes appended to a feed that already holds --prefill events, for each way of
keeping event ids unique:

  text-unique     events.id TEXT UNIQUE (32 hex chars), SELECT ... IN to find duplicates
  blob-unique     events.id BLOB UNIQUE (16 bytes)
  int-rowid       ids(h INTEGER PRIMARY KEY) holding the first 8 bytes (needs a full-id
                  check on collision; shown for its cost only)
  blob-withoutrowid  ids(id BLOB PRIMARY KEY) WITHOUT ROWID, INSERT OR IGNORE ... RETURNING
  bucketed        ids(bucket TEXT, id BLOB, PRIMARY KEY (bucket, id)) WITHOUT ROWID, the bucket
                  being the second of the event's version stamp (what streamd does)
  none            no dedupe at all: the ceiling

Each event's version is a provider update stamp, events 0.5 ms apart (2,000/s).

each with SQLite's default auto-checkpoint (1000 pages = 4 MiB of WAL) and with
streamd's (16384 pages = 64 MiB). Prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
DATA = (b'{"kind":"invoice","direction":"receivable","number":"2026000123","currency":"EUR",'
        b'"net":"1234.56","tax":"308.64","total":"1543.20","party":{"key":"acme-party-00042",'
        b'"name":"Brightwater Ltd"},"issued":"2026-01-01","due":"2026-01-31","status":"open",'
        b'"lines":[{"description":"Consulting","quantity":"1","unit_price":"1234.56"}]}') * 2
LAYOUTS = ("text-unique", "blob-unique", "int-rowid", "blob-withoutrowid", "bucketed", "none")
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def stamp(i: int) -> str:
    t = T0 + i * 0.0005
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def run(layout: str, prefill: int, appends: int, checkpoint: int) -> float:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"layout-{layout}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA cache_size=-32768")
    idcol = {"text-unique": "id TEXT NOT NULL UNIQUE", "blob-unique": "id BLOB NOT NULL UNIQUE"}.get(
        layout, "id BLOB NOT NULL")
    db.execute(f"CREATE TABLE events (seq INTEGER PRIMARY KEY, {idcol}, tenant TEXT, entity TEXT,"
               " key TEXT, time TEXT, received INTEGER, data BLOB)")
    if layout == "blob-withoutrowid":
        db.execute("CREATE TABLE ids (id BLOB PRIMARY KEY) WITHOUT ROWID")
    if layout == "bucketed":
        db.execute("CREATE TABLE ids (bucket TEXT, id BLOB, PRIMARY KEY (bucket, id)) WITHOUT ROWID")
    if layout == "int-rowid":
        db.execute("CREATE TABLE ids (h INTEGER PRIMARY KEY, seq INTEGER NOT NULL)")
    seq = 0

    def ident(i: int) -> bytes | str:
        h = hashlib.sha256(b"ev%d" % i).digest()[:16]
        return h.hex() if layout == "text-unique" else h

    def append(batch: list[bytes | str], first: int) -> None:
        nonlocal seq
        if layout in ("text-unique", "blob-unique"):
            have = {r[0] for r in db.execute(
                f"SELECT id FROM events WHERE id IN ({','.join('?' * len(batch))})", batch)}
            new = [i for i in batch if i not in have]
        elif layout == "blob-withoutrowid":
            got = {r[0] for r in db.execute(
                f"INSERT OR IGNORE INTO ids (id) VALUES {','.join(['(?)'] * len(batch))} RETURNING id",
                batch)}
            new = [i for i in batch if i in got]
        elif layout == "bucketed":
            params: list[object] = []
            for k, i in enumerate(batch):
                params += (stamp(first + k)[:19], i)
            got = {r[0] for r in db.execute(
                f"INSERT OR IGNORE INTO ids (bucket, id) VALUES {','.join(['(?,?)'] * len(batch))}"
                " RETURNING id", params)}
            new = [i for i in batch if i in got]
        elif layout == "int-rowid":
            hs = [int.from_bytes(i[:8], "big", signed=True) for i in batch]  # type: ignore[index]
            have = {r[0] for r in db.execute(
                f"SELECT h FROM ids WHERE h IN ({','.join('?' * len(hs))})", hs)}
            new = [i for i, h in zip(batch, hs, strict=True) if h not in have]
        else:
            new = batch
        rows = []
        for i in new:
            seq += 1
            rows.append((seq, i, "acme", "invoice", f"k{seq}", "", 0, DATA))
        db.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?)", rows)
        if layout == "int-rowid":
            db.executemany("INSERT INTO ids VALUES (?,?)",
                           [(int.from_bytes(r[1][:8], "big", signed=True), r[0]) for r in rows])

    i = 0
    db.execute("BEGIN")
    while i < prefill:
        n = min(10_000, prefill - i)
        append([ident(j) for j in range(i, i + n)], i)
        i += n
        if i % 100_000 == 0:
            db.execute("COMMIT")
            db.execute("BEGIN")
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute(f"PRAGMA wal_autocheckpoint={checkpoint}")
    t0 = time.perf_counter()
    for _ in range(appends // 1000):
        db.execute("BEGIN IMMEDIATE")
        append([ident(j) for j in range(i, i + 1000)], i)
        db.execute("COMMIT")
        i += 1000
    rate = appends / (time.perf_counter() - t0)
    db.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefill", type=int, default=1_000_000)
    ap.add_argument("--appends", type=int, default=60_000)
    args = ap.parse_args()
    rows = []
    for layout in LAYOUTS:
        for checkpoint in (1000, 16384):
            rows.append((layout, checkpoint, run(layout, args.prefill, args.appends, checkpoint)))
            os.sync()
    print(f"\ndedupe layouts: {args.appends:,} appends in batches of 1000 onto {args.prefill:,} events, "
          "synchronous=FULL\n")
    print("| layout | auto-checkpoint | appends/s |")
    print("|---|---|---|")
    for layout, checkpoint, rate in rows:
        print(f"| {layout} | {checkpoint} pages ({checkpoint * 4096 / 2**20:.0f} MiB) | {rate:,.0f} |")


if __name__ == "__main__":
    main()
