"""Asperion polling: simulator (HTTPS, TLS 1.3) → streamd's poller → committed feed.

    python bench/poll.py                     # 2 resources x 20,000 records, 50 ms per request
    python bench/poll.py --records 5000 --latency 0.02 --concurrency 4 --repeat 1

streamd runs as its own process (`synchronous = "full"`), exactly as deployed; this
process runs the simulated Asperion API in a thread. One tenant, `debtors` and
`salesinvoices`, `page_size` 100, every request delayed by `--latency`. Per run, on a
fresh feed:

1. full sync: from streamd's READY to both listings complete and every record's
   `created` event committed (the wall clock the operator waits);
2. no-change re-poll: both listings again, nothing to emit (the listing's own
   duration, from streamd_source_poll_duration_seconds).

Prints a table (median of --repeat runs).
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx
from _common import free_port, up, wait
from anyio.from_thread import start_blocking_portal

from streamd.config import StoreConfig
from streamd.providers.asperion import simulator as sim_mod
from streamd.providers.asperion.oauth import TokenState, save
from streamd.providers.asperion.simulator import Knobs

CONFIG = """
[store]
path = "feed.db"
synchronous = "full"
[http]
listen = "127.0.0.1:{port}"
[daemon]
log_level = "warning"
{source}
"""




def metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    m = re.search(rf"^{re.escape(name)}\{{source=\"ap\"\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0




def one_run(args: argparse.Namespace) -> tuple[float, float, float, int]:
    knobs = Knobs(tenants=("1001",), records=args.records, resources=("debtors", "salesinvoices"),
                  latency=args.latency)
    with tempfile.TemporaryDirectory(prefix="streamd-bench-poll-") as tmp, start_blocking_portal() as portal:
        work = Path(tmp)
        sim = sim_mod.simulator(work / "sim", knobs)
        fut = portal.start_task_soon(sim.serve)
        wait(lambda: sim.url, 10, "the simulator")
        port = free_port()
        source = sim.source_toml("ap", tenants='["1001"]', resources='["debtors", "salesinvoices"]',
                                 page_size="100", concurrency=str(args.concurrency), interval='"1s"')
        (work / "config.toml").write_text(CONFIG.format(port=port, source=source))
        anyio.run(save, StoreConfig(path=str(work / "feed.db")), "ap",
                  TokenState(refresh_token=sim.issue_refresh_token()))
        env = {**os.environ, "NOTIFY_SOCKET": ""}
        proc = subprocess.Popen([sys.executable, "-m", "streamd", "run", "-c", str(work / "config.toml")],
                                cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait(lambda: up(port), 30, "streamd's listener")
            t0 = time.monotonic()
            db = sqlite3.connect(work / "feed.db", timeout=10)
            want = 2 * args.records

            def synced() -> bool:
                n = db.execute("SELECT count(*) FROM events").fetchone()[0]
                done = db.execute("SELECT count(*) FROM source_state WHERE key LIKE 'poll.%'").fetchone()[0]
                return bool(n >= want and done == 2)

            wait(synced, 300, "the full sync")
            full = time.monotonic() - t0
            first = metric(port, "streamd_source_poll_duration_seconds_sum")
            wait(lambda: metric(port, "streamd_source_poll_duration_seconds_count") >= 4, 300, "the re-poll")
            again = (metric(port, "streamd_source_poll_duration_seconds_sum") - first) / 2
            events = db.execute("SELECT count(*) FROM events").fetchone()[0]
            requests = sum(1 for e in sim.log if e.path.startswith("/v1/"))
            db.close()
        finally:
            proc.terminate()
            proc.wait(30)
            fut.cancel()
        if events != want:
            raise SystemExit(f"expected {want} events, the feed has {events}")
        return full, again, want / full, requests




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--records", type=int, default=20_000, help="records per resource")
    ap.add_argument("--latency", type=float, default=0.05, help="seconds added to every API request")
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight per tenant")
    ap.add_argument("--repeat", type=int, default=3, help="runs (median reported)")
    args = ap.parse_args()
    runs = [one_run(args) for _ in range(args.repeat)]
    full = statistics.median(r[0] for r in runs)
    again = statistics.median(r[1] for r in runs)
    rate = statistics.median(r[2] for r in runs)
    pages = 2 * -(-args.records // 100)
    print(f"# Asperion poll: 1 tenant x 2 resources x {args.records:,} records, page_size 100, "
          f"{args.latency * 1000:.0f} ms per request, concurrency {args.concurrency}; "
          f"{os.cpu_count()} cores; median of {args.repeat} runs")
    print(f"| {'measure':<36} | {'median':>10} | {'runs':<30} |")
    print(f"|{'-' * 38}|{'-' * 11}:|{'-' * 32}|")
    print(f"| {'full sync (READY → all committed)':<36} | {full:>9.2f}s | "
          f"{', '.join(f'{r[0]:.2f}' for r in runs):<30} |")
    print(f"| {'no-change re-poll (one listing)':<36} | {again:>9.2f}s | "
          f"{', '.join(f'{r[1]:.2f}' for r in runs):<30} |")
    print(f"| {'events/s during the full sync':<36} | {rate:>10,.0f} | "
          f"{', '.join(f'{r[2]:,.0f}' for r in runs):<30} |")
    print(f"| {'pages per listing round':<36} | {pages:>10} | "
          f"{'floor: ' + f'{pages * args.latency / args.concurrency:.2f}s at this latency':<30} |")


if __name__ == "__main__":
    main()
