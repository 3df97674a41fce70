"""streamd as users run it: a real process, real sockets, real files, real signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from streamd.providers.synthetic import wire

from .conftest import Streamd, feed_lines, streamd_cli, wait_for

TOKEN = "Zq9-very-secret-webhook-token"


def config(source: str = "", sink: str = "", daemon: str = 'shutdown_timeout = "20s"',
           rate: float = 400.0) -> str:
    return f"""
[store]
path = "feed.db"
[http]
listen = "127.0.0.1:0"
[daemon]
{daemon}
[sources.gen]
provider = "synthetic"
tenants = ["a", "b"]
rate = {rate}
{source}
[sources.hook]
provider = "synthetic"
generate = false
webhook = true
token = "env:PROC_HOOK_TOKEN"
[sinks.file]
type = "file"
path = "out/feed.jsonl"
{sink}
"""


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("STREAMD_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{tool} is required (STREAMD_REQUIRE_TOOLS=1) but not on PATH")
        pytest.skip(f"{tool} not installed")
    return path


def post(d: Streamd, n: int, token: str = TOKEN) -> httpx.Response:
    body = b"[" + b",".join(wire.record(8, i, ["t"], datetime(2026, 1, 1)) for i in range(n)) + b"]"
    return httpx.post(f"{d.url}/webhooks/hook", content=body, timeout=10, headers={
        "content-type": "application/json", "authorization": f"Bearer {token}"})


def head(d: Streamd) -> int:
    rows = d.query("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
    return int(rows[0][0]) if rows else 0


# ---------------------------------------------------------------- sd_notify

def test_sd_notify_ready_status_watchdog_stopping(streamd_proc: Callable[..., Streamd]) -> None:
    d = streamd_proc(config(), env={"PROC_HOOK_TOKEN": TOKEN})
    d.start(extra_env={"WATCHDOG_USEC": "400000"})  # ping every 200 ms
    notes = d.notifications()
    assert notes[0] == "READY=1", notes
    assert any(n.startswith("STATUS=head ") for n in notes[:3])
    wait_for(lambda: d.notifications().count("WATCHDOG=1") >= 5, 10, "periodic WATCHDOG=1")
    wait_for(lambda: any(n.startswith("STATUS=head ") and "sinks 1/1 ok" in n
                         for n in d.notifications()[1:]), 10, "a STATUS= update")
    assert d.terminate() == 0
    notes = d.notifications()
    assert "STOPPING=1" in notes
    assert notes.index("STOPPING=1") > notes.index("READY=1")


def test_no_watchdog_while_a_sink_loop_is_wedged(streamd_proc: Callable[..., Streamd],
                                                 tmp_path: Path) -> None:
    fifo = tmp_path / "d" / "wedge.fifo"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)  # opening it for writing blocks until a reader comes: a wedged write
    cfg = config(source="generate = false").replace('path = "out/feed.jsonl"', f'path = "{fifo}"\n'
                                                    'stall_after = "1s"')
    d = streamd_proc(cfg, env={"PROC_HOOK_TOKEN": TOKEN})
    d.start(extra_env={"WATCHDOG_USEC": "400000"})
    wait_for(lambda: d.notifications().count("WATCHDOG=1") >= 3, 10, "WATCHDOG=1 before the wedge")
    assert post(d, 1).status_code == 200  # intake is fine; the sink will wedge on delivery
    wait_for(lambda: "watchdog: sink file stopped making progress" in d.log(), 15,
             "the daemon to notice the wedged sink")
    before = d.notifications().count("WATCHDOG=1")
    # 8 ping intervals of silence, waited for as a condition that must stay false
    deadline = time.monotonic() + 1.6
    while time.monotonic() < deadline:
        assert d.notifications().count("WATCHDOG=1") == before, "WATCHDOG=1 sent while wedged"
        time.sleep(0.05)
    assert d.proc is not None and d.proc.poll() is None, "the daemon itself stays up"
    d.kill()


# ---------------------------------------------------------------- shutdown, secrets

def test_sigterm_flushes_every_sink_and_exits_0(streamd_proc: Callable[..., Streamd]) -> None:
    d = streamd_proc(config(), env={"PROC_HOOK_TOKEN": TOKEN})
    d.start()
    wait_for(lambda: head(d) > 500, 20, "events to flow")
    assert post(d, 20).status_code == 200
    assert d.terminate() == 0
    lines = feed_lines(d.dir / "out" / "feed.jsonl")
    assert [json.loads(x)["seq"] for x in lines] == list(range(1, head(d) + 1))
    assert "every sink drained" in d.log()


def test_no_secret_value_in_logs_metrics_readyz_status_or_check(
        streamd_proc: Callable[..., Streamd]) -> None:
    d = streamd_proc(config(daemon='log_level = "debug"\nshutdown_timeout = "20s"'),
                     env={"PROC_HOOK_TOKEN": TOKEN})
    d.start()
    assert post(d, 3).status_code == 200
    assert post(d, 3, token="wrong").status_code == 401
    seen = [httpx.get(f"{d.url}{p}", timeout=5).text for p in ("/metrics", "/readyz", "/healthz")]
    env = {"PROC_HOOK_TOKEN": TOKEN}
    status = streamd_cli("status", "-c", str(d.config), env=env)
    check = streamd_cli("check", "-c", str(d.config), env=env)
    assert status.returncode == 0 and check.returncode == 0, status.stderr + check.stderr
    assert "daemon   ready" in status.stdout
    assert "<redacted env:PROC_HOOK_TOKEN>" in check.stdout
    seen += [status.stdout, status.stderr, check.stdout, check.stderr]
    assert d.terminate() == 0
    seen.append(d.log())
    for text in seen:
        assert TOKEN not in text


# ---------------------------------------------------------------- tail

def test_tail_follows_the_running_daemon_with_the_file_sinks_bytes(
        streamd_proc: Callable[..., Streamd]) -> None:
    d = streamd_proc(config(), env={"PROC_HOOK_TOKEN": TOKEN})
    d.start()
    out = d.dir / "tail.out"
    with open(out, "wb") as f:
        tail = subprocess.Popen([sys.executable, "-m", "streamd", "tail", "-f", "--db", str(d.db),
                                 "--from-seq", "1"], stdout=f)
    try:
        wait_for(lambda: out.read_bytes().count(b"\n") >= 600, 30, "tail -f to print 600 events")
    finally:
        tail.terminate()
        tail.wait(10)
    assert d.terminate() == 0
    followed = out.read_bytes().splitlines(keepends=True)
    written = feed_lines(d.dir / "out" / "feed.jsonl")
    assert len(followed) >= 600
    assert followed == written[:len(followed)], "tail prints exactly the file sink's lines"

    r = streamd_cli("tail", "--db", str(d.db), "--from-seq", "1", "--type", "invoice.created",
                    "--tenant", "a")
    picked = r.stdout.encode().splitlines(keepends=True)
    assert picked and picked == [x for x in written if json.loads(x)["type"] == "invoice.created"
                                 and json.loads(x)["tenant"] == "a"]
    r = streamd_cli("tail", "--db", str(d.db), "-n", "3")
    assert r.stdout.encode().splitlines(keepends=True) == written[-3:]


def test_tail_F_follows_the_file_sink_across_rotations(streamd_proc: Callable[..., Streamd]) -> None:
    require("tail")
    d = streamd_proc(config(rate=150.0, sink='rotate_bytes = "64KiB"\nkeep = 1000'),
                     env={"PROC_HOOK_TOKEN": TOKEN})
    path = d.dir / "out" / "feed.jsonl"
    out = d.dir / "tailF.out"
    with open(out, "wb") as f:
        tail = subprocess.Popen(["tail", "-F", "-n", "+1", "-s", "0.05", str(path)], stdout=f,
                                stderr=subprocess.DEVNULL)
    try:
        d.start()
        wait_for(lambda: len(list(path.parent.glob("feed.jsonl.*"))) >= 8, 60, "8 rotations")
        assert d.terminate() == 0
        written = feed_lines(path)
        wait_for(lambda: out.read_bytes().count(b"\n") >= len(written), 20,
                 "tail -F to print every line")
    finally:
        tail.terminate()
        tail.wait(10)
    assert out.read_bytes().splitlines(keepends=True) == written


# ---------------------------------------------------------------- metrics

def test_metrics_pass_promtool_check_metrics(streamd_proc: Callable[..., Streamd]) -> None:
    promtool = require("promtool")
    d = streamd_proc(config(source="reject_every = 10"), env={"PROC_HOOK_TOKEN": TOKEN})
    d.start()
    assert post(d, 5).status_code == 200
    wait_for(lambda: "streamd_dead_letters_total{name=\"gen\",origin=\"source\"} 0.0"
             not in httpx.get(f"{d.url}/metrics", timeout=5).text, 20, "a dead letter")
    text = httpx.get(f"{d.url}/metrics", timeout=5).text
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr
    assert d.terminate() == 0


# ---------------------------------------------------------------- exits

def test_an_unusable_store_stops_the_daemon_with_exit_1(tmp_path: Path) -> None:
    (tmp_path / "feed.db").write_bytes(b"definitely not sqlite" * 300)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[store]\npath = "feed.db"\n[http]\nlisten = "127.0.0.1:0"\n')
    r = streamd_cli("run", "-c", str(cfg), timeout=30)
    assert r.returncode == 1
    assert "store unusable" in r.stderr and "not a database" in r.stderr
    cfg.write_text('[store]\npath = "/dev/null/feed.db"\n[http]\nlisten = "127.0.0.1:0"\n')
    r = streamd_cli("run", "-c", str(cfg), timeout=30)
    assert r.returncode == 1 and "cannot create its directory" in r.stderr


def test_a_second_sigterm_exits_at_once(streamd_proc: Callable[..., Streamd], tmp_path: Path) -> None:
    fifo = tmp_path / "d" / "wedge.fifo"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)  # a sink that never finishes delivering holds the first shutdown up
    cfg = config(source="generate = false", daemon='shutdown_timeout = "5m"').replace(
        'path = "out/feed.jsonl"', f'path = "{fifo}"')
    d = streamd_proc(cfg, env={"PROC_HOOK_TOKEN": TOKEN})
    d.start()
    assert post(d, 1).status_code == 200
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "shutting down (send it again to exit at once)" in d.log(), 10, "the first SIGTERM")
    assert d.proc.poll() is None, "the first SIGTERM waits for the wedged sink"
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(10) == 128 + signal.SIGTERM
    assert "received again: exiting now" in d.log()
