"""What Python's sqlite3 statement cache holds when multi-row INSERTs vary in size.

    python bench/stmt_cache.py            # 400 random sizes of 1-2,000 rows, 13 columns
    python bench/stmt_cache.py --pieces   # the same rows in the writer's power-of-two pieces

sqlite3 keeps the last 128 statements it compiled, keyed by their text; an INSERT of k
rows is a text of its own for each k. Prints the process's RSS before and after (an
in-memory database, emptied after each statement, so what stays is the statements).
"""

from __future__ import annotations

import argparse
import random
import resource
import sqlite3

from streamd.store.transaction import chunks as _chunks


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--groups", type=int, default=400)
    ap.add_argument("--pieces", action="store_true", help="power-of-two pieces, as the writer does")
    args = ap.parse_args()
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE events (seq, id, source, provider, tenant, entity, op, key, version,"
               " time, received, data, raw)")
    row = "(" + ",".join("?" * 13) + ")"
    before = rss_mb()
    rnd = random.Random(1)
    for _ in range(args.groups):
        n = rnd.randint(1, 2000)
        for _, size in _chunks(n, 2000) if args.pieces else [(0, n)]:
            db.execute("INSERT INTO events VALUES " + ",".join([row] * size), [0] * (13 * size))
        db.execute("DELETE FROM events")
    print(f"RSS {before:.0f} MB before, {rss_mb():.0f} MB after {args.groups} groups "
          f"({'power-of-two pieces' if args.pieces else 'one statement per group'})")


if __name__ == "__main__":
    main()
