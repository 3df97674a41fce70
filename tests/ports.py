"""Ports for the servers tests start on loopback, and stop and start again on the same port.

A port from `bind(("127.0.0.1", 0))` comes from the kernel's ephemeral range, the range
every outgoing connection on the machine takes its own port from. A server killed for an
outage drill and started again on such a port may find it taken meanwhile by some
process's connection: on the busy machine, a NATS node did (`bind: address already in
use` on its monitor port), and the test failed for a reason that was not its own.
`free_port` picks outside that range, where only a listener asking for the port by its
number can take it.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_FLOOR = 10_000  # below it: the ports well-known services are configured on
_ROOM = 1_000  # fewer free numbers than this beside the ephemeral range: use the range


def _ephemeral() -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return lo, hi


def _outside() -> tuple[int, int] | None:
    lo, hi = _ephemeral()
    if lo - _FLOOR >= _ROOM:
        return _FLOOR, lo - 1
    if 65535 - hi >= _ROOM:
        return hi + 1, 65535
    return None


def _bound(port: int) -> int | None:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return None
        return int(s.getsockname()[1])


def free_port() -> int:
    """A port free on 127.0.0.1 now, outside the ephemeral range when the machine leaves
    room beside it (else any free port, as before)."""
    span = _outside()
    if span is not None:
        pick = random.SystemRandom()
        for _ in range(200):
            port = _bound(pick.randint(*span))
            if port is not None:
                return port
    port = _bound(0)
    assert port is not None
    return port
