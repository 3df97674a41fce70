"""Ingest end to end: Asteria simulator → streamd (mTLS websocket) → committed feed → file sink,
and the same frames read by the peers in the same run.

    python bench/ingest.py                       # seed-shaped frames: 100,000 x3, then 30 s at 2,000/s
    python bench/ingest.py --profile light --events 20000 --seconds 10
    python bench/ingest.py --repeat 5 --node-red bench/out/node-red/node_modules/.bin/node-red
    python bench/ingest.py --py-spy bench/out/ingest.pyspy --repeat 1 --no-steady
    python bench/ingest.py --py-spy bench/out/gil.pyspy --gil --repeat 0 --no-peers --no-steady
    python bench/ingest.py --no-normalize --no-peers --no-steady   # the path without normalizing
    python bench/ingest.py --normalize-worker --no-peers --no-steady   # normalizing in worker processes
    python bench/ingest.py --no-peers --no-steady --store 'cache="8MiB"' --env MALLOC_ARENA_MAX=2

streamd runs as its own process with `synchronous = "full"` and a file sink that
fsyncs every batch, exactly as deployed. This process runs the simulated gateway
and watches the file the reader writes. Frames are the simulator's "seed" profile by
default (full clients, invoices and transactions, 660 bytes on average) or its
"light" one (every topic, 314 bytes). Runs, each on a fresh gateway and directory:

1. full speed, --repeat times, each reader in turn (streamd, then each peer): N events
   made in advance, sent as fast as the reader takes them; the clock runs from the
   upgrade to the N-th line in the file. For streamd that line is durable (committed to
   the feed, fsynced in the file); the time to the feed's commit and the process's peak
   RSS (VmHWM) are shown too.
   The peers, same frames, same mutual TLS, same file watcher:
   - Node-RED 4 (with --node-red, or if bench/out/node-red has it: `npm install --prefix
     bench/out/node-red node-red@4`): a flow this script writes, `websocket in` (client,
     a `tls-config` with the client certificate, key and CA, the server verified, the
     `x-asteria-client` header) → `file` (append, one line per message). Not durable:
     Node-RED's file node neither fsyncs nor keeps anything when it stops.
   - websockets: the simplest Python reader (the `websockets` client, another process),
     each frame written as a line to a buffered file; no parsing, no fsync. The ceiling.
2. steady 2,000 events/s (streamd only): each event is stamped (updatedAt, hence the
   line's `time`) when the simulator sends it; the latency is the moment its line
   appears in the file minus that stamp. The first 2 seconds are left out (warm-up).
   Each full-speed run's files are deleted once it is measured, and the disk synced
   before this run: left there, the kernel wrote them back during it, and the commits'
   fsyncs waited behind that (p99 38–46 ms, against 14–18 ms run alone).
3. with --py-spy FILE: one more full-speed run of streamd under `py-spy record --threads`
   (100 samples a second, raw stacks to FILE), and the CPU broken down by what the samples were doing.
   With --gil as well: only the thread holding the GIL is sampled (`record --gil`, 250 a
   second), and what holds the one interpreter is broken down instead: the share of the
   samples of each thread and part. (A thread in SQLite's or OpenSSL's C code has let the
   GIL go, so it is not there.)
4. with --no-normalize: streamd with a stand-in for Asteria's normalizing
   (bench/standin): one event per frame, the payload as its data, the record's own key
   and tenant. What the rest of the path (TLS, websocket, store, sink) allows; the events
   are not real ones.
5. with --normalize-worker: a prototype (bench/worker) that normalizes in anyio's worker
   processes, pipelined: what a second interpreter would give on this machine. streamd's
   CPU and RSS are its main process's; its workers' are shown beside them.
Every full-speed run also gives the whole machine's busy share while the reader read
(every process: the simulated gateway and the file watcher here included).

Prints tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from _common import pairs  # bench/, this script's directory
from anyio.from_thread import start_blocking_portal

from streamd.providers.asteria import simulator as sim_mod
from streamd.providers.asteria.simulator import AsteriaSimulator, Knobs

OUT = Path(__file__).resolve().parent / "out"
NODE_RED = OUT / "node-red" / "node_modules" / ".bin" / "node-red"
SOURCE_KEYS: dict[str, str] = {}  # --source KEY=VALUE: extra keys of streamd's source (TOML values)
STORE_KEYS: dict[str, str] = {}  # --store KEY=VALUE: extra keys of [store]
STREAMD_ENV: dict[str, str] = {}  # --env NAME=VALUE: streamd's environment
MEMPROBE = Path(__file__).resolve().parent / "memprobe"  # --memory: its sitecustomize
MEMORY = False
STANDIN = Path(__file__).resolve().parent / "standin"  # --no-normalize: its sitecustomize
NO_NORMALIZE = False
WORKER = Path(__file__).resolve().parent / "worker"  # --normalize-worker: its sitecustomize
NORMALIZE_WORKER = False

CONFIG = """
[store]
path = "feed.db"
synchronous = "full"
{store}
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
    """Reads the reader's file as it grows; notes when each line appeared."""

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
                for line in complete:
                    t = json.loads(line)["time"]
                    sent = datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
                    self.samples.append((now, sent))


