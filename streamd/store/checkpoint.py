"""The WAL copied into the database beside the writer, not in its commits.

SQLite checkpoints in the connection that commits, once the WAL passes
`wal_autocheckpoint` pages: the commit that crosses `store.checkpoint_every` then also
copies that much into the database file and fsyncs it, and every event waiting on that
commit waits with it (the steady run's slowest events, docs/benchmarks.md). Here a
connection of its own, on a worker thread, runs a PASSIVE checkpoint once the WAL has
grown past `checkpoint_every`: it copies what no reader still needs without taking the
write lock, so commits go on meanwhile, and the writer restarts the WAL from its start
(truncated back to `checkpoint_every`) at its next commit.

The WAL's size is read from its file: after a restart the file is cut back to
`checkpoint_every` bytes (`journal_size_limit`) and only passes it again once the WAL
holds more than that. The writer keeps SQLite's own checkpoint at twice the size, the
backstop when this task is not running (a CLI command writing) or cannot keep up.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time

import anyio

from ..config import StoreConfig
from ..metrics import Metrics

log = logging.getLogger("streamd.store")

PERIOD = 0.5  # seconds between looks at the WAL's size


class Checkpointer:
    def __init__(self, cfg: StoreConfig, metrics: Metrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.wal = cfg.path + "-wal"
        self._conn: sqlite3.Connection | None = None

    async def run(self) -> None:
        """Look at the WAL every PERIOD; checkpoint when it passed `checkpoint_every`."""
        try:
            while True:
                await anyio.sleep(PERIOD)
                await anyio.to_thread.run_sync(self.step)
        finally:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def step(self) -> bool:
        """On a worker thread: checkpoint if the WAL is past its size. True if it ran."""
        try:
            size = os.stat(self.wal).st_size
        except FileNotFoundError:
            return False
        if size <= self.cfg.checkpoint_every.bytes:
            return False
        began = time.monotonic()
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(self.cfg.path, timeout=0, check_same_thread=False,
                                             isolation_level=None)
            busy, frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            # Left to the next look, or to the writer's own checkpoint at twice the size.
            self.metrics.store_checkpoints.labels("failed").inc()
            log.warning("store: background checkpoint of %s failed: %s", self.cfg.path, exc)
            return False
        self.metrics.store_checkpoint_seconds.observe(time.monotonic() - began)
        self.metrics.store_checkpoints.labels("partial" if busy or copied < frames else "done").inc()
        return True
