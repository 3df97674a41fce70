"""The webhook listener as an attacker on loopback meets it: a real `streamd run`, raw sockets.

Each test is one thing a caller without credentials (or a slow one with them) could do to
the daemon before this listener existed, and what it must get now (docs/security.md)."""

from __future__ import annotations

import base64
import re
import resource
import socket
import threading
import time
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from streamd.providers.asteria import simulator as asteria_sim
from streamd.providers.synthetic import wire

from .conftest import Background, Streamd, streamd_cli, wait_for

TOKEN = "listener-test-token-0123456789"
CONNEC_ID, CONNEC_KEY = "listener-app", "listener-connec-key"
ASTERIA_SECRET = "listener-asteria-secret"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
ENV = {"HOOK_TOKEN": TOKEN, "CONNEC_KEY": CONNEC_KEY, "ASTERIA_SECRET": ASTERIA_SECRET}
MiB = 2**20


def config(http: str = "", extra: str = "") -> str:
    return f"""
[store]
path = "feed.db"
commit_linger = "1ms"
[http]
listen = "127.0.0.1:0"
{http}
[sources.hook]
provider = "synthetic"
generate = false
webhook = true
token = "env:HOOK_TOKEN"
[sources.mno]
provider = "connec"
api_id = "{CONNEC_ID}"
api_key = "env:CONNEC_KEY"
{extra}
[sinks.file]
type = "file"
path = "out/feed.jsonl"
"""


