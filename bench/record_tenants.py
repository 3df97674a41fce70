"""What keeping an Asteria record's tenant costs SQLite per new record: as a row of
`entity_state` (keyed by tenant first, plus the `entity_state_key` index a deletion looks
it up by) against one narrow row of `record_tenants` (schema 4).

    python bench/record_tenants.py             # 100,000 new records, 500 a commit, x3

Plain sqlite3, the tables as `streamd/store/schema.py` creates them, no streamd code in
the loop: each commit inserts `--batch` records never seen (random 24-hex keys, as
Asteria's Mongo ids are to a B-tree), the statements streamd's writer runs. WAL,
`synchronous = NORMAL` (the fsync is the same for both and is not what is compared),
streamd's 32 MiB page cache. CPU time, not wall time: the disk is shared.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from streamd.store.schema import MIGRATIONS

OLD = ("INSERT INTO entity_state (source, tenant, entity, key, version, data, updated)"
       " VALUES (?,?,?,?,?,?,?) ON CONFLICT (source, tenant, entity, key) DO UPDATE SET"
       " version = excluded.version, data = excluded.data, updated = excluded.updated")
NEW = ("INSERT INTO record_tenants (source, entity, key, tenant) VALUES (?,?,?,?)"
       " ON CONFLICT (source, entity, key) DO UPDATE SET tenant = excluded.tenant")


def run(path: Path, layout: str, n: int, batch: int) -> float:
    """µs of CPU per record (this process's: SQLite's, the kernel's writes included)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute(f"PRAGMA cache_size = -{32 * 1024}")  # streamd's default [store] cache, 32 MiB
    for step in MIGRATIONS:
        for stmt in step:
            db.execute(stmt)
    entities = ("party", "invoice", "transaction")
    rows = [(f"company-{i % 20}", entities[i % 3],
             hashlib.blake2b(str(i).encode(), digest_size=12).hexdigest()) for i in range(n)]
    t0 = time.process_time()
    for i in range(0, n, batch):
        chunk = rows[i:i + batch]
        db.execute("BEGIN IMMEDIATE")
        if layout == "entity_state":
            db.executemany(OLD, [("gw", t, e, k, "2026-12-04T10:00:00.123Z", None, 1796413570000)
                                 for t, e, k in chunk])
        else:
            db.executemany(NEW, [("gw", e, k, t) for t, e, k in chunk])
        db.execute("COMMIT")
    spent = time.process_time() - t0
    db.close()
    return spent * 1e6 / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    got: dict[str, list[float]] = {"entity_state": [], "record_tenants": []}
    with tempfile.TemporaryDirectory(prefix="streamd-tenants-") as tmp:
        for i in range(args.repeat):  # the layouts in turn, so that a busy minute hits both
            for layout in got:
                got[layout].append(run(Path(tmp) / f"{layout}{i}.db", layout, args.records, args.batch))
    print(f"\nrecord tenants: {args.records:,} new records, {args.batch} a commit, plain sqlite3 "
          f"{sqlite3.sqlite_version}; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after; "
          f"median of {args.repeat} [range]\n")
    print("| kept in | CPU µs per new record |")
    print("|---|---:|")
    for layout, us in got.items():
        print(f"| `{layout}` | {statistics.median(us):.1f} [{min(us):.1f}-{max(us):.1f}] |")


if __name__ == "__main__":
    main()
