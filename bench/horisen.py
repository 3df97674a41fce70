"""HORISEN: simulator (HTTPS) → streamd's poller → feed → `sftp` sink → OpenSSH's sshd.

    python bench/horisen.py                          # throughput: 10,000 documents, 5 ms per request
    python bench/horisen.py --documents 2000 --latency 0.02 --repeat 1
    python bench/horisen.py --poll-only              # the poll phase alone (and its CPU per document)
    python bench/horisen.py --poll-only --env PYTHONPATH=<tree>   # another streamd, the same simulator
    python bench/horisen.py payments                 # payment → event, requests per poll (~25 min)
    python bench/horisen.py payments --interval 60 --payments 3

streamd runs as its own process (`synchronous = "full"`), as deployed. `throughput` runs
the simulated HORISEN API in a process of its own (this script, `simulate`), as a real
HORISEN is another machine: its CPU is counted apart from this process's, and this
process's polling of the feed does not share its interpreter; `payments` runs its
simulated APIs in a thread of this process (it changes them while streamd polls). A real
sshd (tests/sftp_server.py) on loopback.

`throughput` (the default), per run, on a fresh feed and an empty remote directory:
1. poll: streamd with the source only, from READY until every document's `created`
   (with its traffic reports: one request per document) is committed → documents/s, and
   streamd's CPU (user + system) over that time per document, and the simulator's
   process's (serving HTTPS: the other side of every request);
2. sink: streamd again with the `sftp` sink added, from READY until the sink's offset
   is the feed's head (every bookable invoice's issue rendered, uploaded, fsynced,
   renamed) → files/s.
Prints a table (median of --repeat runs).

`payments`: one streamd polling four simulated HORISENs of `--documents` documents
each, at `--interval` (the default: the source's own, 10 minutes), one for each thing a
payment may move: both stamps, only `paymentStatusDate`, neither; and one (both stamps)
with `payment_check = false`, which polls as streamd did before it. After the first poll,
`--payments` invoices of each are paid in full and as many in part (not on the one
whose part payments move no stamp: no poll sees those but the daily full listing), at
random moments over two intervals. Reports, per platform, the seconds from each
payment at the simulator to its `invoice.updated` committed in the feed, and the API
requests of each poll after the first: quiet polls, and polls that saw a payment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import free_port, pairs, up, wait  # noqa: E402

from streamd.providers.horisen import simulator as sim_mod  # noqa: E402
from streamd.providers.horisen.simulator import HorisenSimulator, Knobs  # noqa: E402
from tests.sftp_server import running_sftp_server  # noqa: E402

CONFIG = """
[store]
path = "feed.db"
synchronous = "full"
[http]
listen = "127.0.0.1:{port}"
[daemon]
log_level = "{log_level}"
{source}
{sink}
"""


STREAMD_ENV: dict[str, str] = {}  # --env NAME=VALUE: streamd's environment (not the simulator's)
PIN: dict[str, set[int]] = {}  # --pin: "streamd" and "simulator" -> the CPUs each runs on


def pinned(who: str) -> Any:
    """A `preexec_fn` that keeps the process (and every thread it starts) on its CPUs, if pinned."""
    cpus = PIN.get(who)
    return None if cpus is None else lambda: os.sched_setaffinity(0, cpus)


def start_streamd(work: Path, config: str, port: int) -> subprocess.Popen[bytes]:
    (work / "config.toml").write_text(config)
    env = {**os.environ, "NOTIFY_SOCKET": "", **STREAMD_ENV}
    log = open(work / "streamd.log", "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "streamd", "run", "-c", str(work / "config.toml")],
                            cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=log,
                            preexec_fn=pinned("streamd"))  # noqa: PLW1509 - no threads here yet
    wait(lambda: up(port) or proc.poll() is not None, 30, "streamd's listener")
    if proc.poll() is not None:
        raise SystemExit(f"streamd exited: {(work / 'streamd.log').read_text()[-2000:]}")
    return proc


def cpu_seconds(pid: int) -> float:
    """The process's CPU so far, user and system (Linux: /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_streamd(work: Path, config: str, port: int, done: Any, timeout: float,
                sim_pid: int) -> tuple[float, float, float]:
    """Seconds from READY until `done`, and the CPU seconds streamd and the simulator's
    process spent meanwhile."""
    proc = start_streamd(work, config, port)
    try:
        t0, c0, s0 = time.monotonic(), cpu_seconds(proc.pid), cpu_seconds(sim_pid)
        wait(done, timeout, "the run to complete")
        return time.monotonic() - t0, cpu_seconds(proc.pid) - c0, cpu_seconds(sim_pid) - s0
    finally:
        proc.terminate()
        proc.wait(60)


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    if not db.exists():
        return []
    c = sqlite3.connect(db, timeout=10)
    try:
        return c.execute(sql, params).fetchall()
    finally:
        c.close()


