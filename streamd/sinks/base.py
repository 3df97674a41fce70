"""What a sink is: something that delivers a batch of feed events, or says why it could not.

A sink knows nothing of offsets, retries or dead letters: its dispatcher
(`sinks.dispatcher`) reads from the sink's offset, batches, calls `deliver`, and
moves the offset only after `deliver` returned. `deliver` raises `Retryable`
(try the same batch later) or `Permanent` (this batch will never go through);
anything else it raises is treated as retryable and logged with its traceback.

Two optional members a sink may have, which the dispatcher looks for:
- `stable_batches = True`: a redelivered batch must hold exactly the events it held the
  first time (its receiver dedupes by a key derived from them, as the http sink's
  Idempotency-Key is); the dispatcher then records where a partial batch ends before
  sending it.
- `attach_metrics(metrics)`: called once with the daemon's `Metrics`, for a sink that
  counts its own work (the http sink's requests by status).
- `attach_state(load)` and `take_state()`: a sink that remembers what it delivered (the
  sftp sink: each invoice's documents) is handed `load(keys)`, which reads what is
  committed (key -> (seq, value)), and after each delivery gives up what it changed
  (`SinkState` rows), which the dispatcher commits together with the offset that
  delivery moved. A crash then loses both or neither: the batch delivered again finds
  the sink remembering what it did before that batch, and decides the same. A delivery
  that fails must change nothing it would give up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..config import SinkConfig, no_checks
from ..store import FeedEvent

#: What `attach_state` is handed: the committed state of these keys, key -> (seq, value).
StateLoader = Callable[[Sequence[str]], Awaitable[dict[str, tuple[int, bytes]]]]


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
