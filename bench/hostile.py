"""The webhook listener against a hostile network: a real `streamd run`, attacked on loopback.

    python bench/hostile.py                          # every scenario (about 3 minutes)
    python bench/hostile.py --only memory,sigterm    # some of them
    PYTHONPATH=/path/to/old/checkout python bench/hostile.py --emfile-seconds 10
                                                     # another build, for a before/after

Each scenario starts its own daemon with the default `[http]` settings (a synthetic
webhook with a token, a file sink) and stops by itself:

- memory:  300 connections without credentials each send 1 MiB - 1 byte of a declared
           1 MiB body and hold; RSS growth (peak, and after they close) and /healthz.
- trickle: a body trickling 1 byte every 2 s (with credentials, and without), and a request
           head trickling the same way: seconds until streamd cuts each (capped at --cap).
- sigterm: SIGTERM while an authenticated body trickles in: seconds to exit, the exit code,
           whether every sink drained, and whether the log holds a traceback.
- p99:     authenticated webhooks (a new connection each, and over keep-alive) while a thread
           keeps 1,000 idle connections open (reopening those streamd closes); p50/p99/max.
- emfile:  the daemon's open-files limit lowered to what it uses + 16 (prlimit), strangers
           connecting every 5 ms for --emfile-seconds: log lines per minute, accept errors,
           and whether an authenticated webhook and /healthz still get through.

Loopback only: nothing here leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
from _common import free_port, up, wait

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from streamd.providers.synthetic import wire  # noqa: E402

TOKEN = "hostile-bench-token-0123456789"
MiB = 2**20
CONFIG = """
[store]
path = "feed.db"
[http]
listen = "127.0.0.1:{port}"
[sources.hook]
provider = "synthetic"
generate = false
webhook = true
token = "env:HOSTILE_TOKEN"
[sinks.file]
type = "file"
path = "out/feed.jsonl"
"""
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class Daemon:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = free_port()
        (work / "config.toml").write_text(CONFIG.format(port=self.port))
        self.logfile = work / "streamd.log"
        env = {**os.environ, "NOTIFY_SOCKET": "", "HOSTILE_TOKEN": TOKEN}
        with open(self.logfile, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "streamd", "run", "-c", "config.toml"],
                                         cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=log)
        wait(lambda: up(self.port) or self.proc.poll() is not None, 30, "streamd's listener")
        if self.proc.poll() is not None:
            raise SystemExit(f"streamd exited: {self.log()}")
        self.url = f"http://127.0.0.1:{self.port}"
        self.n = 0

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def rss_mb(self) -> float:
        m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{self.proc.pid}/status").read_text(), re.M)
        return int(m.group(1)) / 1024 if m else 0.0

    def post(self, client: httpx.Client | None = None) -> int:
        """One authenticated webhook: over `client` (keep-alive), or on a new connection of
        its own (a plain socket: an httpx client per request would time its own setup)."""
        self.n += 1
        body = b"[" + wire.record(5, self.n, ["t"], EPOCH) + b"]"
        headers = {"content-type": "application/json", "authorization": f"Bearer {TOKEN}"}
        if client is not None:
            return client.post(f"{self.url}/webhooks/hook", content=body, headers=headers).status_code
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(head("/webhooks/hook", {**headers, "content-length": str(len(body)),
                                              "connection": "close"}) + body)
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        m = re.match(rb"HTTP/1\.1 (\d+)", answer)
        return int(m.group(1)) if m else 0

    def healthz(self) -> str:
        try:
            t0 = time.monotonic()
            code = httpx.get(f"{self.url}/healthz", timeout=10).status_code
            return f"{code} in {(time.monotonic() - t0) * 1000:.0f} ms"
        except httpx.HTTPError as exc:
            return type(exc).__name__

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    return s


def head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: streamd", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def until_closed(s: socket.socket, cap: float, feed: Callable[[], bytes] | None = None,
                 every: float = 2.0) -> float | None:
    """Seconds until the server closes (or answers and closes) while `feed()` trickles."""
    t0 = time.monotonic()
    s.settimeout(0.1)
    next_feed = t0
    while time.monotonic() - t0 < cap:
        if feed is not None and time.monotonic() >= next_feed:
            try:
                s.sendall(feed())
            except OSError:
                return time.monotonic() - t0
            next_feed += every
        try:
            if not s.recv(65536):
                return time.monotonic() - t0
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - t0
    return None


def fmt_s(v: float | None, cap: float) -> str:
    return f"> {cap:.0f} s (never cut)" if v is None else f"{v:.1f} s"


# ---------------------------------------------------------------- scenarios

def memory(d: Daemon, args: argparse.Namespace) -> list[tuple[str, str, str]]:
    d.post()
    before = d.rss_mb()
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], d.rss_mb())

    held: list[socket.socket] = []
    chunk = b" " * (MiB - 1)

    def push() -> None:
        try:
            s = connect(d.port)
        except OSError:
            return
        held.append(s)
        try:
            s.sendall(head("/webhooks/hook", {"Content-Type": "application/json",
                                              "Content-Length": str(MiB), "Authorization": "Bearer x"}))
            s.sendall(chunk)
        except OSError:
            pass

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=push) for _ in range(300)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    during = d.healthz()
    holding = d.rss_mb()
    for s in held:
        s.close()
    time.sleep(2)  # the bench's own pacing: RSS after the holders left
    stop.set()
    sampler.join()
    after = d.rss_mb()
    return [("RSS growth, 300 strangers holding 1 MiB bodies (peak)", "< 64 MB",
             f"{peak[0] - before:.0f} MB"),
            ("  while they hold / after they closed", "",
             f"{holding - before:.0f} MB / {after - before:.0f} MB"),
            ("  /healthz while they hold", "answers", during)]


def trickle(d: Daemon, args: argparse.Namespace) -> list[tuple[str, str, str]]:
    cap = args.cap
    out: dict[str, float | None] = {}

    def body(auth: str, key: str) -> None:
        s = connect(d.port)
        s.sendall(head("/webhooks/hook", {"Content-Type": "application/json", "Transfer-Encoding": "chunked",
                                          "Authorization": auth}))
        out[key] = until_closed(s, cap, lambda: b"1\r\n \r\n")
        s.close()

    def head_trickle() -> None:
        s = connect(d.port)
        data = iter(head("/webhooks/hook", {"Authorization": f"Bearer {TOKEN}", "X-Pad": "a" * 100}))
        out["head"] = until_closed(s, cap, lambda: bytes([next(data, 32)]))
        s.close()

    threads = [threading.Thread(target=body, args=(f"Bearer {TOKEN}", "auth")),
               threading.Thread(target=body, args=("Bearer wrong", "stranger")),
               threading.Thread(target=head_trickle)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(cap + 30)
    return [("a body trickling 1 B / 2 s, with credentials: cut after", "<= 30 s",
             fmt_s(out.get("auth"), cap)),
            ("  the same without credentials: answered 401 after", "", fmt_s(out.get("stranger"), cap)),
            ("a request head trickling 1 B / 2 s: cut after", "", fmt_s(out.get("head"), cap))]


def sigterm(d: Daemon, args: argparse.Namespace) -> list[tuple[str, str, str]]:
    with httpx.Client(timeout=30) as client:
        for _ in range(100):
            d.post(client)
    s = connect(d.port)
    s.sendall(head("/webhooks/hook", {"Content-Type": "application/json", "Transfer-Encoding": "chunked",
                                      "Authorization": f"Bearer {TOKEN}"}) + b"1\r\n[\r\n")
    stop = threading.Event()

    def feed() -> None:
        while not stop.wait(2.0):
            try:
                s.sendall(b"1\r\n \r\n")
            except OSError:
                return

    t = threading.Thread(target=feed)
    t.start()
    time.sleep(0.5)  # the request is in its handler (the bench's pacing, not a wait for state)
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    try:
        code: int | str = d.proc.wait(args.cap)
    except subprocess.TimeoutExpired:
        code = f"still running after {args.cap:.0f} s"
    took = time.monotonic() - t0
    stop.set()
    t.join()
    s.close()
    log = d.log()
    out = d.work / "out" / "feed.jsonl"
    lines = len(out.read_bytes().splitlines()) if out.exists() else 0
    return [("SIGTERM with a trickling request in flight: exit", "0 within 15 s",
             f"{code} after {took:.1f} s"),
            ("  sinks drained (file sink lines / events)", "100 / 100",
             f"{lines} / 100, {'every sink drained' if 'every sink drained' in log else 'NOT drained'}"),
            ("  tracebacks in the log", "0", str(log.count("Traceback")))]


def p99(d: Daemon, args: argparse.Namespace) -> list[tuple[str, str, str]]:
    def measure(n: int, keepalive: bool) -> tuple[list[float], int]:
        lat: list[float] = []
        failed = 0
        with httpx.Client(timeout=30) as client:
            for _ in range(n):
                t0 = time.perf_counter()
                try:
                    ok = d.post(client if keepalive else None) == 200
                except (httpx.HTTPError, OSError):
                    ok = False
                lat.append((time.perf_counter() - t0) * 1000)
                failed += not ok
        return lat, failed

    def q(lat: list[float], p: float) -> float:
        return statistics.quantiles(lat, n=100)[int(p) - 1] if len(lat) > 1 else lat[0]

    quiet, _ = measure(300, False)
    stop = threading.Event()
    opened = [0]

    def hostile() -> None:
        socks: list[socket.socket | None] = [None] * 1000
        while not stop.is_set():
            for i in range(len(socks)):
                if stop.is_set():
                    break
                s = socks[i]
                if s is not None:
                    try:
                        s.setblocking(False)
                        alive = s.recv(1, socket.MSG_PEEK) != b""
                    except BlockingIOError:
                        alive = True
                    except OSError:
                        alive = False
                    if alive:
                        continue
                    s.close()
                try:
                    socks[i] = socket.create_connection(("127.0.0.1", d.port), timeout=5)
                    opened[0] += 1
                except OSError:
                    socks[i] = None
            time.sleep(0.01)
        for s in socks:
            if s is not None:
                s.close()

    t = threading.Thread(target=hostile)
    t.start()
    wait(lambda: opened[0] >= 1000, 60, "1,000 hostile connections")
    fresh, f1 = measure(1000, False)
    kept, f2 = measure(1000, True)
    stop.set()
    t.join()
    return [("webhook p99, 1,000 hostile idle connections (new connection each)", "< 100 ms",
             f"{q(fresh, 99):.1f} ms (p50 {q(fresh, 50):.1f}, max {max(fresh):.0f}; {f1} failed)"),
            ("  the same over keep-alive", "", f"{q(kept, 99):.1f} ms (p50 {q(kept, 50):.1f}, "
                                                f"max {max(kept):.0f}; {f2} failed)"),
            ("  with no hostile connections (new connection each)", "", f"{q(quiet, 99):.1f} ms"),
            ("  hostile connections opened in all (streamd closed the rest)", "", f"{opened[0]:,}")]


def emfile(d: Daemon, args: argparse.Namespace) -> list[tuple[str, str, str]]:
    pid = d.proc.pid
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    lines_before = len(d.log().splitlines())
    size_before = d.logfile.stat().st_size
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 16, hard))
    stop = threading.Event()
    held: list[socket.socket] = []

    def strangers() -> None:
        while not stop.is_set():
            try:
                held.append(socket.create_connection(("127.0.0.1", d.port), timeout=5))
            except OSError:
                pass
            if len(held) > 2000:
                held.pop(0).close()
            time.sleep(0.005)

    t = threading.Thread(target=strangers)
    t.start()
    t0 = time.monotonic()
    time.sleep(args.emfile_seconds / 2)
    try:
        hook = str(d.post())
    except OSError as exc:
        hook = type(exc).__name__
    health = d.healthz()
    time.sleep(max(0.0, args.emfile_seconds - (time.monotonic() - t0)))
    took = time.monotonic() - t0
    stop.set()
    t.join()
    for s in held:
        s.close()
    text = d.log()
    lines = len(text.splitlines()) - lines_before
    if args.verbose:
        print("\n".join(text.splitlines()[lines_before:][:40]), file=sys.stderr)
    grown = d.logfile.stat().st_size - size_before
    m = re.findall(r'streamd_http_accept_errors_total\{error="EMFILE",listener="main"\} (\S+)',
                   httpx.get(f"{d.url}/metrics", timeout=30).text) if up(d.port) else []
    return [("log lines per minute under EMFILE", "< 10", f"{lines / took * 60:.0f} ({grown / 1024:.0f} KiB "
                                                         f"in {took:.0f} s)"),
            ("  accepts that failed with EMFILE (metric)", "", m[0] if m else "-"),
            ("  an authenticated webhook / /healthz meanwhile", "200 / 200", f"{hook} / {health}")]


SCENARIOS: dict[str, Callable[[Daemon, argparse.Namespace], list[tuple[str, str, str]]]] = {
    "memory": memory, "trickle": trickle, "sigterm": sigterm, "p99": p99, "emfile": emfile}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    ap.add_argument("--cap", type=float, default=60.0, help="longest wait for a cut, seconds")
    ap.add_argument("--emfile-seconds", type=float, default=60.0)
    ap.add_argument("--verbose", action="store_true", help="print the log lines a scenario counts")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))  # the bench's own sockets
    rows: list[tuple[str, str, str]] = []
    for name in args.only.split(","):
        with tempfile.TemporaryDirectory(prefix=f"streamd-bench-hostile-{name}-") as tmp:
            d = Daemon(Path(tmp))
            try:
                rows += SCENARIOS[name](d, args)
            finally:
                d.stop()
        print(f"  {name}: done", file=sys.stderr)
    w = max(len(r[0]) for r in rows)
    print(f"\n{'figure':<{w}}  {'goal':<15}  measured")
    for figure, goal, value in rows:
        print(f"{figure:<{w}}  {goal:<15}  {value}")


if __name__ == "__main__":
    main()
