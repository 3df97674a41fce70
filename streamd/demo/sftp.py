"""The demo's SFTP server: where the `sftp` sink writes HORISEN invoices as XML documents
for an ERP (docs/sinks/sftp.md).

asyncssh's server on loopback, in the caller's event loop (`await tg.start(server.serve)`),
with keys made for this run: a host key, whose public half goes into the `known_hosts`
file the sink verifies the server with, and a client key, the only one it accepts (no
passwords, no keyboard-interactive). SFTP only, rooted at `root`: the sink's
`directory = "/invoices"` is `root / "invoices"` on this host.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import asyncssh
from anyio.abc import TaskStatus

USERNAME = "streamd"
DIRECTORY = "/invoices"


class DemoSftpServer:
    """Keys and files under `workdir`: `client_key` (0600), `known_hosts`, and `root/`, the
    directory served."""

    host = "127.0.0.1"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.client_key = workdir / "client_key"
        self.known_hosts = workdir / "known_hosts"
        self.root = workdir / "root"
        self.local_dir = self.root / DIRECTORY.lstrip("/")
        self.port = 0
        self._host_key = asyncssh.generate_private_key("ssh-ed25519")
        self._client = asyncssh.generate_private_key("ssh-ed25519")
        self._conns: list[asyncssh.SSHServerConnection] = []

    @property
    def url(self) -> str:
        return f"sftp://{USERNAME}@{self.host}:{self.port}{DIRECTORY}"

    def files(self) -> list[Path]:
        """The XML files delivered (the `.<name>.part` of an upload under way left out)."""
        if not self.local_dir.is_dir():
            return []
        return sorted(p for p in self.local_dir.glob("*.xml") if not p.name.startswith("."))

    def sink_toml(self, name: str) -> str:
        """A `[sinks.<name>]` table writing here (the sink's default `match`: HORISEN's
        invoices)."""
        fields = {"type": "sftp", "host": self.host, "port": self.port, "username": USERNAME,
                  "private_key": f"file:{self.client_key}", "known_hosts": str(self.known_hosts),
                  "directory": DIRECTORY}
        return "\n".join([f"[sinks.{name}]", *(f"{k} = {json.dumps(v)}" for k, v in fields.items())]) + "\n"

    def _write_keys(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(exist_ok=True)
        # Created 0600 before the key is in it; a key left by an earlier run (--dir) is replaced.
        self.client_key.unlink(missing_ok=True)
        fd = os.open(self.client_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self._client.export_private_key("openssh"))
        public = " ".join(self._host_key.export_public_key().decode().split()[:2])
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {public}\n")

    async def serve(self, *, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; `task_status.started(self.url)` once connections are accepted."""
        root = os.fsencode(self.root)
        acceptor = await asyncssh.listen(
            self.host, 0, server_host_keys=[self._host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(
                self._client.export_public_key().decode()),
            acceptor=self._conns.append, sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=root),
            allow_scp=False, agent_forwarding=False, x11_forwarding=False, gss_host=None)
        try:
            self.port = acceptor.get_port()
            await anyio.to_thread.run_sync(self._write_keys)
            task_status.started(self.url)
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                acceptor.close()
                conns, self._conns = self._conns, []
                for conn in conns:
                    conn.abort()
                for conn in conns:
                    await conn.wait_closed()
                await acceptor.wait_closed()
