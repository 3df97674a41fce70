"""Encode once: keep each event's feed line in SQLite from its commit, or render it once
when it is first read (what streamd does: `store.reader.FeedEvent.line`, shared by the
sinks' readers through `Lines`). The same rows both ways, so the costs compare.

    python bench/encode_once.py                  # the first 50,000 events of bench/http_sink.py's feed
    python bench/encode_once.py --events 20000 --repeat 5

Each way commits the rows into a fresh feed (WAL, `synchronous = FULL`, transactions of
1,000 rows as the writer groups them), the stored way rendering every line at commit;
then reads them back in batches of 1,000 as a sink's dispatcher does and takes every
line. Prints µs per event to commit, µs per event to read a line, and bytes per event
on disk (after a checkpoint). Median of --repeat runs.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from http_sink import prefilled

from streamd.model import cloudevent, render_line
from streamd.store.reader import _COLUMNS, _row_to_event

_BATCH = 1000


def _line(r: tuple[Any, ...]) -> bytes:
    return render_line(cloudevent(seq=r[0], id=r[1].hex(), source=r[2], provider=r[3], tenant=r[4],
                                  entity=r[5], op=r[6], key=r[7], time=r[8], data=r[10]))


def run(rows: list[tuple[Any, ...]], stored: bool) -> tuple[float, float, float]:
    """(µs per event to commit, µs per event to read its line, bytes per event on disk)."""
    with tempfile.TemporaryDirectory(prefix="streamd-bench-encode-") as tmp:
        path = Path(tmp) / "feed.db"
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB, source TEXT,"
                   " provider TEXT, tenant TEXT, entity TEXT, op TEXT, key TEXT, time TEXT,"
                   " received INTEGER, data BLOB" + (", line BLOB" if stored else "") + ")")
        insert = f"INSERT INTO events VALUES ({','.join('?' * (12 if stored else 11))})"
        t0 = time.perf_counter()
        for i in range(0, len(rows), _BATCH):
            batch = rows[i:i + _BATCH]
            db.execute("BEGIN")
            db.executemany(insert, [(*r, _line(r)) for r in batch] if stored else batch)
            db.execute("COMMIT")
        commit = time.perf_counter() - t0
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = os.path.getsize(path)
        t0 = time.perf_counter()
        sql = f"SELECT {_COLUMNS}{', line' if stored else ''} FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
        for i in range(0, len(rows), _BATCH):
            got = db.execute(sql, (i, _BATCH)).fetchall()
            lines = [r[-1] for r in got] if stored else [_row_to_event(r).line for r in got]
            assert len(lines) == len(got)
        read = time.perf_counter() - t0
        db.close()
    n = len(rows)
    return commit / n * 1e6, read / n * 1e6, size / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each (median reported)")
    args = ap.parse_args()
    src = sqlite3.connect(prefilled(max(args.events, 100_000)))
    rows = src.execute(f"SELECT {_COLUMNS} FROM events ORDER BY seq LIMIT ?", (args.events,)).fetchall()
    src.close()
    same = all(_line(r) == _row_to_event(r).line for r in rows[:1000])
    results: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
    for _ in range(args.repeat):
        for stored in (False, True):  # interleaved, so a busy spell on the machine hits both
            results[stored].append(run(rows, stored))
    print(f"# encode once: {len(rows):,} events of bench/http_sink.py's feed, WAL, synchronous = FULL, "
          f"{_BATCH:,} per transaction; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; median of {args.repeat}; lines identical both ways: {same}")
    print("| the line                          | commit µs/event | read µs/event | bytes/event on disk |")
    print("|-----------------------------------|----------------:|--------------:|--------------------:|")
    for stored, label in ((False, "rendered once when first read"), (True, "stored in SQLite at commit")):
        commit, read, size = (statistics.median(r[i] for r in results[stored]) for i in range(3))
        print(f"| {label:<33} | {commit:>15.1f} | {read:>13.1f} | {size:>19,.0f} |")


if __name__ == "__main__":
    sys.exit(main())