def head(path: str, headers: dict[str, str], method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: streamd", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(d: Streamd, port: int | None = None) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port or d.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    return s


def read_answer(s: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (or `timeout`)."""
    s.settimeout(timeout)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open; it sent {out[:200]!r}") from None
    except ConnectionResetError:
        pass
    return out


def closed_by_server(s: socket.socket, timeout: float) -> bool:
    """True once the server closed the connection (EOF or reset) within `timeout`."""
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def rec(n: int) -> bytes:
    return wire.record(3, n, ["t"], EPOCH)


def post_hook(d: Streamd, body: bytes, port: int | None = None) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port or d.port}/webhooks/hook", content=body, timeout=10,
                      headers={"content-type": "application/json", "authorization": f"Bearer {TOKEN}"})


def metric(d: Streamd, name: str, port: int | None = None) -> float:
    text = httpx.get(f"http://127.0.0.1:{port or d.port}/metrics", timeout=10).text
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def gateway(background: Background, tmp_path: Path) -> asteria_sim.AsteriaSimulator:
    sim = asteria_sim.simulator(tmp_path / "certs", asteria_sim.Knobs(count=0, rate=1))
    background.start(sim.serve)
    wait_for(lambda: sim.url, 10, "the Asteria simulator to listen")
    return sim


# ---------------------------------------------------------------- authenticate before reading

def test_every_webhook_route_refuses_a_stranger_before_reading_its_body(
        streamd_proc: Callable[..., Streamd], gateway: asteria_sim.AsteriaSimulator) -> None:
    """A caller without credentials gets 401 on the strength of its headers alone: it
    declares a 1 MiB body, sends none of it, and is answered and cut off anyway."""
    asteria = gateway.source_toml("gw", webhook_secret='"env:ASTERIA_SECRET"')
    d = streamd_proc(config(extra=asteria), env=ENV)
    d.start()
    wrong_basic = "Basic " + base64.b64encode(f"{CONNEC_ID}:nope".encode()).decode()
    cases = [
        ("/webhooks/hook", {"Authorization": "Bearer nope"}),
        ("/webhooks/hook", {}),
        ("/maestrano/connec/notifications", {"Authorization": wrong_basic}),
        ("/maestrano/connec/notifications/tenant-a", {}),
        ("/webhooks/gw", {"x-streamd-webhook-secret": "nope", "x-asteria-topic": "INVOICE_ADD"}),
    ]
    for path, auth in cases:
        with closing(connect(d)) as s:
            s.sendall(head(path, {"Content-Type": "application/json", "Content-Length": str(MiB), **auth}))
            answer = read_answer(s)  # no body sent: only an answer from the headers can end this
        status = answer.split(b"\r\n", 1)[0]
        assert status == b"HTTP/1.1 401 Unauthorized", (path, answer[:200])
        assert b"connection: close" in answer.lower(), path
    assert 'www-authenticate' in httpx.post(f"{d.url}/maestrano/connec/notifications", timeout=10,
                                            content=b"{}").headers
    # the right credentials still get in, over the same listener
    assert post_hook(d, b"[" + rec(0) + b"]").status_code == 200
    assert d.query("SELECT count(*) FROM events WHERE source = 'hook'") == [(1,)]


def test_memory_stays_flat_while_300_strangers_push_1_mib_bodies(
        streamd_proc: Callable[..., Streamd]) -> None:
    """300 connections each send 1 MiB - 1 byte of a declared 1 MiB body and hold: before,
    every body was read (and kept) before anyone looked at the credentials: +310 MB."""
    d = streamd_proc(config(), env=ENV)
    d.start()
    assert d.proc is not None
    post_hook(d, b"[" + rec(0) + b"]")  # warm: the first request's allocations are not the attack's
    before = rss_kib(d.proc.pid)
    chunk = b" " * (MiB - 1)
    errors: list[BaseException] = []
    held: list[socket.socket] = []

    def push() -> None:
        s = connect(d)
        held.append(s)
        try:
            s.sendall(head("/webhooks/hook", {"Content-Type": "application/json",
                                              "Content-Length": str(MiB), "Authorization": "Bearer x"}))
            s.sendall(chunk)
        except OSError:
            pass  # the server answered 401 and stopped listening: the point
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=push) for _ in range(300)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert httpx.get(f"{d.url}/healthz", timeout=10).status_code == 200
        grown = (rss_kib(d.proc.pid) - before) / 1024
        assert grown < 64, f"RSS grew {grown:.0f} MB under 300 unauthenticated 1 MiB bodies"
    finally:
        for s in held:
            s.close()
    assert post_hook(d, b"[" + rec(1) + b"]").status_code == 200


# ---------------------------------------------------------------- slow clients

def test_a_head_trickling_in_is_cut_at_header_timeout(streamd_proc: Callable[..., Streamd]) -> None:
    d = streamd_proc(config('header_timeout = "1s"'), env=ENV)
    d.start()
    with closing(connect(d)) as idle, closing(connect(d)) as slow:
        t0 = time.monotonic()
        cut = False
        request = head("/webhooks/hook", {"Authorization": f"Bearer {TOKEN}"})
        for byte in request:  # one byte every 100 ms: the head would take seconds
            try:
                slow.send(bytes([byte]))
            except OSError:
                cut = True
                break
            if closed_by_server(slow, 0.1):
                cut = True
                break
        took = time.monotonic() - t0
        assert cut, "a head trickling in byte by byte was never cut"
        assert 0.9 <= took < 4, took
        assert closed_by_server(idle, 5), "a connection that never sent anything was kept"
    assert metric(d, 'streamd_http_connections_closed_total{listener="main",reason="header_timeout"}') == 2


def test_a_body_trickling_in_is_cut_at_body_timeout_with_408(streamd_proc: Callable[..., Streamd]) -> None:
    d = streamd_proc(config('body_timeout = "1s"'), env=ENV)
    d.start()
    with closing(connect(d)) as s:
        s.sendall(head("/webhooks/hook", {"Content-Type": "application/json", "Transfer-Encoding": "chunked",
                                          "Authorization": f"Bearer {TOKEN}"}))
        t0 = time.monotonic()
        answer = b""
        s.settimeout(0.2)
        while time.monotonic() - t0 < 10:
            try:
                s.sendall(b"1\r\n \r\n")
                got = s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not got:
                break
            answer += got
        took = time.monotonic() - t0
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 0.9 <= took < 5, took
    assert metric(d, 'streamd_http_connections_closed_total{listener="main",reason="body_timeout"}') == 1
    assert d.query("SELECT count(*) FROM events") == [(0,)]


def test_an_idle_keep_alive_connection_is_closed_after_keepalive_timeout(
        streamd_proc: Callable[..., Streamd]) -> None:
    d = streamd_proc(config('keepalive_timeout = "1s"'), env=ENV)
    d.start()
    body = b"[" + rec(0) + b"]"
    with closing(connect(d)) as s:
        s.sendall(head("/webhooks/hook", {"Content-Type": "application/json",
                                          "Content-Length": str(len(body)),
                                          "Authorization": f"Bearer {TOKEN}"}) + body)
        s.settimeout(10)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        assert closed_by_server(s, 5)
        assert 0.9 <= time.monotonic() - t0 < 4
    assert metric(d, 'streamd_http_connections_closed_total{listener="main",reason="idle"}') == 1


def test_a_body_sent_to_a_path_nobody_serves_does_not_keep_the_connection(
        streamd_proc: Callable[..., Streamd]) -> None:
    d = streamd_proc(config(), env=ENV)
    d.start()
    with closing(connect(d)) as s:
        s.sendall(head("/nowhere", {"Content-Length": str(MiB)}) + b"x" * 1000)
        answer = read_answer(s)
    assert answer.startswith(b"HTTP/1.1 404"), answer[:100]


def test_garbage_and_huge_heads_are_counted_not_logged(streamd_proc: Callable[..., Streamd]) -> None:
    d = streamd_proc(config(), env=ENV)
    d.start()
    for n in range(50):
        with closing(connect(d)) as s:
            s.sendall(b"\x16\x03\x01 not http at all\r\n\r\n" if n % 2 else
                      head("/webhooks/hook", {"X-Pad": "a" * 20_000}))
            assert read_answer(s)[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 431"), n
    assert metric(d, 'streamd_http_connections_closed_total{listener="main",reason="bad_request"}') == 50
    assert "Invalid HTTP" not in d.log() and len(d.log().splitlines()) < 10, d.log()


# ---------------------------------------------------------------- caps

def test_strangers_past_the_cap_push_out_the_oldest_idle_ones_and_senders_still_get_in(
        streamd_proc: Callable[..., Streamd]) -> None:
    # /metrics on its own listener: scraping it must not add strangers to the one under test
    d = streamd_proc(config('max_connections = 40\nmax_unauthenticated = 10\n'
                            'admin_listen = "127.0.0.1:0"'), env=ENV)
    d.start()
    admin = int(wait_for(lambda: re.search(r"admin endpoints .* on [^:]+:(\d+)", d.log()), 5).group(1))
    evicted = 'streamd_http_connections_closed_total{listener="main",reason="evicted"}'
    idle = [connect(d) for _ in range(25)]
    try:
        # the 15 oldest were closed to keep 10 strangers; the 10 newest are still open
        wait_for(lambda: metric(d, evicted, admin) >= 15, 10, "the oldest strangers to be evicted")
        assert all(closed_by_server(s, 5) for s in idle[:15])
        assert not any(closed_by_server(s, 0.05) for s in idle[15:])
        assert metric(d, evicted, admin) == 15
        # an authenticated sender comes in (a new stranger, until its headers are read)
        for n in range(5):
            assert post_hook(d, b"[" + rec(n) + b"]").status_code == 200
        assert metric(d, 'streamd_http_connections{listener="main"}', admin) <= 11
    finally:
        for s in idle:
            s.close()


def test_out_of_file_descriptors_is_logged_once_and_the_listener_keeps_serving(
        streamd_proc: Callable[..., Streamd]) -> None:
    """Before, CPython's accept loop logged a traceback per try: 4 million lines in 40 s."""
    d = streamd_proc(config(), env=ENV)
    d.start()
    assert d.proc is not None
    pid = d.proc.pid
    in_use = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 48, hard))
    held = []
    try:
        for _ in range(100):
            held.append(connect(d))
        wait_for(lambda: "cannot accept connections: EMFILE" in d.log(), 10, "EMFILE to be seen")
        t0 = time.monotonic()
        # while strangers keep coming, for 3 seconds, and a sender gets in
        while time.monotonic() - t0 < 3:
            held.append(connect(d))
            time.sleep(0.02)
        assert post_hook(d, b"[" + rec(0) + b"]").status_code == 200
        assert httpx.get(f"{d.url}/healthz", timeout=10).status_code == 200
        failed = metric(d, 'streamd_http_accept_errors_total{error="EMFILE",listener="main"}')
        assert failed >= 1
        # the listener left descriptors for the rest: the file sink opens its file
        out = d.dir / "out" / "feed.jsonl"
        wait_for(lambda: out.exists() and len(out.read_bytes().splitlines()) == 1, 10,
                 "the file sink to deliver while strangers keep coming")
    finally:
        for s in held:
            s.close()
    lines = [ln for ln in d.log().splitlines() if "accept" in ln]
    assert len(lines) <= 2, "\n".join(lines[:20])
    assert "Traceback" not in d.log()


