"""The `http` sink: a prefilled feed drained by a real `streamd run` into a local receiver.

    python bench/http_sink.py                        # 200,000 events; single format on 20,000
    python bench/http_sink.py --events 50000 --single-events 5000 --repeat 1

streamd runs as its own process (`synchronous = "full"`), as deployed; the receiver is
another process (a minimal HTTP/1.1 server on asyncio that only decodes and counts the
events, so it does not share a GIL with streamd or this driver). Once, the feed is
prefilled: streamd with the synthetic generator at full speed and no sink, until
`--events` events are committed (cached in bench/out/). Then per run, on a copy of that
feed: streamd starts with the `http` sink added (offset at the beginning), and the clock
runs from its READY to the receiver having counted every event → events/s.

Configurations: `batch` (batch_max 500, and the default 100), and `single` (one request
per event) with max_in_flight 1 and 8 (on a feed of `--single-events` events), each to a
receiver that answers at once; then some of them again to a receiver that takes
`--latency` ms per request (single: on `--slow-events` events), as a remote one would.
Prints a table (median of --repeat runs).
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
from pathlib import Path

import httpx
from _common import free_port, start_streamd, stop_streamd, wait

OUT = Path(__file__).resolve().parent / "out"

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
tenants = ["acme", "globex", "initech"]
rate = 0
count = {events}
batch = 1000
seed = 42
{sink}
"""

RUNS = (  # (format, sink keys, which feed: --events, --single-events or --slow-events, slow receiver)
    ("batch, batch_max 500", 'format = "batch"\nbatch_max = 500', "events", False),
    ("batch, batch_max 100 (default)", 'format = "batch"\nbatch_max = 100', "events", False),
    ("single, max_in_flight 1", 'format = "single"\nmax_in_flight = 1\nbatch_max = 500', "single", False),
    ("single, max_in_flight 8", 'format = "single"\nmax_in_flight = 8\nbatch_max = 500', "single", False),
    ("batch, batch_max 500", 'format = "batch"\nbatch_max = 500', "events", True),
    ("single, max_in_flight 1", 'format = "single"\nmax_in_flight = 1\nbatch_max = 500', "slow", True),
    ("single, max_in_flight 8", 'format = "single"\nmax_in_flight = 8\nbatch_max = 500', "slow", True),
)


# ---------------------------------------------------------------- the receiver (its own process)

def receiver_main(port: int, latency: float) -> None:
    """HTTP/1.1 keep-alive on asyncio: POST bodies decoded (msgspec) and counted, answered
    200 after `latency` seconds; GET answers {"events": n, "unique": n, "requests": n}."""
    import msgspec

    class Ev(msgspec.Struct):
        id: str
        seq: int = 0

    batch_dec = msgspec.json.Decoder(list[Ev])
    one_dec = msgspec.json.Decoder(Ev)
    seen: set[str] = set()
    # out_of_order: events seen for the first time with a seq below one already seen.
    counts = {"events": 0, "requests": 0, "out_of_order": 0, "last_seq": 0}
    ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.t = transport
            self.buf = bytearray()

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buf[:end]).decode("latin-1").lower()
                length = 0
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name == "content-length":
                        length = int(value)
                if len(self.buf) < end + 4 + length:
                    return
                body = bytes(self.buf[end + 4:end + 4 + length])
                del self.buf[:end + 4 + length]
                if head.startswith("get"):
                    out = msgspec.json.encode({**counts, "unique": len(seen)})
                    self.t.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(out), out))
                    continue
                events = batch_dec.decode(body) if "cloudevents-batch" in head else [one_dec.decode(body)]
                counts["requests"] += 1
                counts["events"] += len(events)
                for e in events:
                    if e.id not in seen:
                        seen.add(e.id)
                        if e.seq < counts["last_seq"]:
                            counts["out_of_order"] += 1
                        counts["last_seq"] = max(counts["last_seq"], e.seq)
                if latency:
                    asyncio.get_running_loop().call_later(latency, self.t.write, ok)
                else:
                    self.t.write(ok)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Proto, "127.0.0.1", port, backlog=128)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class ReceiverProcess:
    def __init__(self, latency: float, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc = subprocess.Popen([sys.executable, __file__, "--receiver", str(self.port),
                                      str(latency)])
        # One keep-alive connection for the polling: a new client per poll would cost this
        # 2-core machine more CPU than the sink under test.
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5)
        wait(self._up, 10, "the receiver")

    def _up(self) -> bool:
        try:
            self.counts()
            return True
        except httpx.HTTPError:
            return False

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = self.http.get("/").json()
        return out

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(10)