def serve(portal: BlockingPortal, work: Path, name: str, knobs: Knobs,
          serving: list[Future[Any]]) -> HorisenSimulator:
    """A simulator serving in the portal's thread (cancel the futures in `serving` before
    leaving the portal, or it waits for them)."""
    sim = sim_mod.simulator(work / name, knobs)
    serving.append(portal.start_task_soon(sim.serve))
    wait(lambda: sim.url, 10, "the simulator")
    return sim


# ---------------------------------------------------------------- the simulator's process

class SimulatorProcess:
    """`simulate` in a subprocess: the simulator of `knobs` serving in `directory`, its
    source table for `source` (name and extra keys, as `source_toml` takes them) and its
    number of documents read from its first line of output."""

    def __init__(self, directory: Path, knobs: dict[str, Any], source: tuple[str, dict[str, str]]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "simulate", json.dumps({"dir": str(directory), "knobs": knobs,
                                                                 "name": source[0], "extra": source[1]})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            preexec_fn=pinned("simulator"))  # noqa: PLW1509 - no threads here yet
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in, self._out = self.proc.stdin, self.proc.stdout
        line = self._out.readline()
        if not line:
            raise SystemExit(f"the simulator exited with {self.proc.wait()}")
        started = json.loads(line)
        self.documents: int = started["documents"]
        self.source: str = started["source"]

    def requests(self) -> int:
        """The API requests answered 200 so far."""
        self._in.write("requests\n")
        self._in.flush()
        return int(self._out.readline())

    def close(self) -> None:
        self._in.close()  # its end of input: it stops serving and exits
        try:
            self.proc.wait(60)
        finally:
            self.proc.kill()
            self._out.close()


def simulate(spec: str) -> None:
    """The subprocess: serve a simulator (a thread of this process) until standard input
    ends; answer each `requests` line with the API requests answered 200 so far."""
    given = json.loads(spec)
    with start_blocking_portal() as portal:
        serving: list[Future[Any]] = []
        sim = serve(portal, Path(given["dir"]), "sim", Knobs(**given["knobs"]), serving)
        try:
            print(json.dumps({"documents": len(sim.documents()),
                              "source": sim.source_toml(given["name"], **given["extra"])}), flush=True)
            for line in sys.stdin:
                if line.strip() == "requests":
                    print(sum(1 for e in sim.log if e.status == 200), flush=True)
        finally:
            for fut in serving:
                fut.cancel()


# ---------------------------------------------------------------- throughput

