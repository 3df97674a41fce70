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
- `batch_size()`: the most events the next batch should hold (at most `batch_max`),
  asked before each read: for a sink that sizes its batches by how long they take (the
  postgres sink).
- `attach_shard(shard)`: called once by the daemon with `[daemon] shard`, for a sink that
  names this host to its peer (the nats sink's subjects and headers).

And one optional protocol, `HoldsOffset`: a sink that writes its offset atomically with
what it delivers (the postgres sink: in the same transaction as the rows) is the
authority on where it stands. The dispatcher resumes after `held_offset()` rather than
after the feed's copy, so a crash between the two commits redelivers nothing; and moves
it with `reset_offset` when `streamd sink reset` asked for it.
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
from typing import Any, Protocol, runtime_checkable

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


@runtime_checkable
class HoldsOffset(Protocol):
    async def held_offset(self) -> tuple[int, str] | None:
        """(seq, id) of the last event it holds, written with that event; None when it holds
        none yet. The dispatcher checks the id against the feed's event at that seq, so an
        offset another feed wrote is refused, not trusted."""
        ...

    async def reset_offset(self, seq: int, event_id: str) -> None:
        """Set its offset to `seq` (`event_id` the feed's event there, "" if none), backwards
        too: `streamd sink reset` was run."""
        ...


@dataclass(frozen=True)
class SinkSpec:
    config: type[SinkConfig]
    build: Callable[[str, Any], Sink]
    validate: Callable[[Any], list[str]] = no_checks
    # What is allowed but risky ("key: …"): printed by `streamd check`; the sink logs it at start.
    warnings: Callable[[Any], list[str]] = no_checks
    # config fields holding paths, resolved against the config file's directory
    path_fields: tuple[str, ...] = ()
