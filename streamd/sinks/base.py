"""What a sink is: something that delivers a batch of feed events, or says why it could not.

A sink knows nothing of offsets, retries or dead letters: its dispatcher
(`sinks.dispatcher`) reads from the sink's offset, batches, calls `deliver`, and
moves the offset only after `deliver` returned. `deliver` raises `Retryable`
(try the same batch later) or `Permanent` (this batch will never go through);
anything else it raises is treated as retryable and logged with its traceback.

Every sink subclasses `Sink`. Beyond `recover`, `deliver` and `aclose`, a sink may have
capabilities the dispatcher and the daemon use; `Sink` declares each one with the
default that means "not this sink" (as anyio's stream classes declare theirs), so they
are called without asking, and a sink overrides only what it has:

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
- `holds_offset = True`, with `held_offset()` and `reset_offset()`: a sink that writes its
  offset atomically with what it delivers (the postgres sink: in the same transaction
  as the rows) is the authority on where it stands. The dispatcher resumes after
  `held_offset()` rather than after the feed's copy, so a crash between the two commits
  redelivers nothing; and moves it with `reset_offset` when `streamd sink reset` asked
  for it.
- `attach_state(load)` and `take_state()`: a sink that remembers what it delivered (the
  sftp sink: each invoice's documents) is handed `load(keys)`, which reads what is
  committed (key -> (seq, value)), and after each delivery gives up what it changed
  (`SinkState` rows), which the dispatcher commits together with the offset that
  delivery moved. A crash then loses both or neither: the batch delivered again finds
  the sink remembering what it did before that batch, and decides the same. A delivery
  that fails must change nothing it would give up.
"""

from __future__ import annotations

import ipaddress
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import SinkConfig, no_checks
from ..metrics import Metrics
from ..store import FeedEvent, SinkState

#: What `attach_state` is handed: the committed state of these keys, key -> (seq, value).
StateLoader = Callable[[Sequence[str]], Awaitable[dict[str, tuple[int, bytes]]]]


class Sink(ABC):
    name: str

    #: Its receiver dedupes a batch by a key derived from its events: a batch redelivered
    #: after a crash must be the same batch.
    stable_batches: bool = False
    #: It keeps its own offset, written with what it delivers (`held_offset`, `reset_offset`).
    holds_offset: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        inherited = cls.held_offset is Sink.held_offset or cls.reset_offset is Sink.reset_offset
        if cls.holds_offset and inherited:
            raise TypeError(f"{cls.__name__} says it holds its offset: it must define held_offset() "
                            "and reset_offset()")

    @abstractmethod
    async def recover(self) -> int:
        """Called once before the first delivery. Return the highest seq this sink
        knows it has durably delivered beyond its committed offset (0 if it cannot tell);
        delivery resumes after max(offset, recover())."""

    @abstractmethod
    async def deliver(self, events: Sequence[FeedEvent]) -> None: ...

    @abstractmethod
    async def aclose(self) -> None: ...

    def attach_metrics(self, metrics: Metrics) -> None:
        """Called once with the daemon's metrics, before the first delivery. By default a
        sink counts nothing beyond what the dispatcher counts for it."""
        return

    def attach_shard(self, shard: str) -> None:
        """Called once with `[daemon] shard`, before the first delivery. By default a sink
        does not name this host to its peer."""
        return

    def attach_state(self, load: StateLoader) -> None:
        """Called once, before the first delivery, with what reads the state this sink
        committed. By default a sink remembers nothing of what it delivered."""
        return

    def take_state(self) -> list[SinkState]:
        """After each delivery: what it changed of its state, to commit with the offset that
        delivery moved (and forget here). By default: nothing."""
        return []

    def batch_size(self) -> int | None:
        """The most events the next batch should hold, asked before each read (the
        dispatcher keeps it between 1 and `batch_max`). None, the default: `batch_max`."""
        return None

    async def held_offset(self) -> tuple[int, str] | None:
        """With `holds_offset`: (seq, id) of the last event it holds, written with that
        event; None when it holds none yet. The dispatcher checks the id against the feed's
        event at that seq, so an offset another feed wrote is refused, not trusted."""
        raise NotImplementedError(f"{type(self).__name__} does not hold its offset")

    async def reset_offset(self, seq: int, event_id: str) -> None:
        """With `holds_offset`: set its offset to `seq` (`event_id` the feed's event there,
        "" if none), backwards too: `streamd sink reset` was run."""
        raise NotImplementedError(f"{type(self).__name__} does not hold its offset")


@dataclass(frozen=True)
class SinkSpec:
    config: type[SinkConfig]
    build: Callable[[str, Any], Sink]
    validate: Callable[[Any], list[str]] = no_checks
    # What is allowed but risky ("key: …"): printed by `streamd check`; the sink logs it at start.
    warnings: Callable[[Any], list[str]] = no_checks
    # config fields holding paths, resolved against the config file's directory
    path_fields: tuple[str, ...] = ()


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1: a peer on this machine, where what a sink sends in the
    clear crosses no network (the http, nats and postgres sinks' checks)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