def one_run(args: argparse.Namespace) -> tuple[float, float, int, float, float]:
    """documents/s of the poll, files/s of the sink (0 with --poll-only), API requests, and
    streamd's and the simulator's CPU per document during the poll (µs)."""
    days = max(1, args.documents // args.per_day)
    knobs = {"days": days, "documents_per_day": args.per_day, "latency": args.latency, "partners": 200}
    with tempfile.TemporaryDirectory(prefix="streamd-bench-horisen-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        sftp = None if args.poll_only else stack.enter_context(running_sftp_server(work / "sftp"))
        sim = SimulatorProcess(work, knobs, ("hz", {
            "interval": '"1h"', "page_size": str(args.page_size), "concurrency": str(args.concurrency),
            "window": f'"{days + 5}d"'}))
        want = sim.documents
        port = free_port()
        source = sim.source
        db = work / "feed.db"

        def polled() -> bool:
            rows = query(db, "SELECT count(*) FROM events WHERE entity = 'invoice'")
            return bool(rows and rows[0][0] >= want)

        def sunk() -> bool:
            rows = query(db, "SELECT (SELECT max(seq) FROM events) = (SELECT seq FROM sink_offsets)")
            return bool(rows and rows[0][0])

        try:
            alone = CONFIG.format(port=port, log_level="warning", source=source, sink="")
            poll, cpu, sim_cpu = run_streamd(work, alone, port, polled, 600, sim.proc.pid)
            requests = sim.requests()
            files = 0.0
            if sftp is not None:
                sink = sftp.sink_toml("erp", concurrency=args.sink_concurrency, batch_max=args.batch)
                files, _, _ = run_streamd(work, CONFIG.format(port=port, log_level="warning", source=source,
                                                           sink=sink), port, sunk, 600, sim.proc.pid)
        finally:
            sim.close()
        written = 0 if sftp is None else \
            sum(1 for p in sftp.local_dir.iterdir() if not p.name.startswith("."))
        return (want / poll, written / files if files else 0.0, requests, cpu * 1e6 / want,
                sim_cpu * 1e6 / want)


def throughput(args: argparse.Namespace) -> None:
    load = os.getloadavg()[0]
    runs = [one_run(args) for _ in range(args.repeat)]
    docs = statistics.median(r[0] for r in runs)
    files = statistics.median(r[1] for r in runs)
    cpu = statistics.median(r[3] for r in runs)
    sink = "" if args.poll_only else (f"; sftp sink to OpenSSH sshd on loopback, {args.sink_concurrency} "
                                      f"files in flight, batch {args.batch}, fsync on")
    print(f"# HORISEN: {args.documents:,} documents with traffic reports, {args.latency * 1000:g} ms per "
          f"request, page_size {args.page_size}, concurrency {args.concurrency}{sink}; "
          f"{os.cpu_count()} cores, load average {load:.2f} before, {os.getloadavg()[0]:.2f} after; "
          f"median of {args.repeat} runs")
    print(f"| {'measure':<40} | {'median':>10} | {'runs':<30} |")
    print(f"|{'-' * 42}|{'-' * 11}:|{'-' * 32}|")
    print(f"| {'poll: documents/s (READY → committed)':<40} | {docs:>10,.0f} | "
          f"{', '.join(f'{r[0]:,.0f}' for r in runs):<30} |")
    print(f"| {'poll: streamd CPU per document':<40} | {cpu:>8,.0f}µs | "
          f"{', '.join(f'{r[3]:,.0f}' for r in runs):<30} |")
    print(f"| {'poll: simulator CPU per document':<40} | {statistics.median(r[4] for r in runs):>8,.0f}µs | "
          f"{', '.join(f'{r[4]:,.0f}' for r in runs):<30} |")
    if not args.poll_only:
        print(f"| {'sink: files/s (READY → all renamed)':<40} | {files:>10,.0f} | "
              f"{', '.join(f'{r[1]:,.0f}' for r in runs):<30} |")
    print(f"| {'API requests per run (pages + reports)':<40} | {runs[0][2]:>10,} | {'':<30} |")
    floor = runs[0][2] * args.latency / args.concurrency
    print(f"| {'poll floor at this latency':<40} | {args.documents / floor if floor else 0:>10,.0f} | "
          f"{'documents/s (requests x latency / concurrency)':<30} |")


# ---------------------------------------------------------------- payments

#: name -> (what a payment moves, payment_check). The first is streamd before the payment
#: check: the changed-since listing alone, as every poll was.
PLATFORMS: dict[str, tuple[tuple[str, ...], bool]] = {
    "both stamps, payment_check = false (before)": (("statusDt", "paymentStatusDate"), False),
    "both stamps": (("statusDt", "paymentStatusDate"), True),
    "only paymentStatusDate": (("paymentStatusDate",), True),
    "neither": ((), True),
}


def kind_of(query_string: str, path: str) -> str:
    """Which request of a poll this is."""
    if "traffic-report" in path:
        return "traffic report"
    if "gte%28statusDt%29" in query_string:
        return "changed since (statusDt)"
    if "sort=-paymentStatusDate" in query_string:
        return "payment check"
    if "gte%28paymentStatusDate%29" in query_string:
        return "payments listing"
    if "paymentStatus=open" in query_string:
        return "open listing"
    if query_string.startswith("id=") or "&id=" in query_string:
        return "by id"
    return "whole window"


def polls_of(sim: HorisenSimulator) -> list[list[str]]:
    """The kinds of request of each poll after the first (each begins with its changed-since
    listing's first page)."""
    polled: list[list[str]] = []
    for e in sim.log:
        if not e.path.startswith("/finance") and "traffic" not in e.path:
            continue
        kind = kind_of(e.query, e.path)
        if kind == "changed since (statusDt)" and "page_number=1" in e.query.split("&"):
            polled.append([])
        if polled:
            polled[-1].append(kind)
    return polled[:-1]  # the last may be under way


def payments(args: argparse.Namespace) -> None:
    days = max(1, args.documents // args.per_day)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="streamd-bench-horisen-pay-") as tmp, \
            start_blocking_portal() as portal:
        work = Path(tmp)
        serving: list[Future[Any]] = []
        sims = {name: serve(portal, work, f"sim{i}", Knobs(days=days, documents_per_day=args.per_day,
                                                            partners=200, payment_moves=moves, seed=i + 1),
                            serving)
                for i, (name, (moves, _)) in enumerate(PLATFORMS.items())}
        names = {name: f"hz{i}" for i, name in enumerate(sims)}
        sources = "\n".join(sim.source_toml(names[name], window=f'"{days + 5}d"',
                                            payment_check="true" if PLATFORMS[name][1] else "false",
                                            **({"interval": f'"{args.interval}s"'} if args.interval else {}))
                            for name, sim in sims.items())
        port = free_port()
        db = work / "feed.db"
        proc = start_streamd(work, CONFIG.format(port=port, log_level="info", source=sources, sink=""), port)
        try:
            want = {names[n]: len(s.documents()) for n, s in sims.items()}

            def created() -> bool:
                got = dict(query(db, "SELECT source, count(*) FROM events WHERE entity = 'invoice' "
                                     "GROUP BY source"))
                return all(got.get(src, 0) >= n for src, n in want.items())

            t0 = time.monotonic()
            wait(created, 1200, "every invoice created")
            print(f"first poll of {sum(want.values()):,} documents: {time.monotonic() - t0:.0f}s",
                  file=sys.stderr)
            interval = args.interval or 600.0
            plan = sorted((rng.uniform(0, 2 * interval), name, part)
                          for name in sims for part in (False, True) for _ in range(args.payments)
                          if not (part and name == "neither"))
            paid: list[tuple[str, str, bool, float]] = []  # platform, document id, in part, when (unix)
            start = time.monotonic()
            for at, name, part in plan:
                time.sleep(max(0.0, start + at - time.monotonic()))
                m = portal.call(lambda n=name, p=part: sims[n].mutate(paid=int(not p), part_paid=int(p)))
                (doc_id,) = m.part_paid if part else m.paid
                paid.append((name, str(doc_id), part, time.time()))
                print(f"{time.monotonic() - start:6.0f}s paid {'part of ' if part else ''}{name} {doc_id}",
                      file=sys.stderr)

            def seen(name: str, key: str, when: float) -> float | None:
                rows = query(db, "SELECT min(received) FROM events WHERE source = ? AND key = ? AND op ="
                                 " 'updated' AND received >= ?", (names[name], key, int(when * 1000) - 1000))
                return rows[0][0] / 1000 - when if rows and rows[0][0] else None

            wait(lambda: all(seen(n, k, w) is not None for n, k, _, w in paid), interval * 2 + 120,
                 "every payment's event")  # the check off, a payment that moves statusDt is seen too
            time.sleep(interval * 1.2)  # another poll, to count a quiet one after the last payment
        finally:
            proc.terminate()
            proc.wait(60)
            for fut in serving:
                fut.cancel()
        latency: dict[tuple[str, bool], list[float]] = defaultdict(list)
        for name, key, part, when in paid:
            value = seen(name, key, when)
            assert value is not None
            latency[name, part].append(value)
        print(f"# HORISEN payments: {args.documents:,} documents a platform, interval {interval:g}s "
              f"(page_size 100, lookback 1h, the defaults), {args.payments} payments of each kind at random "
              f"moments over two intervals; {os.cpu_count()} cores")
        print("| platform: a payment moves | payment | seconds to the event: each | max | "
              "≤ interval (+ the poll) |")
        print("|---|---|---|---:|---|")
        for (name, part), values in latency.items():
            print(f"| {name} | {'in part' if part else 'in full'} | "
                  f"{', '.join(f'{v:.0f}' for v in sorted(values))} | {max(values):.0f} | "
                  f"{'yes' if max(values) <= interval else 'NO'} |")
        print()
        print("| platform: a payment moves | polls | quiet poll: requests | poll after a payment: requests "
              "(mean, max) | what those were |")
        print("|---|---:|---:|---|---|")
        for name, sim in sims.items():
            polls = polls_of(sim)
            quiet = [p for p in polls if set(p) <= {"changed since (statusDt)", "payment check"}]
            busy = [p for p in polls if p not in quiet]
            kinds: dict[str, int] = defaultdict(int)
            for p in busy:
                for k in p:
                    kinds[k] += 1
            print(f"| {name} | {len(polls)} | {statistics.mean(len(p) for p in quiet) if quiet else 0:.1f} | "
                  f"{statistics.mean(len(p) for p in busy) if busy else 0:.1f}, "
                  f"{max((len(p) for p in busy), default=0)} | "
                  f"{', '.join(f'{k} {v / max(len(busy), 1):.1f}' for k, v in sorted(kinds.items()))} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if sys.argv[1:2] == ["simulate"]:  # the throughput runs' simulator process
        return simulate(sys.argv[2])
    ap.add_argument("what", nargs="?", choices=["throughput", "payments"], default="throughput")
    ap.add_argument("--documents", type=int, default=10_000)
    ap.add_argument("--per-day", type=int, default=100, help="documents per day of history")
    ap.add_argument("--latency", type=float, default=0.005, help="seconds added to every API request")
    ap.add_argument("--page-size", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=16, help="requests in flight (the default)")
    ap.add_argument("--sink-concurrency", type=int, default=8, help="the sink's files in flight")
    ap.add_argument("--batch", type=int, default=100, help="the sink's batch_max")
    ap.add_argument("--repeat", type=int, default=3, help="throughput runs (median reported)")
    ap.add_argument("--poll-only", action="store_true", help="throughput: the poll phase alone, no sink")
    ap.add_argument("--interval", type=float, default=0, help="payments: seconds between polls "
                                                              "(0: the source's default, 10 minutes)")
    ap.add_argument("--payments", type=int, default=3, help="payments: of each kind, per platform")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="in streamd's environment (not the simulator's), e.g. PYTHONPATH=<tree> for an A/B")
    ap.add_argument("--pin", action="store_true",
                    help="throughput: streamd on CPU 0, the simulator on CPU 1 (each a core of its own, "
                         "as if on two machines)")
    args = ap.parse_args()
    if args.pin:
        PIN.update(streamd={0}, simulator={1})
    STREAMD_ENV.update(pairs(ap, "--env", args.env))
    if args.what == "payments":
        payments(args)
    else:
        throughput(args)


if __name__ == "__main__":
    main()