# ---------------------------------------------------------------- the readers

GIL = False  # --gil: py-spy samples only the thread holding the GIL


def start_streamd(workdir: Path, sim: AsteriaSimulator,
                  py_spy: Path | None = None) -> subprocess.Popen[bytes]:
    cfg = workdir / "config.toml"
    store = "".join(f"{k} = {v}\n" for k, v in STORE_KEYS.items())
    cfg.write_text(CONFIG.format(source=sim.source_toml("gw", **SOURCE_KEYS), store=store))
    cmd = [sys.executable, "-m", "streamd", "run", "-c", str(cfg)]
    if py_spy is not None:
        # --threads: the event loop, SQLite's thread and the sink's file thread apart;
        # --nonblocking: py-spy does not pause the process it samples (it would slow it).
        cmd = [str(Path(sys.executable).parent / "py-spy"), "record", "--threads", "--nonblocking",
               "--rate", "250" if GIL else "100", *(["--gil"] if GIL else []),
               "--format", "raw", "-o", str(py_spy.resolve()), "--", *cmd]
    env = {**os.environ, **STREAMD_ENV}
    if MEMORY:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(MEMPROBE), env.get("PYTHONPATH")) if p)
        env["STREAMD_MEMPROBE"] = str(workdir / "memory.json")
    if NO_NORMALIZE:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(STANDIN), env.get("PYTHONPATH")) if p)
        env["STREAMD_STANDIN"] = "1"
    if NORMALIZE_WORKER:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(WORKER), env.get("PYTHONPATH")) if p)
        env["STREAMD_WORKER"] = "1"
    return subprocess.Popen(cmd, cwd=workdir, env=env,
                            stderr=open(workdir / "streamd.log", "wb"))  # noqa: SIM115


def node_red_flow(sim: AsteriaSimulator, out: Path) -> list[dict[str, object]]:
    """websocket in (client, mutual TLS, the x-asteria-client header) → file (append)."""
    c = sim.certs
    return [
        {"id": "tab", "type": "tab", "label": "asteria"},
        {"id": "tls", "type": "tls-config", "name": "asteria", "cert": str(c.client_cert),
         "key": str(c.client_key), "ca": str(c.ca), "certname": "", "keyname": "", "caname": "",
         "servername": "", "verifyservercert": True, "alpnprotocol": ""},
        {"id": "gw", "type": "websocket-client", "path": sim.url, "tls": "tls", "wholemsg": "false",
         "hb": "0", "subprotocol": "",
         "headers": [{"keyType": "other", "keyValue": "x-asteria-client", "valueType": "other",
                      "valueValue": sim.knobs.client_id}]},
        {"id": "in", "type": "websocket in", "z": "tab", "name": "", "server": "", "client": "gw",
         "x": 100, "y": 100, "wires": [["file"]]},
        {"id": "file", "type": "file", "z": "tab", "name": "", "filename": str(out), "filenameType": "str",
         "appendNewline": True, "createDir": True, "overwriteFile": "false", "encoding": "none",
         "x": 300, "y": 100, "wires": [[]]},
    ]


