"""Where a benchmarked `streamd run`'s memory is, at its peak (`bench/ingest.py --memory`).

Loaded by Python at start when this folder is on PYTHONPATH and STREAMD_MEMPROBE names a
file. Every 0.1 s a thread reads what the process holds (VmRSS: anonymous memory and
mapped files), what SQLite holds (its own allocator's count; per connection, the page
cache and the compiled statements), and what glibc's malloc holds (in use, and taken
from the system: the difference is freed memory malloc kept); it writes the figures of
the sample where RSS was highest to the file. Bench-only: the daemon never loads it.
"""

from __future__ import annotations

import ctypes
import json
import os
import sqlite3
import sys
import threading
import time
from typing import Any

_OUT = os.environ.get("STREAMD_MEMPROBE")
_DBSTATUS_CACHE_USED = 1
_DBSTATUS_STMT_USED = 3
_MB = 2**20


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _install(out: str) -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _Mallinfo2
    lib = ctypes.CDLL("libsqlite3.so.0")  # the library _sqlite3 is linked with: one instance
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    connections: list[sqlite3.Connection] = []
    connect = sqlite3.connect

    def recording_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        con: sqlite3.Connection = connect(*args, **kwargs)
        connections.append(con)
        return con

    sqlite3.connect = recording_connect  # type: ignore[assignment]  # aiosqlite calls this

    def db_status(op: int) -> int:
        total = 0
        for con in list(connections):
            # pysqlite's connection object: PyObject_HEAD, then its sqlite3* handle.
            handle = ctypes.c_void_p.from_address(id(con) + 16).value
            cur, high = ctypes.c_int(), ctypes.c_int()
            if lib.sqlite3_db_status(ctypes.c_void_p(handle), op, ctypes.byref(cur),
                                     ctypes.byref(high), 0) == 0:
                total += cur.value
        return total

    def sample() -> dict[str, float]:
        with open("/proc/self/status") as f:
            status = {k: int(v.split()[0]) * 1024 for k, _, v in (line.partition(":") for line in f)
                      if k in ("VmRSS", "RssAnon", "RssFile")}
        mi = libc.mallinfo2()
        figures = {
            "rss": status["VmRSS"], "anonymous": status["RssAnon"], "files mapped": status["RssFile"],
            "sqlite": lib.sqlite3_memory_used(), "sqlite page caches": db_status(_DBSTATUS_CACHE_USED),
            "sqlite statements": db_status(_DBSTATUS_STMT_USED),
            "malloc in use": mi.uordblks + mi.hblkhd, "malloc held": mi.arena + mi.hblkhd,
        }
        out = {k: round(v / _MB, 1) for k, v in figures.items()}
        out["threads"] = threading.active_count()
        return out

    def probe() -> None:
        peak = 0.0
        while True:
            time.sleep(0.1)
            now = sample()
            if now["rss"] >= peak:
                peak = now["rss"]
                with open(out + ".tmp", "w") as f:
                    json.dump(now, f)
                os.replace(out + ".tmp", out)

    threading.Thread(target=probe, name="memprobe", daemon=True).start()


if _OUT and "streamd" in sys.orig_argv:
    _install(_OUT)
