"""An HTTP receiver down while events keep coming: streamd's memory, and the drain after.

    python bench/sink_outage.py                     # 2,000 events/s, receiver down 120 s
    python bench/sink_outage.py --rate 2000 --outage 600

A real `streamd run` takes the synthetic generator's events at `--rate` per second and
forwards them with the `http` sink (`batch_max` 500) to a receiver (its own process,
bench/http_sink.py's) that is not there for `--outage` seconds. The sink's offset holds
and the backlog stays in SQLite; the table samples streamd's RSS, the feed head and the
sink's lag. Then the receiver starts, and the bench times the catch-up (lag back under
one batch, while the generator goes on) and checks that every event arrived, first
arrivals in feed order.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _common import free_port, wait
from http_sink import ReceiverProcess, start_streamd

CONFIG = """
[store]
path = "feed.db"
synchronous = "full"
[http]
listen = "127.0.0.1:{port}"
[daemon]
log_level = "warning"
[sources.gen]
provider = "synthetic"
rate = {rate}
batch = 100
[sinks.http]
type = "http"
url = "http://127.0.0.1:{receiver}/events"
format = "batch"
batch_max = 500
backoff = {{ min = "200ms", max = "2s" }}
"""


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) / 1024 if m else 0.0


def metric(http: httpx.Client, name: str) -> float:
    text = http.get("/metrics").text
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--rate", type=float, default=2000.0, help="events per second")
    ap.add_argument("--outage", type=float, default=120.0, help="seconds the receiver is down")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    args = ap.parse_args()
    port, receiver_port = free_port(), free_port()
    rows: list[tuple[float, float, int, int, str]] = []
    with tempfile.TemporaryDirectory(prefix="streamd-bench-outage-") as tmp, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        work = Path(tmp)
        proc = start_streamd(work, CONFIG.format(port=port, rate=args.rate, receiver=receiver_port), port)
        receiver: ReceiverProcess | None = None
        try:
            t0 = time.monotonic()

            def sample(phase: str) -> None:
                rows.append((time.monotonic() - t0, rss_mb(proc.pid),
                             int(metric(http, "streamd_feed_head_seq")),
                             int(metric(http, 'streamd_sink_lag_events{sink="http"}')), phase))

            while time.monotonic() - t0 < args.outage:
                sample("receiver down")
                time.sleep(args.sample)
            sample("receiver down")
            backlog = rows[-1][3]
            receiver = ReceiverProcess(0.0, receiver_port)
            t1 = time.monotonic()
            next_sample = t1 + args.sample
            while metric(http, 'streamd_sink_lag_events{sink="http"}') >= 500:
                if time.monotonic() >= next_sample:
                    sample("draining")
                    next_sample += args.sample
                if time.monotonic() - t1 > 1800:
                    raise SystemExit("the backlog did not drain in 30 minutes")
                time.sleep(0.2)
            drained = time.monotonic() - t1
            sample("caught up")
            head = rows[-1][2]
            wait(lambda: receiver is not None and receiver.counts()["unique"] >= head, 60, "every event")
            counts = receiver.counts()
        finally:
            proc.terminate()
            proc.wait(120)
            if receiver is not None:
                receiver.close()
    print(f"# http sink, receiver down {args.outage:.0f} s under {args.rate:,.0f} events/s "
          f"(synthetic generator, batch_max 500); {os.cpu_count()} cores")
    print(f"| {'t (s)':>6} | {'RSS (MB)':>8} | {'feed head':>9} | {'sink lag':>8} | phase")
    print(f"|{'-' * 7}:|{'-' * 9}:|{'-' * 10}:|{'-' * 9}:|{'-' * 16}")
    for t, rss, head_, lag, phase in rows:
        print(f"| {t:>6.0f} | {rss:>8.1f} | {head_:>9,} | {lag:>8,} | {phase}")
    peak = max(r[1] for r in rows)
    print(f"\npeak RSS {peak:.1f} MB; backlog {backlog:,} events drained in {drained:.1f} s "
          f"({backlog / drained:,.0f} events/s over the incoming {args.rate:,.0f}/s); "
          f"receiver: {counts['unique']:,} unique events of {counts['events']:,} delivered, "
          f"{counts['out_of_order']} first arrivals out of feed order")


if __name__ == "__main__":
    sys.exit(main())
