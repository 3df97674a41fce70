"""`type = "stdout"`: one JSON line per event on standard output, flushed per batch."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import BinaryIO

import anyio

from ..config import SinkConfig
from ..errors import Retryable
from ..store import FeedEvent
from .base import Sink, SinkSpec


class StdoutSinkConfig(SinkConfig, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class StdoutSink(Sink):
    def __init__(self, name: str, stream: BinaryIO | None = None) -> None:
        self.name = name
        self._stream = stream if stream is not None else sys.stdout.buffer

    async def recover(self) -> int:
        return 0

    def _write(self, data: bytes) -> None:
        self._stream.write(data)
        self._stream.flush()

    async def deliver(self, events: Sequence[FeedEvent]) -> None:
        try:
            # A pipe whose reader is slow blocks; keep that off the event loop.
            await anyio.to_thread.run_sync(self._write, b"".join(e.line for e in events),
                                           abandon_on_cancel=True)
        except (BrokenPipeError, ValueError) as exc:
            raise Retryable(f"standard output is closed ({type(exc).__name__})") from None

    async def aclose(self) -> None:
        return None


def _build(name: str, cfg: StdoutSinkConfig) -> StdoutSink:
    return StdoutSink(name)


SPEC = SinkSpec(config=StdoutSinkConfig, build=_build)
