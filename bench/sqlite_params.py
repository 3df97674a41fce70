"""What binding one parameter costs Python's sqlite3, by the value's type: the time the
writer's thread holds the GIL before SQLite's step lets it go.

    python bench/sqlite_params.py

A statement of 999 parameters that reads nothing (`SELECT ?,…,? WHERE 0`), executed
again and again with values of one type: the time per parameter is the binding's.
CPython 3.11's sqlite3 binds int, float, str and bytearray directly; any other type,
`bytes` and `None` included, first goes through its adapter lookup (a tuple built, the
adapters' dict, `__adapt__` and `__conform__` looked up). Prints a table.
"""

from __future__ import annotations

import sqlite3
import sys
import timeit

PARAMS = 999


def main() -> None:
    db = sqlite3.connect(":memory:")
    query = "SELECT " + ",".join(["?"] * PARAMS) + " WHERE 0"
    values = {
        "int": 1_767_225_600_000,
        "str (24 characters)": "2026-01-01T00:00:00.002Z",
        "None": None,
        "bytes (16)": bytes(16),
        "bytearray (16)": bytearray(16),
        "bytes (700)": bytes(700),
        "bytearray (700)": bytearray(700),
    }
    print(f"\nbinding one parameter, Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version} "
          f"(best of 5, {PARAMS} parameters a statement)\n")
    print("| value | ns per parameter |")
    print("|---|---:|")
    for name, value in values.items():
        params = [value] * PARAMS
        best = min(timeit.repeat(lambda params=params: db.execute(query, params), number=200, repeat=5))
        print(f"| {name} | {best / 200 / PARAMS * 1e9:.0f} |")
    for size in (16, 700):
        raw = [bytes(size)] * PARAMS
        best = min(timeit.repeat(lambda raw=raw: [bytearray(x) for x in raw], number=200, repeat=5))
        print(f"| bytearray(bytes({size})), the copy alone | {best / 200 / PARAMS * 1e9:.0f} |")


if __name__ == "__main__":
    main()
