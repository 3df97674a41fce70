"""What a sink is: something that delivers a batch of feed events, or says why it could not.

A sink knows nothing of offsets, retries or dead letters: its dispatcher
(`sinks.dispatcher`) reads from the sink's offset, batches, calls `deliver`, and
moves the offset only after `deliver` returned. `deliver` raises `Retryable`
(try the same batch later) or `Permanent` (this batch will never go through);
anything else it raises is treated as retryable and logged with its traceback.

Optional members a sink may have, which the dispatcher (and the daemon) look for:
- `stable_batches = True`: a redelivered batch must hold exactly the events it held the
  first time (its receiver dedupes by a key derived from them, as the http sink's
  Idempotency-Key is); the dispatcher then records where a partial batch ends before
  sending it.
- `attach_metrics(metrics)`: called once with the daemon's `Metrics`, for a sink that
  counts its own work (the http sink's requests by status).
- `attach_shard(shard)`: called once by the daemon with `[daemon] shard`, for a sink that
  names this host to its peer (the nats sink's subjects and headers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..config import SinkConfig, no_checks
from ..store import FeedEvent


class Sink(Protocol):
    name: str

    async def recover(self) -> int:
        """Called once before the first delivery. Return the highest seq this sink
        knows it has durably delivered beyond its committed offset (0 if it cannot tell);
        delivery resumes after max(offset, recover())."""
        ...

    async def deliver(self, events: Sequence[FeedEvent]) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class SinkSpec:
    config: type[SinkConfig]
    build: Callable[[str, Any], Sink]
    validate: Callable[[Any], list[str]] = no_checks
    # What is allowed but risky ("key: …"): printed by `streamd check`; the sink logs it at start.
    warnings: Callable[[Any], list[str]] = no_checks
    # config fields holding paths, resolved against the config file's directory
    path_fields: tuple[str, ...] = ()
