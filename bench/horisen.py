"""HORISEN: simulator (HTTPS) → streamd's poller → feed → `sftp` sink → OpenSSH's sshd.

    python bench/horisen.py                          # 10,000 documents, 5 ms per request
    python bench/horisen.py --documents 2000 --latency 0.02 --repeat 1

streamd runs as its own process (`synchronous = "full"`), as deployed; this process
runs the simulated HORISEN API in a thread and a real sshd (tests/sftp_server.py) on
loopback. Per run, on a fresh feed and an empty remote directory:

1. poll: streamd with the source only, from READY until every document's `created`
   (with its traffic reports: one request per document) is committed → documents/s;
2. sink: streamd again with the `sftp` sink added, from READY until every invoice is a
   file in the remote directory (rendered, uploaded, fsynced, renamed) → files/s.

Prints a table (median of --repeat runs).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from anyio.from_thread import start_blocking_portal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import free_port, up, wait  # noqa: E402

from streamd.providers.horisen import simulator as sim_mod  # noqa: E402
from streamd.providers.horisen.simulator import Knobs  # noqa: E402
from tests.sftp_server import running_sftp_server  # noqa: E402

CONFIG = """
[store]
path = "feed.db"
synchronous = "full"
[http]
listen = "127.0.0.1:{port}"
[daemon]
log_level = "warning"
{source}
{sink}
"""








def run_streamd(work: Path, config: str, port: int, done: object, timeout: float) -> float:
    (work / "config.toml").write_text(config)
    env = {**os.environ, "NOTIFY_SOCKET": ""}
    proc = subprocess.Popen([sys.executable, "-m", "streamd", "run", "-c", str(work / "config.toml")],
                            cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait(lambda: up(port) or proc.poll() is not None, 30, "streamd's listener")
        if proc.poll() is not None:
            raise SystemExit(f"streamd exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        t0 = time.monotonic()
        wait(done, timeout, "the run to complete")
        return time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait(60)


def delivered(directory: Path) -> int:
    if not directory.is_dir():
        return 0
    return sum(1 for p in directory.iterdir() if p.name.endswith(".xml") and not p.name.startswith("."))


def one_run(args: argparse.Namespace) -> tuple[float, float, int]:
    days = max(1, args.documents // args.per_day)
    knobs = Knobs(days=days, documents_per_day=args.per_day, latency=args.latency, partners=200)
    with tempfile.TemporaryDirectory(prefix="streamd-bench-horisen-") as tmp, \
            start_blocking_portal() as portal, running_sftp_server(Path(tmp) / "sftp") as sftp:
        work = Path(tmp)
        sim = sim_mod.simulator(work / "sim", knobs)
        fut = portal.start_task_soon(sim.serve)
        wait(lambda: sim.url, 10, "the simulator")
        want = len(sim.documents())
        port = free_port()
        source = sim.source_toml("hz", interval='"1h"', page_size=str(args.page_size),
                                 concurrency=str(args.concurrency), window=f'"{days + 5}d"')
        db = work / "feed.db"

        def polled() -> bool:
            if not db.exists():
                return False
            c = sqlite3.connect(db, timeout=10)
            try:
                n = c.execute("SELECT count(*) FROM events WHERE entity = 'invoice'").fetchone()[0]
                return bool(n >= want)
            finally:
                c.close()

        try:
            poll = run_streamd(work, CONFIG.format(port=port, source=source, sink=""), port, polled, 600)
            sink = sftp.sink_toml("erp", concurrency=args.sink_concurrency, batch_max=args.batch)
            files = run_streamd(work, CONFIG.format(port=port, source=source, sink=sink), port,
                                lambda: delivered(sftp.local_dir) >= want, 600)
            requests = sum(1 for e in sim.log if e.status == 200)
        finally:
            fut.cancel()
        return want / poll, want / files, requests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--documents", type=int, default=10_000)
    ap.add_argument("--per-day", type=int, default=100, help="documents per day of history")
    ap.add_argument("--latency", type=float, default=0.005, help="seconds added to every API request")
    ap.add_argument("--page-size", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=8, help="the source's requests in flight")
    ap.add_argument("--sink-concurrency", type=int, default=8, help="the sink's files in flight")
    ap.add_argument("--batch", type=int, default=100, help="the sink's batch_max")
    ap.add_argument("--repeat", type=int, default=3, help="runs (median reported)")
    args = ap.parse_args()
    runs = [one_run(args) for _ in range(args.repeat)]
    docs = statistics.median(r[0] for r in runs)
    files = statistics.median(r[1] for r in runs)
    print(f"# HORISEN: {args.documents:,} documents with traffic reports, {args.latency * 1000:g} ms per "
          f"request, page_size {args.page_size}, concurrency {args.concurrency}; sftp sink to OpenSSH "
          f"sshd on loopback, {args.sink_concurrency} files in flight, batch {args.batch}, fsync on; "
          f"{os.cpu_count()} cores; median of {args.repeat} runs")
    print(f"| {'measure':<40} | {'median':>10} | {'runs':<30} |")
    print(f"|{'-' * 42}|{'-' * 11}:|{'-' * 32}|")
    print(f"| {'poll: documents/s (READY → committed)':<40} | {docs:>10,.0f} | "
          f"{', '.join(f'{r[0]:,.0f}' for r in runs):<30} |")
    print(f"| {'sink: files/s (READY → all renamed)':<40} | {files:>10,.0f} | "
          f"{', '.join(f'{r[1]:,.0f}' for r in runs):<30} |")
    print(f"| {'API requests per run (pages + reports)':<40} | {runs[0][2]:>10,} | {'':<30} |")
    floor = runs[0][2] * args.latency / args.concurrency
    print(f"| {'poll floor at this latency':<40} | {args.documents / floor if floor else 0:>10,.0f} | "
          f"{'documents/s (requests x latency / concurrency)':<30} |")


if __name__ == "__main__":
    main()
