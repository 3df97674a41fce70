"""Shared test helpers: real subprocesses of streamd, real sockets, real SQLite files."""

from __future__ import annotations

import gc
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

T = TypeVar("T")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_collection_finish(session: pytest.Session) -> None:
    """What exists once every test is collected (modules, test functions, parameters)
    lives as long as the session: frozen out of the collections below, which then walk
    only what tests made since (a collection costs ~45 ms of walking it otherwise)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def collect_what_the_test_left() -> Iterator[None]:
    """After each test, once its own fixtures are torn down: collect its garbage now, so a
    socket, transport or stream it left unclosed warns (and fails) in this test's teardown,
    not in whichever later test the collector happens to run during."""
    yield
    gc.collect()


async def until(cond: Callable[[], Awaitable[object] | object], seconds: float = 10.0,
                what: str = "condition") -> None:
    """Async: wait until `cond()` (sync or async) is truthy, failing the test after `seconds`."""
    with anyio.fail_after(seconds):
        while True:
            value = cond()
            if isinstance(value, Awaitable):
                value = await value
            if value:
                return
            await anyio.sleep(0.01)  # noqa: ASYNC110 - polling state owned by the code under test


def wait_for(cond: Callable[[], T], timeout: float = 10.0, what: str = "condition",
              interval: float = 0.02) -> T:
    """Poll `cond` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class InProcess:
    """The daemon in the test's own event loop (real sockets, a real SQLite file):
    `async with InProcess(cfg) as d:` then `d.http` (a client for its listener),
    `d.daemon`, `d.rows(sql)`. Leaving the block stops the daemon (SIGTERM's path)."""

    def __init__(self, cfg: Any, clock: Callable[[], float] | None = None) -> None:
        self.cfg = cfg
        self.clock = clock

    async def __aenter__(self) -> Any:
        from streamd.daemon import Daemon

        self.daemon = Daemon(self.cfg, **({"clock": self.clock} if self.clock else {}))
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self.daemon.run)
        with anyio.fail_after(10):
            await self.daemon.ready.wait()
        assert self.daemon.web and self.daemon.web.address
        host, port = self.daemon.web.address
        self.url = f"http://{host}:{port}"
        self.http = httpx.AsyncClient(base_url=self.url, timeout=10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        self.daemon.request_stop()
        await self._tg.__aexit__(None, None, None)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        db = sqlite3.connect(self.cfg.store.path, timeout=10)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    async def metric(self, line_prefix: str) -> float | None:
        """The value of the first /metrics line that starts with `line_prefix`."""
        text = (await self.http.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith(line_prefix):
                return float(line.rsplit(" ", 1)[1])
        return None


class Streamd:
    """`python -m streamd run` as a real subprocess, with a real $NOTIFY_SOCKET.

    Logs go to a file (read with `log()`), sd_notify datagrams to a unix socket the
    test owns (read with `notifications()`), and the HTTP port (the config asks for
    port 0) is read from the daemon's log line.
    """

    def __init__(self, workdir: Path, config: str, env: dict[str, str] | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "config.toml"
        self.config.write_text(config)
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.notify: socket.socket | None = None
        self.notes: list[str] = []
        self.port = 0

    @property
    def db(self) -> Path:
        return self.dir / "feed.db"

    def start(self, *, wait_ready: bool = True, extra_env: dict[str, str] | None = None) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.runs += 1
        self.close_notify()
        path = self.dir / f"n{self.runs}.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(path))
        self.notify.setblocking(False)
        self.notes = []
        env = {**os.environ, **self.env, **(extra_env or {}), "NOTIFY_SOCKET": str(path),
               "PYTHONUNBUFFERED": "1"}
        self.logfile = self.dir / f"log{self.runs}.txt"
        with open(self.logfile, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamd", "run", "-c", str(self.config)],
                stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=self.dir)
        if wait_ready:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            self.notifications()
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"streamd exited with {self.proc.returncode}:\n{self.log()}")
            return "READY=1" in self.notes

        wait_for(ready, timeout, "READY=1 from streamd")
        m = wait_for(lambda: re.search(r"http: listening on [^:]+:(\d+)", self.log()), 5,
                     "the listening log line")
        self.port = int(m.group(1))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def notifications(self) -> list[str]:
        """Every sd_notify field received so far (e.g. "READY=1", "WATCHDOG=1")."""
        while self.notify is not None:
            try:
                data = self.notify.recv(4096)
            except BlockingIOError:
                break
            self.notes.extend(data.decode().split("\n"))
        return self.notes

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.runs else ""

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close_notify(self) -> None:
        if self.notify is not None:
            self.notify.close()
            self.notify = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.close_notify()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        db = sqlite3.connect(self.db, timeout=10)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()


class Background:
    """An event loop in a thread, serving simulators while the test drives a real process."""

    def __init__(self, portal: BlockingPortal) -> None:
        self.portal = portal
        self._futures: list[Future[Any]] = []

    def start(self, serve: Callable[[], Awaitable[Any]]) -> None:
        self._futures.append(self.portal.start_task_soon(serve))

    def stop(self) -> None:
        for fut in self._futures:
            fut.cancel()


@pytest.fixture
def background() -> Iterator[Background]:
    with start_blocking_portal() as portal:
        bg = Background(portal)
        yield bg
        bg.stop()


@pytest.fixture
def streamd_proc(tmp_path: Path) -> Iterator[Callable[..., Streamd]]:
    made: list[Streamd] = []

    def make(config: str, env: dict[str, str] | None = None, name: str = "d") -> Streamd:
        d = Streamd(tmp_path / name, config, env)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


def streamd_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                timeout: float = 60.0, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamd", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout,
                          input=input.decode() if input is not None else None)


def feed_lines(path: Path) -> list[bytes]:
    """A file sink's lines, rotated files first (oldest .N down to .1), then the live file."""
    rotated = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]))
    out: list[bytes] = []
    for p in [*rotated, path]:
        if p.exists():
            out.extend(p.read_bytes().splitlines(keepends=True))
    return out
