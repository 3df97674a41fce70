"""uvicorn inside streamd's own event loop: the daemon's listener, `streamd auth`'s
redirect listener, and the simulators all serve their Starlette apps this way."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import uvicorn


class Server(uvicorn.Server):
    """uvicorn without its signal handlers: the process's signals belong to whoever runs
    it (the daemon owns SIGTERM and shuts down in phases)."""

    def capture_signals(self) -> Any:
        return contextlib.nullcontext()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket for `Server.serve([sock])`; raises OSError if the address is
    taken. It listens at once, so a client told the address (a browser sent back to
    `streamd auth`, say) is queued, not refused, while the server starts.

    The socket gets its real protocol: with proto 0 asyncio does not set TCP_NODELAY on
    accepted connections, and small answers wait ~40 ms on delayed ACKs."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock
