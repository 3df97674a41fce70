"""What the benches that drive a real `streamd run` share."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pairs(ap: argparse.ArgumentParser, option: str, items: list[str]) -> dict[str, str]:
    """The NAME=VALUE items of an option given again and again (`--env`, `--source`…);
    an item without `=` is a usage error naming the option."""
    found: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            ap.error(f"{option} wants NAME=VALUE, not {item!r}")
        found[name] = value
    return found


def wait(cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


def up(port: int) -> bool:
    """streamd's listener answers /healthz."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start_streamd(work: Path, config: str, port: int) -> subprocess.Popen[bytes]:
    """`streamd run` with `config` in `work`, once its listener on `port` answers."""
    (work / "config.toml").write_text(config)
    env = {**os.environ, "NOTIFY_SOCKET": ""}
    proc = subprocess.Popen([sys.executable, "-m", "streamd", "run", "-c", str(work / "config.toml")],
                            cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait(lambda: up(port) or proc.poll() is not None, 30, "streamd's listener")
    if proc.poll() is not None:
        raise SystemExit(f"streamd exited: {proc.stderr.read().decode() if proc.stderr else ''}")
    return proc


def stop_streamd(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    if proc.wait(120) != 0:
        raise SystemExit(f"streamd exited with {proc.returncode}: "
                         f"{proc.stderr.read().decode() if proc.stderr else ''}")
