"""A real SFTP server on loopback, for the SFTP sink's tests and drills.

OpenSSH's own `sshd` (`/usr/sbin/sshd -D -e`, its `internal-sftp`) on a free high port
of 127.0.0.1, with throwaway keys; where sshd is not installed, asyncssh's SFTP server
in a background thread (unless STREAMD_REQUIRE_TOOLS=1: then a missing sshd fails).
STREAMD_SFTP_SERVER=asyncssh (or sshd) picks one.

    with running_sftp_server(tmp_path / "sftp") as server:
        config = f'''...{server.sink_toml("erp", match={"provider": ["synthetic"]})}'''
        ... server.local_dir holds what the sink wrote ...
        server.stop(); ...; server.start()   # down, and back on the same port
        server.drop_sessions()               # the listener stays, open connections die

From another test module, wrap `running_sftp_server` in a fixture of your own (importing
the ready-made `sftp_server` fixture works for pytest, but ruff flags the parameter, F811).

What it gives (see `SftpServer`): host, port, username, client_key (a private key file
in authorized_keys), encrypted_key + PASSPHRASE (another one, encrypted in
OpenSSH's own format, as `ssh-keygen -N` writes it),
stranger_key (a key the server refuses), known_hosts (the server's real host key),
wrong_known_hosts (another key under the same name), directory (the remote directory
to write to, as the server names it) and local_dir (the same directory on this host).
`invoice(i)` and `invoice_records(n)` (for a synthetic source's webhook) are sample data.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from .ports import free_port

SSHD = "/usr/sbin/sshd"
PASSPHRASE = "correct horse battery staple"
PRIVSEP_DIR = Path("/run/sshd")


def _write_key(path: Path, key: asyncssh.SSHKey, fmt: str = "openssh",
               passphrase: str | None = None) -> None:
    # One bcrypt round (OpenSSH's default is 16): a test key, made at every server start.
    path.write_bytes(key.export_private_key(fmt, passphrase, rounds=1, ignore_few_rounds=True)
                     if passphrase else key.export_private_key(fmt))
    path.chmod(0o600)
    path.with_name(path.name + ".pub").write_bytes(key.export_public_key())


def _public_line(key: asyncssh.SSHKey) -> str:
    """"ssh-ed25519 AAAA…", as known_hosts has it after the host name."""
    return " ".join(key.export_public_key().decode().split()[:2])


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid` (sshd's per-connection children), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class SftpServer:
    host = "127.0.0.1"

    def __init__(self, workdir: Path, *, use_sshd: bool | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        if use_sshd is None:
            forced = os.environ.get("STREAMD_SFTP_SERVER")  # "sshd" or "asyncssh"
            use_sshd = forced == "sshd" if forced else os.path.exists(SSHD)
        if not os.path.exists(SSHD) and (use_sshd or os.environ.get("STREAMD_REQUIRE_TOOLS") == "1"):
            pytest.fail(f"{SSHD} is not installed")
        self.kind = "sshd" if use_sshd else "asyncssh"
        self.username = getpass.getuser()
        self.port = free_port()
        keys = workdir / "keys"
        keys.mkdir(exist_ok=True)
        self.host_key = keys / "host_key"
        self.client_key = keys / "client_key"
        self.encrypted_key = keys / "encrypted_key"
        self.stranger_key = keys / "stranger_key"
        host = asyncssh.generate_private_key("ssh-ed25519")
        client = asyncssh.generate_private_key("ssh-ed25519")
        encrypted = asyncssh.generate_private_key("ssh-ed25519")
        _write_key(self.host_key, host)
        _write_key(self.client_key, client)
        # PKCS#8: encrypted OpenSSH-format keys would need the bcrypt package.
        _write_key(self.encrypted_key, encrypted, "openssh", PASSPHRASE)
        _write_key(self.stranger_key, asyncssh.generate_private_key("ssh-ed25519"))
        self.authorized_keys = keys / "authorized_keys"
        self.authorized_keys.write_bytes(client.export_public_key() + encrypted.export_public_key())
        self.authorized_keys.chmod(0o600)
        self._host_public = _public_line(host)
        self.known_hosts = workdir / "known_hosts"
        self.wrong_known_hosts = workdir / "wrong_known_hosts"
        other = _public_line(asyncssh.generate_private_key("ssh-ed25519"))
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {self._host_public}\n")
        self.wrong_known_hosts.write_text(f"[{self.host}]:{self.port} {other}\n")
        # Where files land: the sshd serves the real filesystem, asyncssh's server a
        # virtual root (so `directory`, the remote name, differs from `local_dir`).
        self.root = workdir / "root"
        self.local_dir = self.root / "out"
        self.local_dir.parent.mkdir(parents=True, exist_ok=True)
        self.directory = str(self.local_dir) if use_sshd else "/out"
        self.log = workdir / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._portal_cm: Any = None
        self._portal: BlockingPortal | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._conns: list[asyncssh.SSHServerConnection] = []

    # ------------------------------------------------------------ for the tests

    @property
    def running(self) -> bool:
        if self.kind == "sshd":
            return self._proc is not None and self._proc.poll() is None
        return self._acceptor is not None

    def files(self) -> dict[str, bytes]:
        """What the directory holds, by name (dot-files included)."""
        if not self.local_dir.is_dir():
            return {}
        return {p.name: p.read_bytes() for p in sorted(self.local_dir.iterdir()) if p.is_file()}

    def sink_fields(self, **extra: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "type": "sftp", "host": self.host, "port": self.port, "username": self.username,
            "private_key": f"file:{self.client_key}", "known_hosts": str(self.known_hosts),
            "directory": self.directory,
        }
        fields.update(extra)
        return {k: v for k, v in fields.items() if v is not None}

    def sink_toml(self, name: str, **extra: Any) -> str:
        """A `[sinks.<name>]` table for this server; `extra` adds or overrides keys (None
        drops one, e.g. `private_key=None, password="env:PW"`)."""
        lines = [f"[sinks.{name}]"]
        lines += [f"{k} = {_toml(v)}" for k, v in self.sink_fields(**extra).items()]
        return "\n".join(lines) + "\n"

    def sink_config(self, **extra: Any) -> Any:
        """The `SftpSinkConfig` that `sink_toml` describes (secrets resolved), unvalidated."""
        from streamd.configfile import convert
        from streamd.sinks.sftp import SftpSinkConfig

        problems: list[str] = []
        cfg = convert(self.sink_fields(**extra), SftpSinkConfig, "sinks.test", problems)
        if cfg is None:
            raise AssertionError(problems)
        return cfg

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 15.0) -> None:
        assert not self.running
        if self.kind == "sshd":
            self._start_sshd(timeout)
        else:
            self._start_asyncssh()

    def stop(self) -> None:
        """Down hard: the listener and every open session (clients see the connection drop)."""
        if self.kind == "sshd":
            proc, self._proc = self._proc, None
            if proc is None:
                return
            children = _descendants(proc.pid)
            with suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
            _kill(children)
            proc.wait(10)
        elif self._portal is not None and self._acceptor is not None:
            self._portal.call(self._close_asyncssh, True)

    def drop_sessions(self) -> None:
        """Cut every open session, the listener stays (a server closing idle connections)."""
        if self.kind == "sshd":
            if self._proc is not None:
                _kill(_descendants(self._proc.pid))
        elif self._portal is not None:
            self._portal.call(self._close_asyncssh, False)

    def close(self) -> None:
        self.stop()
        if self._portal_cm is not None:
            self._portal_cm.__exit__(None, None, None)
            self._portal_cm = self._portal = None

    def _sshd_config(self) -> Path:
        path = self.workdir / "sshd_config"
        path.write_text("\n".join([
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"PidFile {self.workdir / 'sshd.pid'}",
            "StrictModes no",
            "UsePAM no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin yes",
            "UseDNS no",
            "LoginGraceTime 30",
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
        ]) + "\n")
        return path

    def _start_sshd(self, timeout: float) -> None:
        with suppress(OSError):
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        config = self._sshd_config()
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                self._proc = None
                raise AssertionError(f"sshd exited at start:\n{self.log.read_text(errors='replace')}")
            if self._banner():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"sshd not answering on port {self.port} after {timeout}s")
            time.sleep(0.02)

    def _banner(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as s:
                return s.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def _start_asyncssh(self) -> None:
        if self._portal is None:
            self._portal_cm = start_blocking_portal()
            self._portal = self._portal_cm.__enter__()
        assert self._portal is not None
        self._portal.call(self._listen)

    async def _listen(self) -> None:
        root = os.fsencode(self.root)

        def accepted(conn: asyncssh.SSHServerConnection) -> None:
            self._conns.append(conn)

        self._acceptor = await asyncssh.listen(
            self.host, self.port, server_host_keys=[str(self.host_key)],
            authorized_client_keys=str(self.authorized_keys), acceptor=accepted,
            sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=root),
            allow_scp=False, reuse_address=True)

    async def _close_asyncssh(self, listener: bool) -> None:
        acceptor = self._acceptor
        if listener:
            self._acceptor = None
        conns, self._conns = self._conns, []
        if acceptor is not None and listener:
            acceptor.close()
            await acceptor.wait_closed()
        for conn in conns:
            conn.abort()
            await conn.wait_closed()


def invoice(i: int, **kw: Any) -> Any:
    """A HORISEN-like invoice (`streamd.model.Invoice`) with two traffic rows; `kw` overrides."""
    from streamd.model import Invoice, PartyRef, TrafficLine

    fields: dict[str, Any] = dict(
        direction="receivable", number=f"HZ-2026-{i:04d}", currency="EUR",
        issued=date(2026, 2, 28), due=date(2026, 3, 30), status="open", provider_status="approved",
        net=Decimal("100.00") + i, tax=Decimal("7.70"), total=Decimal("107.70") + i,
        unpaid=Decimal("107.70") + i, party=PartyRef(key="c-17", number="17", name="Acme & Söhne <AG>"),
        traffic=[TrafficLine(pricing="standard", country="Germany", operator="Telekom", mcc="262",
                             mnc="01", messages=1000 + i, unit_price=Decimal("0.0450"),
                             amount=Decimal("45.00"), currency="EUR"),
                 TrafficLine(pricing="premium", country="Switzerland", operator="Swisscom", mcc="228",
                             mnc="01", messages=i, unit_price=Decimal("0.0610"),
                             amount=Decimal("0.061") * i, currency="EUR")])
    fields.update(kw)
    return Invoice(**fields)


def invoice_records(n: int, start: int = 0, tenant: str = "acme") -> list[dict[str, Any]]:
    """Records for a synthetic source's webhook (`POST /webhooks/<name>`, a JSON array):
    `invoice.created` events whose files are `{tenant}-HZ-2026-<i>.xml`."""
    import msgspec

    return [{"tenant": tenant, "entity": "invoice", "op": "created", "key": f"inv-{i}",
             "version": f"2026-03-01T00:00:00.{i:03d}Z", "data": msgspec.to_builtins(invoice(i))}
            for i in range(start, start + n)]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {type(value).__name__}")


@contextmanager
def running_sftp_server(workdir: Path, *, use_sshd: bool | None = None) -> Iterator[SftpServer]:
    """A started server, stopped (sessions and all) on the way out."""
    server = SftpServer(workdir, use_sshd=use_sshd)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def sftp_server(tmp_path: Path) -> Iterator[SftpServer]:
    with running_sftp_server(tmp_path / "sftp") as server:
        yield server