def start_node_red(workdir: Path, sim: AsteriaSimulator, node_red: Path) -> subprocess.Popen[bytes]:
    user = workdir / "node-red"
    user.mkdir()
    (user / "flows.json").write_text(json.dumps(node_red_flow(sim, workdir / "feed.jsonl")))
    # The editor and admin API off: only the flow runs.
    (user / "settings.js").write_text("module.exports = { httpAdminRoot: false, httpNodeRoot: false, "
                                      "uiPort: 0, logging: { console: { level: 'warn' } } };\n")
    return subprocess.Popen([str(node_red), "--userDir", str(user), "--settings", str(user / "settings.js"),
                             str(user / "flows.json")], cwd=workdir,
                            stdout=open(workdir / "node-red.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115


def reader_main(url: str, certs: str, client_id: str, out: str, n: int) -> None:
    """The ceiling: websockets over the same mutual TLS, each frame a line in a buffered
    file, nothing parsed, nothing fsynced."""
    from websockets.asyncio.client import connect

    async def main() -> None:
        ctx = ssl.create_default_context(cafile=f"{certs}/ca.pem")
        ctx.load_cert_chain(f"{certs}/client.pem", f"{certs}/client.key")
        async with connect(url, ssl=ctx, additional_headers={"x-asteria-client": client_id},
                           compression=None, ping_interval=None, max_size=1 << 20, max_queue=16) as ws:
            got = 0
            # Blocking writes on the loop, to a buffered file: what the simplest reader does.
            with open(out, "wb") as f:  # noqa: ASYNC230
                async for message in ws:
                    f.write(message.encode() if isinstance(message, str) else message)
                    f.write(b"\n")
                    got += 1
                    if got >= n:
                        break

    asyncio.run(main())


def start_reader(workdir: Path, sim: AsteriaSimulator, n: int) -> subprocess.Popen[bytes]:
    certs = workdir / "reader-certs"  # the names reader_main expects
    certs.mkdir()
    c = sim.certs
    for src, name in ((c.ca, "ca.pem"), (c.client_cert, "client.pem"), (c.client_key, "client.key")):
        shutil.copy(src, certs / name)
    return subprocess.Popen([sys.executable, __file__, "--reader", sim.url, str(certs), sim.knobs.client_id,
                             str(workdir / "feed.jsonl"), str(n)], cwd=workdir,
                            stderr=open(workdir / "reader.log", "wb"))  # noqa: SIM115


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


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    """The processes `pid` started (streamd's workers, with --normalize-worker)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def stat_cpu(stat: Path) -> float | None:
    """CPU seconds (user + system) from a /proc `stat` file (a process's or a thread's);
    None once it is gone."""
    try:
        fields = stat.read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds `pid` has used since it started, its threads gone included."""
    return stat_cpu(Path(f"/proc/{pid}/stat")) or 0.0


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of every core since boot, from /proc/stat: busy is user,
    nice, system, irq and softirq; the total adds idle, iowait and steal (the time the
    hypervisor gave another machine; guest time is already in user's)."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9])
    busy = user + nice + system + irq + softirq
    hz = os.sysconf("SC_CLK_TCK")
    return busy / hz, (busy + idle + iowait + steal) / hz


@dataclass
class Result:
    reader: str
    events: int
    seconds: float
    commit_seconds: float = 0.0
    peak_rss: float = 0.0
    p50: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    cpu: dict[int, float] = field(default_factory=dict)  # CPU seconds per thread, upgrade -> last line
    memory: dict[str, float] = field(default_factory=dict)  # --memory: the probe's figures at the peak
    busy: float = 0.0  # the whole machine's share of its cores busy, upgrade -> last line
    children_rss: float = 0.0  # streamd's child processes (workers): the sum of their peaks
    children_cpu: float = 0.0  # and of their CPU seconds


def run(workdir: Path, knobs: Knobs, n: int, prepared: list[tuple[str, bytes]] | None, reader: str,
        node_red: Path | None = None, py_spy: Path | None = None) -> Result:
    workdir.mkdir(parents=True)
    sim = sim_mod.simulator(workdir / "certs", knobs)
    sim.prepared = prepared
    with start_blocking_portal() as portal:
        fut = portal.start_task_soon(sim.serve)
        while not sim.url:
            time.sleep(0.01)
        watcher = FileWatcher(workdir / "feed.jsonl", latency=prepared is None)
        watcher.start()
        if reader == "streamd":
            proc = start_streamd(workdir, sim, py_spy)
        elif reader == "node-red":
            assert node_red is not None
            proc = start_node_red(workdir, sim, node_red)
        else:
            proc = start_reader(workdir, sim, n)
        committed_at = peak = 0.0
        pid = proc.pid
        cpu: dict[int, float] = {}
        try:
            deadline = time.monotonic() + 120
            while sim.upgrades == 0:
                time.sleep(0.001)
                if proc.poll() is not None or time.monotonic() > deadline:
                    logs = "\n".join(p.read_text() for p in workdir.glob("*.log"))
                    raise SystemExit(f"{reader} did not connect:\n{logs}")
            t0 = time.time()
            if reader == "streamd" and py_spy is not None:
                kids = children(proc.pid)
                pid = kids[0] if kids else pid
            cpu0 = thread_cpu(pid) if reader == "streamd" else {}
            busy0 = machine_busy()
            while watcher.lines < n:
                if reader == "streamd" and not committed_at and head(workdir / "feed.db") >= n:
                    committed_at = time.time()
                if proc.poll() is not None and reader != "websockets":
                    raise SystemExit(f"{reader} exited with {proc.returncode}")
                time.sleep(0.005)
            done_at = watcher.last_at
            busy1 = machine_busy()
            busy = (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1e-9)
            kids_rss = kids_cpu = 0.0
            if reader == "streamd":  # (under py-spy, streamd is its child)
                peak = peak_rss_mb(pid)
                cpu = {tid: t - cpu0.get(tid, 0.0) for tid, t in thread_cpu(pid).items()}
                kids_rss = sum(peak_rss_mb(k) for k in children(pid))
                kids_cpu = sum(process_cpu(k) for k in children(pid))
        finally:
            if pid != proc.pid:
                os.kill(pid, 15)  # streamd under py-spy: py-spy writes its file when it exits
            elif proc.poll() is None:
                proc.terminate()
            proc.wait(60)
            watcher.stop.set()
            fut.cancel()
    probe = workdir / "memory.json"
    out = Result(reader, n, done_at - t0, (committed_at or done_at) - t0, peak,
                 cpu=cpu if reader == "streamd" else {},
                 memory=json.loads(probe.read_text()) if probe.exists() else {},
                 busy=busy, children_rss=kids_rss, children_cpu=kids_cpu)
    if prepared is None:
        cut = t0 + min(2.0, (done_at - t0) / 4)  # warm-up: 2 s, or a quarter of a short run
        lat = sorted(a - s for a, s in watcher.samples if s >= cut)
        out.p50 = lat[len(lat) // 2] * 1000
        out.p99 = lat[int(len(lat) * 0.99)] * 1000
        out.max = lat[-1] * 1000
    return out


# ---------------------------------------------------------------- the profile's breakdown

def _decode_lines() -> tuple[str, ...]:
    """The lines of asteria/normalize.py that call a msgspec decoder: a sample there is in
    msgspec's C code, decoding (py-spy shows the Python line that called it)."""
    from streamd.providers.asteria import normalize
    src = Path(normalize.__file__).read_text().splitlines()
    return tuple(f"normalize.py:{i + 1})" for i, line in enumerate(src) if ".decode(data)" in line)


def _sqlite_lines() -> tuple[str, ...]:
    """The lines of store/transaction.py inside a `db.execute…(…)` call: the writer's
    transaction runs on SQLite's thread in one piece, so a sample there is in SQLite's C
    code."""
    from streamd.store import transaction
    src = Path(transaction.__file__).read_text().splitlines()
    out: list[str] = []
    depth = 0
    for i, line in enumerate(src):
        if depth or "db.execute" in line:
            out.append(f"transaction.py:{i + 1})")
            depth += line.count("(") - line.count(")")
    return tuple(out)


#: (part, needles): a sample belongs to the part of its innermost frame that contains one
#: of the needles (function name and file, as py-spy writes them); more specific first.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("startup (imports, config; before the first frame)", ()),  # matched anywhere in the stack
    ("decode (msgspec: the frame, then the payload into wire Structs)", ("parse_frame (",)),
    ("id derivation (values digest, event_id's sha256)", ("event_id (", "_netstring (", "digest (",
                                                          "canonical (", "_value (", "stamp (")),
    ("normalize (map, check, the entity's JSON, time)", ("providers/asteria/normalize.py", "model/")),
    ("writer: rows, batches, results (Python)", ("store/writer.py", "store/transaction.py",
                                                 "store/sealed.py")),
    ("sink: reading the feed back (rows -> FeedEvent)", ("store/reader.py",)),
    ("sink: CloudEvent encoding (cloudevent, render_line)", ("cloudevent (", "render_line (")),
    ("sink: file writes and fsync", ("sinks/file.py",)),
    ("sink: dispatcher", ("sinks/",)),
    ("thread hand-offs (call_soon_threadsafe, the loop's wake-up pipe)",
     ("_write_to_self (", "_read_from_self (", "call_soon_threadsafe (", "_process_self_data (")),
    ("TLS + websocket framing", ("websockets/", "ssl.py", "sslproto.py", "selector_events.py")),
    ("source: batching, tenants, metrics", ("providers/asteria/", "prometheus_client/")),
    ("SQLite's C calls (statements, commit, fsync)", ("_connection_worker_thread (aiosqlite/core.py:63)",
                                                      "Connection._execute", "Cursor.")),
    ("aiosqlite: queue and hand-off to the loop", ("aiosqlite/",)),
    ("waiting in epoll", ("EpollSelector.select (",)),
    ("asyncio / anyio scheduling", ("asyncio/", "anyio/", "threading.py", "queue.py")),
)
_STARTUP = ("_find_and_load (", "build_parser (", "load_config", "Daemon.start", "open_store")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of `pid`, by thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        seconds = stat_cpu(task / "stat")
        if seconds is not None:
            out[int(task.name)] = seconds
    return out


def breakdown(raw: Path) -> tuple[dict[int, str], dict[int, Counter[str]]]:
    """Thread names and samples per part, by thread id, from py-spy's raw output (one
    `thread (tid): name;frame;frame… count` line per distinct stack)."""
    decode_lines = _decode_lines()
    sqlite_lines = _sqlite_lines()
    names: dict[int, str] = {}
    parts: dict[int, Counter[str]] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack.startswith("thread ("):
            continue
        frames = stack.split(";")
        tid_text, _, name = frames[0][len("thread ("):].partition(")")
        tid, name = int(tid_text), name.removeprefix(": ")
        names[tid] = name
        part = "other"
        if any(n in f for f in frames for n in _STARTUP):
            part = PARTS[0][0]
        elif frames[-1].endswith(decode_lines):
            part = PARTS[1][0]
        elif frames[-1].endswith(sqlite_lines):
            part = "SQLite's C calls (statements, commit, fsync)"
        else:
            for f in reversed(frames[1:]):
                hit = next((p for p, needles in PARTS[1:] if any(n in f for n in needles)), None)
                if hit:
                    part = hit
                    break
        parts.setdefault(tid, Counter())[part] += int(count)
    return names, parts


def print_gil(raw: Path, result: Result) -> None:
    """What held the GIL once frames came: each thread's and part's share of py-spy's
    `--gil` samples (the start-up's left out)."""
    names, parts = breakdown(raw)
    for samples in parts.values():
        for part in [p for p in samples if p.startswith("startup")]:
            del samples[part]
    total = sum(sum(c.values()) for c in parts.values())
    print(f"\nwhat holds the GIL: {total:,} samples of the thread holding it (record --gil, 250 a "
          f"second; the start-up left out) over {result.seconds:.1f} s, {result.events:,} events\n")
    print("| thread | part | share of the GIL samples |")
    print("|---|---|---:|")
    for tid, samples in sorted(parts.items(), key=lambda kv: -sum(kv[1].values())):
        name = names.get(tid, "?")
        label = ("event loop (main thread)" if name == "MainThread"
                 else f"SQLite thread ({name.partition(' ')[0]})" if "_connection_worker_thread" in name
                 else name)
        if sum(samples.values()) * 1000 < total:
            continue
        print(f"| **{label}** (tid {tid}) | all | **{100 * sum(samples.values()) / total:.1f} %** |")
        for part, k in samples.most_common():
            if part.startswith("SQLite's C calls"):  # the C that holds the GIL: not the steps
                part = "a statement's parameters bound, its rows read (sqlite3, GIL held)"
            if 100 * k / total >= 0.3:
                print(f"| | {part} | {100 * k / total:.1f} % |")


def print_breakdown(raw: Path, result: Result) -> None:
    """streamd's CPU per thread (from /proc, between the upgrade and the last line), each
    thread's split into parts by its py-spy samples."""
    names, parts = breakdown(raw)
    cpu = result.cpu
    total = sum(cpu.values())
    n = result.events
    print(f"\nwhere streamd's CPU goes: {total:.2f} s of CPU for {n:,} events in {result.seconds:.1f} s "
          f"({total / result.seconds:.2f} cores, {total * 1e6 / n:.1f} µs per event); per thread from "
          "/proc, split by py-spy's samples (record --threads --rate 100)\n")
    print("| thread | part | µs per event | share of streamd's CPU |")
    print("|---|---|---:|---:|")
    for tid, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]):
        if seconds * 1e6 / n < 0.05:
            continue
        name = names.get(tid, "?")
        label = ("event loop (main thread)" if name == "MainThread"
                 else f"SQLite thread ({name.partition(' ')[0]})" if "_connection_worker_thread" in name
                 else "file sink's writes (AnyIO worker)" if "AnyIO worker" in name else name)
        samples = parts.get(tid, Counter())
        counted = sum(v for k, v in samples.items() if not k.startswith("startup"))
        print(f"| **{label}** (tid {tid}) | all | **{seconds * 1e6 / n:.1f}** | "
              f"**{100 * seconds / total:.1f} %** |")
        for part, k in samples.most_common():
            if part.startswith("startup") or not counted:
                continue
            share = seconds * k / counted
            if share * 1e6 / n >= 0.05:
                print(f"| | {part} | {share * 1e6 / n:.1f} | {100 * share / total:.1f} % |")


# ---------------------------------------------------------------- main

def rates(results: list[Result]) -> tuple[float, float, float]:
    r = sorted(x.events / x.seconds for x in results)
    return r[len(r) // 2], r[0], r[-1]


def main() -> None:
    if len(sys.argv) == 7 and sys.argv[1] == "--reader":
        reader_main(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--profile", choices=sim_mod.PROFILES, default="seed", help="the simulator's frames")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=3, help="full-speed runs of each reader (median reported)")
    ap.add_argument("--node-red", type=Path, default=NODE_RED if NODE_RED.exists() else None,
                    help="node-red's executable (Node-RED 4); default: bench/out/node-red's, if there")
    ap.add_argument("--no-peers", action="store_true", help="streamd alone")
    ap.add_argument("--no-steady", action="store_true", help="skip the steady-rate latency run")
    ap.add_argument("--py-spy", type=Path, help="profile one more full-speed run into this file")
    ap.add_argument("--no-normalize", action="store_true",
                    help="streamd with a stand-in for Asteria's normalizing (bench/standin): what "
                         "the rest of the path allows; not real events")
    ap.add_argument("--normalize-worker", action="store_true",
                    help="a prototype (bench/worker): Asteria's normalizing in worker processes; "
                         "what a second interpreter would give here")
    ap.add_argument("--gil", action="store_true",
                    help="with --py-spy: sample only the thread holding the GIL, and break that down")
    ap.add_argument("--source", action="append", default=[], metavar="KEY=VALUE",
                    help="a key of streamd's source, e.g. inflight=4 (a TOML value)")
    ap.add_argument("--store", action="append", default=[], metavar="KEY=VALUE",
                    help="a key of [store], e.g. cache='\"8MiB\"' (a TOML value)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="in streamd's environment, e.g. MALLOC_ARENA_MAX=2")
    ap.add_argument("--memory", action="store_true",
                    help="where streamd's memory is at its peak (bench/memprobe; a thread "
                         "sampling every 0.1 s)")
    args = ap.parse_args()
    global MEMORY, GIL, NO_NORMALIZE, NORMALIZE_WORKER
    MEMORY = args.memory
    GIL = args.gil
    NO_NORMALIZE = args.no_normalize
    NORMALIZE_WORKER = args.normalize_worker
    if args.memory + args.no_normalize + args.normalize_worker > 1:
        ap.error("--memory, --no-normalize and --normalize-worker each need their own "
                 "sitecustomize: one at a time")
    if args.gil and not args.py_spy:
        ap.error("--gil needs --py-spy FILE")
    SOURCE_KEYS.update(pairs(ap, "--source", args.source))
    STREAMD_ENV.update(pairs(ap, "--env", args.env))
    STORE_KEYS.update(pairs(ap, "--store", args.store))
    readers = ["streamd"]
    if not args.no_peers:
        readers += (["node-red"] if args.node_red else []) + ["websockets"]
    knobs = Knobs(count=args.events, profile=args.profile)
    prepared = [sim_mod.event(i, profile=args.profile) for i in range(args.events)]
    frame_bytes = sum(len(d) for _, d in prepared) / len(prepared)
    load = os.getloadavg()
    results: dict[str, list[Result]] = {r: [] for r in readers}
    with tempfile.TemporaryDirectory(prefix="streamd-ingest-") as tmp:
        for i in range(args.repeat):  # the readers in turn, so that a busy minute hits them all
            for reader in readers:
                workdir = Path(tmp) / f"{reader}{i}"
                results[reader].append(run(workdir, knobs, args.events, prepared, reader, args.node_red))
                # Its files go, so that the next runs do not wait behind the kernel writing
                # back a finished run's hundreds of MB (what set the steady run's tail).
                shutil.rmtree(workdir)
        steady = None
        if not args.no_steady:
            os.sync()  # and what is left written back before the latencies are timed
            steady_n = int(args.rate * args.seconds)
            steady = run(Path(tmp) / "steady", Knobs(count=steady_n, rate=args.rate, stamp_now=True,
                                                     profile=args.profile), steady_n, None, "streamd")
        profiled = None
        if args.py_spy:
            profiled = run(Path(tmp) / "py-spy", knobs, args.events, prepared, "streamd", py_spy=args.py_spy)
    load_after = os.getloadavg()
    print(f"\ningest: Asteria simulator -> mTLS websocket, '{args.profile}' frames ({frame_bytes:,.0f} bytes "
          f"on average); streamd: feed (synchronous=full) -> file sink (fsync per batch); "
          f"{os.cpu_count()} cores; load average {load[0]:.2f} before, {load_after[0]:.2f} after; "
          + ("NORMALIZING REPLACED by bench/standin (not real events); " if NO_NORMALIZE else "")
          + ("normalizing in worker processes (bench/worker, a prototype); " if NORMALIZE_WORKER else "")
          + "".join(f"{k} = {v}; " for k, v in {**STORE_KEYS, **SOURCE_KEYS, **STREAMD_ENV}.items()) +
          f"full speed: median of {args.repeat} runs [range]\n")
    print("| reader | events | events/s in the file | committed in the feed, events/s | peak RSS; CPU | "
          "streamd ÷ it |")
    print("|---|---:|---|---|---:|---:|")
    ours = rates(results["streamd"])[0] if args.repeat else 0.0
    for reader in readers if args.repeat else ():
        med, lo, hi = rates(results[reader])
        committed = ""
        rss = ""
        if reader == "streamd":
            c = sorted(x.events / x.commit_seconds for x in results[reader])
            committed = f"{c[len(c) // 2]:,.0f} [{c[0]:,.0f}-{c[-1]:,.0f}]"
            rss = f"{max(x.peak_rss for x in results[reader]):.0f} MB"
            us = sorted(sum(x.cpu.values()) * 1e6 / x.events for x in results[reader])
            rss += f"; CPU {us[len(us) // 2]:.0f} µs/event"
            if any(x.children_rss for x in results[reader]):
                kids = sorted(x.children_cpu * 1e6 / x.events for x in results[reader])
                rss += (f"; its workers {max(x.children_rss for x in results[reader]):.0f} MB, "
                        f"{kids[len(kids) // 2]:.0f} µs/event")
        label = {"streamd": "streamd (durable)", "node-red": "Node-RED 4 websocket in -> file",
                 "websockets": "websockets reader (no parsing, no fsync)"}[reader]
        print(f"| {label} | {args.events:,} | {med:,.0f} [{lo:,.0f}-{hi:,.0f}] | {committed} | {rss} | "
              f"{ours / med:.2f}x |")
    if args.repeat:
        shares = [(r, sorted(x.busy for x in results[r])) for r in readers]
        print(f"\nthe machine's {os.cpu_count()} cores busy while each read (every process, this "
              "one's simulator and file watcher included; median): "
              + ", ".join(f"{r} {100 * b[len(b) // 2]:.0f} %" for r, b in shares))
    if args.memory and args.repeat:
        top = max(results["streamd"], key=lambda x: x.memory.get("rss", 0.0))
        print("\nstreamd's memory at the peak of its largest run (MB; sampled every 0.1 s, so at "
              "most a sample's growth below VmHWM; threads include the probe's):\n")
        print("| " + " | ".join(top.memory) + " |")
        print("|" + "---:|" * len(top.memory))
        print("| " + " | ".join(f"{v:g}" for v in top.memory.values()) + " |")
    if steady is not None:
        rate = steady.events / steady.seconds
        print("\n| steady run | events | events/s | latency p50 | latency p99 | latency max |")
        print("|---|---:|---:|---:|---:|---:|")
        print(f"| streamd, {args.rate:,.0f}/s | {steady.events:,} | {rate:,.0f} | {steady.p50:.1f} ms | "
              f"{steady.p99:.1f} ms | {steady.max:.1f} ms |")
    if profiled is not None:
        print(f"\nprofiled run: {profiled.events / profiled.seconds:,.0f} events/s in the file "
              "(py-spy's sampling costs some)")
        (print_gil if args.gil else print_breakdown)(args.py_spy, profiled)


if __name__ == "__main__":
    main()
