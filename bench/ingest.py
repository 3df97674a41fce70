"""Ingest end to end: Asteria simulator → streamd (mTLS websocket) → committed feed → file sink.

    python bench/ingest.py                       # 100,000 events at full speed; 30 s at 2,000/s
    python bench/ingest.py --events 20000 --seconds 10

streamd runs as its own process with `synchronous = "full"` and a file sink that
fsyncs every batch, exactly as deployed. This process runs the simulated gateway
and watches the file sink's file. Two runs, each on a fresh feed:

1. full speed: N events made in advance, sent as fast as streamd takes them; the clock
   runs from the first frame sent to the N-th line in the file (durable: committed to
   the feed and fsynced in the file). The time to the feed's commit is shown too.
2. steady 2,000 events/s: each event is stamped (updatedAt, hence the line's `time`)
   when the simulator sends it; the latency is the moment its line appears in the file
   minus that stamp. The first 2 seconds are left out (warm-up; a quarter of a short run).

Prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from anyio.from_thread import start_blocking_portal

from streamd.providers.asteria import simulator as sim_mod
from streamd.providers.asteria.simulator import AsteriaSimulator, Knobs

CONFIG = """
[store]
path = "feed.db"
synchronous = "full"
[http]
listen = "127.0.0.1:0"
[daemon]
log_level = "warning"
{source}
[sinks.file]
type = "file"
path = "feed.jsonl"
rotate_bytes = 0
fsync = true
"""


class FileWatcher(threading.Thread):
    """Reads the file sink's file as it grows; notes when each line appeared."""

    def __init__(self, path: Path, latency: bool) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.latency = latency
        self.lines = 0
        self.samples: list[tuple[float, float]] = []  # (arrived, sent) unix seconds
        self.stop = threading.Event()
        self.last_at = 0.0

    def run(self) -> None:
        while not self.path.exists() and not self.stop.is_set():
            time.sleep(0.001)
        buf = b""
        # Light on the machine it measures: the throughput run only counts newlines (in C),
        # the latency run (2,000 lines/s) polls often and parses each line.
        poll = 0.0005 if self.latency else 0.002
        with open(self.path, "rb") as f:
            while not self.stop.is_set():
                chunk = f.read(1 << 20)
                if not chunk:
                    time.sleep(poll)
                    continue
                now = time.time()
                self.last_at = now
                if not self.latency:
                    self.lines += chunk.count(b"\n")
                    continue
                buf += chunk
                *complete, buf = buf.split(b"\n")
                self.lines += len(complete)
                if self.latency:
                    for line in complete:
                        t = json.loads(line)["time"]
                        sent = datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
                        self.samples.append((now, sent))


def start_streamd(workdir: Path, sim: AsteriaSimulator) -> subprocess.Popen[bytes]:
    cfg = workdir / "config.toml"
    cfg.write_text(CONFIG.format(source=sim.source_toml("gw")))
    return subprocess.Popen([sys.executable, "-m", "streamd", "run", "-c", str(cfg)], cwd=workdir,
                            stderr=open(workdir / "streamd.log", "wb"))  # noqa: SIM115


def head(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=10)
    try:
        row = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) if row else 0
    except sqlite3.Error:
        return 0
    finally:
        con.close()


def run(workdir: Path, knobs: Knobs, n: int, prepare: bool) -> dict[str, float]:
    workdir.mkdir(parents=True)
    sim = sim_mod.simulator(workdir / "certs", knobs)
    if prepare:
        sim.prepared = [sim_mod.event(i) for i in range(n)]
    with start_blocking_portal() as portal:
        fut = portal.start_task_soon(sim.serve)
        while not sim.url:
            time.sleep(0.01)
        watcher = FileWatcher(workdir / "feed.jsonl", latency=not prepare)
        watcher.start()
        proc = start_streamd(workdir, sim)
        try:
            while sim.upgrades == 0:
                time.sleep(0.001)
                if proc.poll() is not None:
                    raise SystemExit((workdir / "streamd.log").read_text())
            t0 = time.time()
            committed_at = 0.0
            while watcher.lines < n:
                if not committed_at and head(workdir / "feed.db") >= n:
                    committed_at = time.time()
                time.sleep(0.005)
            done_at = watcher.last_at
        finally:
            proc.terminate()
            proc.wait(30)
            watcher.stop.set()
            fut.cancel()
    out = {"events": n, "seconds": done_at - t0, "commit_seconds": (committed_at or done_at) - t0}
    if not prepare:
        cut = t0 + min(2.0, (done_at - t0) / 4)  # warm-up: 2 s, or a quarter of a short run
        lat = sorted(a - s for a, s in watcher.samples if s >= cut)
        out["p50"] = lat[len(lat) // 2] * 1000
        out["p99"] = lat[int(len(lat) * 0.99)] * 1000
        out["max"] = lat[-1] * 1000
        out["samples"] = len(lat)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=3, help="full-speed runs (median reported)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="streamd-ingest-") as tmp:
        fasts = sorted((run(Path(tmp) / f"fast{i}", Knobs(count=args.events), args.events, prepare=True)
                        for i in range(args.repeat)), key=lambda r: r["seconds"], reverse=True)
        steady_n = int(args.rate * args.seconds)
        steady = run(Path(tmp) / "steady", Knobs(count=steady_n, rate=args.rate, stamp_now=True),
                     steady_n, prepare=False)
    print(f"\ningest: Asteria simulator -> streamd (mTLS websocket) -> feed (synchronous=full) -> "
          f"file sink (fsync per batch); {os.cpu_count()} cores; full speed: median of {args.repeat} "
          "runs [range]\n")
    durable = [r["events"] / r["seconds"] for r in fasts]
    committed = sorted(r["events"] / r["commit_seconds"] for r in fasts)
    fast = fasts[len(fasts) // 2]
    print("| run | events | durable events/s (in the file) | committed events/s (in the feed) | "
          "latency p50 | latency p99 | latency max |")
    print("|---|---|---|---|---|---|---|")
    print(f"| full speed | {fast['events']:,} | {durable[len(durable) // 2]:,.0f} "
          f"[{durable[0]:,.0f}-{durable[-1]:,.0f}] | {committed[len(committed) // 2]:,.0f} "
          f"[{committed[0]:,.0f}-{committed[-1]:,.0f}] | - | - | - |")
    rate = steady["events"] / steady["seconds"]
    print(f"| steady {args.rate:,.0f}/s | {steady['events']:,} | {rate:,.0f} | "
          f"- | {steady['p50']:.1f} ms | {steady['p99']:.1f} ms | {steady['max']:.1f} ms |")


if __name__ == "__main__":
    main()
