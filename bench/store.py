"""Append throughput of the feed store, through the real Writer, on a big feed.

    python bench/store.py                 # 1,000,000 events already in the feed, 200,000 appended
    python bench/store.py --prefill 100000 --events 50000   # a quick run

Prefills a feed once (cached under bench/out/), copies it, then appends with several
concurrent submitters (as sources do), with synchronous=FULL and NORMAL, and with a
share of replayed ids (duplicates the store must drop). Each measurement runs in its
own process, so "peak RSS" is that run's own high-water mark. Prints a table.
`--cache 32MiB,16MiB,8MiB` compares `[store] cache` sizes, run by run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import anyio
import msgspec

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out"


def _template() -> object:
    from streamd.model import Invoice, InvoiceLine, PartyRef, make_event

    net = Decimal("1234.56")
    inv = Invoice(direction="receivable", number="2026000123", currency="EUR", net=net,
                  tax=Decimal("308.64"), total=Decimal("1543.20"), unpaid=Decimal("1543.20"),
                  party=PartyRef(key="acme-party-00042", name="Brightwater Ltd"), status="open",
                  lines=[InvoiceLine(description="Consulting", quantity=Decimal(1), unit_price=net,
                                     net=net, tax=Decimal("308.64"), total=Decimal("1543.20"))])
    return make_event(provider="synthetic", source="bench", tenant="acme", entity="invoice",
                      op="created", key="inv-000000", time=datetime(2026, 1, 1, tzinfo=UTC),
                      data=inv, version="v0", raw=b'{"wire": "payload of a realistic size"}' * 8)


_T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def _events(start: int, n: int, template: object) -> list[object]:
    # A fresh id per event (a hash: ids land all over the index, as real ids do), and a
    # provider update stamp as its version, 0.5 ms apart (events arrive in stamp order,
    # as a push feed's do). Event i is the same event every time it is made.
    from hashlib import blake2b

    from streamd.model import format_time

    out = []
    for i in range(start, start + n):
        stamp = format_time(datetime.fromtimestamp(_T0 + i * 0.0005, UTC))
        out.append(msgspec.structs.replace(template, id=blake2b(b"%d" % i, digest_size=16).hexdigest(),  # type: ignore[type-var]
                                           key=f"inv-{i:09d}", version=stamp, time=stamp))
    return out


async def _run(path: str, synchronous: str, start: int, total: int, submitters: int, batch: int,
               replay: float, depth: int = 1, keep_raw: bool = True,
               cache: str | None = None) -> dict[str, float]:
    from streamd.config import StoreConfig
    from streamd.health import Health
    from streamd.metrics import Metrics
    from streamd.store import Batch, Pending, Writer, connect
    from streamd.units import Size

    cfg = StoreConfig(path=path, synchronous=synchronous, keep_raw=keep_raw)  # type: ignore[arg-type]
    if cache is not None:  # else [store] cache's default, whatever it is
        cfg = msgspec.structs.replace(cfg, cache=Size.parse(cache))
    db = await connect(cfg)
    metrics = Metrics()
    writer = Writer(db, cfg, metrics, Health().add("store", "writer"))
    template = _template()
    per = total // submitters
    appended = dups = 0

    async def submitter(k: int) -> None:
        # Keeps up to `depth` batches uncommitted, as a high-rate source does (enqueue);
        # depth 1 awaits every commit before building the next batch.
        nonlocal appended, dups
        inflight: list[Pending] = []

        async def settle(p: Pending) -> None:
            nonlocal appended, dups
            done = await p.committed()
            appended += done.appended
            dups += done.duplicates

        base = start + k * per
        for off in range(0, per, batch):
            evs = _events(base + off, batch, template)
            if replay:
                # A share of each batch replays ids already in the feed, from anywhere in the
                # prefilled million: the cold, worst case for the dedupe index.
                n = int(batch * replay)
                evs[:n] = _events((base + off) * 7919 % max(start - n, 1), n, template)
            inflight.append(await writer.enqueue(Batch(source="bench", events=evs)))  # type: ignore[arg-type]
            if len(inflight) >= depth:
                await settle(inflight.pop(0))
        for p in inflight:
            await settle(p)

    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        t0 = time.perf_counter()
        async with anyio.create_task_group() as subs:
            for k in range(submitters):
                subs.start_soon(submitter, k)
        elapsed = time.perf_counter() - t0
        writer.close()
    await db.close()
    hist = metrics.registry.get_sample_value
    commits = hist("streamd_store_commit_duration_seconds_count") or 1
    buckets = [(float(s.labels["le"]), s.value) for m in metrics.registry.collect()
               if m.name == "streamd_store_commit_duration_seconds" for s in m.samples
               if s.name.endswith("_bucket")]

    def quantile(q: float) -> float:
        for le, count in buckets:
            if count >= q * commits:
                return le
        return float("inf")

    return {"appended": appended, "duplicates": dups, "seconds": elapsed, "commits": commits,
            "p50": quantile(0.5), "p99": quantile(0.99),
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def prefill(path: Path, n: int) -> None:
    if path.exists():
        return
    tmp = path.with_suffix(".tmp")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    print(f"prefilling {n:,} events into {path} (once; cached) ...", file=sys.stderr)
    anyio.run(_run, str(tmp), "normal", 0, n, 1, 5000, 0.0)
    import sqlite3

    db = sqlite3.connect(tmp)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    tmp.rename(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefill", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs per configuration (median reported)")
    ap.add_argument("--submitters", type=int, default=8)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--cache", default="",
                    help="[store] cache sizes to compare, e.g. 32MiB,8MiB: each run of a row "
                         "tries them in turn, back to back (default: the default)")
    ap.add_argument("--rows", default="",
                    help="only these rows of the table, by number from 1, e.g. 1,3 (default: all)")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:  # child process: one measurement, JSON on stdout
        spec = json.loads(args.measure)
        print(json.dumps(anyio.run(_run, spec["path"], spec["sync"], args.prefill, args.events,
                                   args.submitters, args.batch, spec["replay"], spec["depth"],
                                   spec["raw"], spec["cache"])))
        return
    OUT.mkdir(exist_ok=True)
    base = OUT / f"prefill-{args.prefill}.db"
    prefill(base, args.prefill)
    caches: list[str | None] = [c.strip() for c in args.cache.split(",") if c.strip()] or [None]
    rows = []
    before = os.getloadavg()[0]
    runs = [("full", 1, 0.0, True), ("full", 4, 0.0, True), ("full", 4, 0.1, True),
            ("full", 4, 0.0, False), ("normal", 4, 0.0, True)]
    if args.rows:
        runs = [runs[int(i) - 1] for i in args.rows.split(",")]
    for sync, depth, replay, raw in runs:
        results: dict[str | None, list[dict[str, float]]] = {c: [] for c in caches}
        for _ in range(args.repeat):
            # The sizes in turn within a repeat: a shared machine's load drifts by the
            # minute, and it should drift over all of them alike.
            for cache in caches:
                work = OUT / "work.db"
                for p in (work, Path(f"{work}-wal"), Path(f"{work}-shm")):
                    p.unlink(missing_ok=True)
                shutil.copyfile(base, work)
                os.sync()
                spec = json.dumps({"path": str(work), "sync": sync, "replay": replay, "depth": depth,
                                   "raw": raw, "cache": cache})
                out = subprocess.run([sys.executable, __file__, "--measure", spec, "--prefill",
                                      str(args.prefill), "--events", str(args.events), "--submitters",
                                      str(args.submitters), "--batch", str(args.batch)],
                                     capture_output=True, text=True, check=True)
                results[cache].append(json.loads(out.stdout))
        for cache in caches:
            results[cache].sort(key=lambda r: r["appended"] / r["seconds"])
            rows.append((sync, depth, replay, raw, cache, results[cache]))
    print(f"\nstore append benchmark: feed holding {args.prefill:,} events; {args.events:,} submitted by "
          f"{args.submitters} submitters in batches of {args.batch}; median of {args.repeat} runs "
          f"(range in brackets); load average {before:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print("| synchronous | batches in flight per submitter | raw kept | replayed ids | cache | appends/s | "
          "events/commit | commit p50 | commit p99 | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for sync, depth, replay, raw, cache, res in rows:
        r = res[len(res) // 2]
        rates = [x["appended"] / x["seconds"] for x in res]
        print(f"| {sync.upper()} | {depth} | {'yes' if raw else 'no'} | {replay:.0%} | "
              f"{cache or 'default'} | "
              f"{rates[len(rates) // 2]:,.0f} [{rates[0]:,.0f}-{rates[-1]:,.0f}] | "
              f"{(r['appended'] + r['duplicates']) / r['commits']:,.0f} | <= {r['p50'] * 1000:g} ms | "
              f"<= {r['p99'] * 1000:g} ms | {max(x['rss_mb'] for x in res):.0f} MB |")

if __name__ == "__main__":
    main()