# ---------------------------------------------------------------- shutdown

def test_sigterm_is_not_held_hostage_by_a_trickling_request(streamd_proc: Callable[..., Streamd]) -> None:
    """Before, one such request made SIGTERM take 35 s, skip the sinks' drain, and log an
    ASGI traceback. Now it gets `drain_grace` (3 s by default), then 503."""
    d = streamd_proc(config(), env=ENV)
    d.start()
    for n in range(20):
        assert post_hook(d, b"[" + rec(n) + b"]").status_code == 200
    with closing(connect(d)) as s:
        s.sendall(head("/webhooks/hook", {"Content-Type": "application/json", "Transfer-Encoding": "chunked",
                                          "Authorization": f"Bearer {TOKEN}"}) + b"1\r\n[\r\n")
        wait_for(lambda: metric(d, 'streamd_http_connections{listener="main"}') >= 1, 10)
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(0.5):
                try:
                    s.sendall(b"1\r\n \r\n")
                except OSError:
                    return

        t = threading.Thread(target=trickle)
        t.start()
        try:
            t0 = time.monotonic()
            assert d.terminate(timeout=15) == 0
            took = time.monotonic() - t0
        finally:
            stop.set()
            t.join()
        answer = read_answer(s, 5)
    assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
    assert took < 10, took
    log = d.log()
    assert "every sink drained" in log, log
    assert "Traceback" not in log and "passed" not in log, log
    assert len(Path(d.dir / "out" / "feed.jsonl").read_bytes().splitlines()) == 20


