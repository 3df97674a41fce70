"""sd_notify(3) without libsystemd: datagrams to $NOTIFY_SOCKET.

READY=1 once serving, STATUS=<one line>, WATCHDOG=1 while the pipeline is alive,
STOPPING=1 on shutdown. Outside systemd (no $NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("streamd.notify")


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._sock: socket.socket | None = None
        self._addr: str | bytes | None = None
        addr = env.get("NOTIFY_SOCKET", "")
        if addr:
            if addr.startswith("@"):  # abstract namespace
                self._addr = "\0" + addr[1:]
            else:
                self._addr = addr
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            # systemd's advice: ping at half the timeout.
            self.watchdog_interval = int(usec) / 1_000_000 / 2

    def send(self, *fields: str) -> bool:
        if self._sock is None or self._addr is None:
            return False
        msg = "\n".join(fields).encode()
        try:
            self._sock.sendto(msg, self._addr)
        except OSError as exc:
            # Never let a missing notify socket take the daemon down.
            log.warning("sd_notify failed: %s", exc)
            return False
        return True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