# ---------------------------------------------------------------- streamd

def prefilled(events: int) -> Path:
    """A feed with `events` generated events (no sink has read it), made once."""
    cached = OUT / f"http-prefill-{events}.db"
    if cached.exists():
        return cached
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="streamd-bench-http-prefill-") as tmp:
        work, port = Path(tmp), free_port()
        t0 = time.monotonic()
        proc = start_streamd(work, CONFIG.format(port=port, events=events, sink=""), port)

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
        print(f"# prefilled {events:,} events in {time.monotonic() - t0:.1f}s → {cached}", file=sys.stderr)
        db = sqlite3.connect(work / "feed.db")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        shutil.copy(work / "feed.db", cached)
    return cached


def one_run(feed: Path, keys: str, want: int, events: int, latency: float) -> tuple[float, int]:
    """events/s from READY until the receiver has counted `want` events; requests made."""
    rx = ReceiverProcess(latency)
    try:
        with tempfile.TemporaryDirectory(prefix="streamd-bench-http-") as tmp:
            work, port = Path(tmp), free_port()
            shutil.copy(feed, work / "feed.db")
            os.sync()  # the copy's writeback must not compete with the run's fsyncs
            sink = f'[sinks.out]\ntype = "http"\nurl = "http://127.0.0.1:{rx.port}/hook"\n{keys}\n'
            proc = start_streamd(work, CONFIG.format(port=port, events=events, sink=sink), port)
            try:
                t0 = time.monotonic()
                wait(lambda: rx.counts()["unique"] >= want, 900, "the receiver to count every event")
                elapsed = time.monotonic() - t0
                requests = rx.counts()["requests"]
            finally:
                stop_streamd(proc)
    finally:
        rx.close()
    return want / elapsed, requests


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--receiver":
        receiver_main(int(sys.argv[2]), float(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--events", type=int, default=200_000, help="events in the feed (batch runs)")
    ap.add_argument("--single-events", type=int, default=20_000, help="events in the feed (single runs)")
    ap.add_argument("--slow-events", type=int, default=5_000,
                    help="events in the feed (single runs to the slow receiver)")
    ap.add_argument("--latency", type=float, default=5.0, help="the slow receiver's ms per request")
    ap.add_argument("--repeat", type=int, default=3, help="runs (median reported)")
    ap.add_argument("--only", help="the configurations to run, by their row number (1-7), e.g. 3,4,6,7")
    args = ap.parse_args()
    rows = [int(x) for x in args.only.split(",")] if args.only else range(1, len(RUNS) + 1)
    load = os.getloadavg()[0]
    results: list[tuple[str, float, int, list[tuple[float, int]]]] = []
    for label, keys, which, slow in (RUNS[i - 1] for i in rows):
        events = {"events": args.events, "single": args.single_events, "slow": args.slow_events}[which]
        feed = prefilled(events)
        db = sqlite3.connect(feed)
        want = int(db.execute("SELECT count(*) FROM events").fetchone()[0])
        db.close()
        latency = args.latency / 1000 if slow else 0.0
        runs = [one_run(feed, keys, want, events, latency) for _ in range(args.repeat)]
        results.append((label, latency, want, runs))
    print(f"# http sink: a prefilled feed drained by streamd into a local receiver (HTTP/1.1, "
          f"keep-alive, another process); synchronous = \"full\"; {os.cpu_count()} cores; "
          f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after; median of {args.repeat} runs")
    print(f"| {'format':<32} | {'receiver':>8} | {'events':>8} | {'events/s':>9} | {'requests':>8} | "
          f"{'runs':<28} |")
    print(f"|{'-' * 34}|{'-' * 9}:|{'-' * 9}:|{'-' * 10}:|{'-' * 9}:|{'-' * 30}|")
    for label, latency, want, runs in results:
        rate = statistics.median(r[0] for r in runs)
        requests = statistics.median(r[1] for r in runs)
        print(f"| {label:<32} | {latency * 1000:>6g}ms | {want:>8,} | {rate:>9,.0f} | {requests:>8,.0f} | "
              f"{', '.join(f'{r[0]:,.0f}' for r in runs):<28} |")


if __name__ == "__main__":
    main()