# ---------------------------------------------------------------- no open door

def test_a_webhook_without_a_token_is_refused_by_check(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[sources.open]\nprovider = "synthetic"\nwebhook = true\n')
    r = streamd_cli("check", "-c", str(cfg))
    assert r.returncode == 78, r.stdout + r.stderr
    assert "sources.open.token: required with webhook = true" in r.stderr
    r = streamd_cli("run", "-c", str(cfg), timeout=30)
    assert r.returncode == 78


# ---------------------------------------------------------------- admin endpoints apart

def test_admin_endpoints_can_live_on_their_own_address(streamd_proc: Callable[..., Streamd]) -> None:
    d = streamd_proc(config('admin_listen = "127.0.0.1:0"'), env=ENV)
    d.start()
    m = wait_for(lambda: re.search(r"http: admin endpoints \(.*\) on [^:]+:(\d+)", d.log()), 5)
    admin = int(m.group(1))
    assert admin != d.port
    for path in ("/metrics", "/healthz", "/readyz"):
        assert httpx.get(f"http://127.0.0.1:{admin}{path}", timeout=10).status_code == 200
        assert httpx.get(f"{d.url}{path}", timeout=10).status_code == 404
    assert post_hook(d, b"[" + rec(0) + b"]").status_code == 200
    assert httpx.post(f"http://127.0.0.1:{admin}/webhooks/hook", timeout=10).status_code == 404
    r = streamd_cli("status", "-c", str(d.config), cwd=d.dir, env=ENV)
    assert f"ready at 127.0.0.1:{admin}" in r.stdout, r.stdout + r.stderr
