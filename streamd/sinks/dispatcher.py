"""One dispatcher per sink: offset → read → filter → batch → deliver → commit offset.

At-least-once (invariant 3): the offset is committed through the writer only
after `deliver` returned, so a crash re-delivers at most the batch in flight, and
a sink that can check what it already wrote (`recover`) re-delivers nothing.

Failures:
- `Retryable` (and anything unexpected): the same batch again after a capped,
  jittered backoff, forever; visible as `retrying` in /readyz and in metrics.
- `Permanent`: the batch is split in halves to find the offending events; one
  event that still fails after `max_tries` goes to dead letters with its feed line,
  and the sink moves on.

Backlog stays on disk: the dispatcher holds at most two batches in memory, the one
being delivered and the next, read from the feed meanwhile (so the sink's wait and the
read overlap; the next is delivered only after the first returned, as before).

Batches: up to `batch_max` events; with `batch_linger`, a partial batch waits that long
to fill first. A sink with `stable_batches = True` (its receiver dedupes
a batch by a key derived from its events) gets the same batches again after a crash: a
partial batch's end is committed before it is delivered, and the first read after a
restart stops there, so a redelivered batch always has the events it had the first time.

A sink that keeps its own offset, written atomically with what it delivers (`held_offset`,
the postgres sink), is the authority on where it stands: the dispatcher resumes after
the offset the sink holds, whatever the feed's copy says, so a crash between the sink's
commit and the feed's offset commit redelivers nothing. `streamd sink reset` leaves a
marker that makes the dispatcher move the sink's own offset too, at the next start.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

import anyio
import msgspec
from anyio.abc import TaskStatus

from ..config import SinkConfig
from ..errors import DeliveryError, Permanent, Retryable
from ..health import Component, State
from ..metrics import Metrics
from ..model import CloudEvent
from ..retry import Retries, retrying
from ..store import Batch, DeadLetter, FeedEvent, FeedReader, Pending, Writer
from ..store.reader import DeadLetterRow
from .base import Sink

log = logging.getLogger("streamd.sink")

SCAN_WINDOW = 20_000  # seqs examined per read, so a narrow filter never scans the world at once
IDLE_WAIT = 1.0
OFFSET_IDLE_COMMIT = 2.0  # commit a scan-only offset (nothing matched) at most this often
_DLQ_CHECK = 2.0


class DispatcherState(enum.Enum):
    """Where a dispatcher stands in the daemon's life: RUNNING until shutdown asks it to
    drain; DRAINING until it has delivered up to the head; GAVE_UP if its sink was failing
    then (it is cancelled, and resumes from its committed offset at the next start)."""

    RUNNING = "running"
    DRAINING = "draining"
    GAVE_UP = "gave up"


class Dispatcher:
    def __init__(self, name: str, cfg: SinkConfig, sink: Sink, writer: Writer, reader: FeedReader,
                 metrics: Metrics, component: Component) -> None:
        self.name = name
        self.cfg = cfg
        self.sink = sink
        self.writer = writer
        self.reader = reader
        self.metrics = metrics
        self.component = component
        self.offset = 0
        self._state = DispatcherState.RUNNING
        self._last_offset_commit = 0.0
        self._committed_offset = 0
        # At most one offset commit in flight: the next batch is read and delivered while
        # the writer commits the previous offset (it moved only after that delivery).
        self._offset_inflight: tuple[Pending, int] | None = None
        self._last_dlq_check = 0.0
        self.done = anyio.Event()
        self._scope = anyio.CancelScope()
        # Commit time (unix ms) of the first event past the offset, which lag_seconds is
        # measured from; refreshed when the offset moves, so publishing lag costs nothing.
        self._pending_since_ms: int | None = None
        self._pending_for = -1
        self._linger = cfg.batch_linger.seconds
        self._stable = sink.stable_batches
        self._replay_upto = 0  # stable batches: where the batch in flight at the last stop ended
        # A sink that counts its own work (the http sink's requests) is handed the metrics.
        sink.attach_metrics(metrics)
        # A sink that remembers what it delivered: its state commits with its offset.
        sink.attach_state(lambda keys: reader.sink_state(name, keys))

    @property
    def state(self) -> DispatcherState:
        return self._state

    def drain(self) -> None:
        """Deliver up to the writer's head (intake is closed by now), then return from `run`.
        A sink that is failing is not waited for: its offset holds, it resumes next start.
        Asked again (a second signal), it does nothing."""
        if self._state is not DispatcherState.RUNNING:
            return
        self._state = DispatcherState.DRAINING
        self.writer.wake()
        if self.component.state is State.RETRYING:
            self._give_up_draining()

    def _give_up_draining(self) -> None:
        self._state = DispatcherState.GAVE_UP
        log.warning("sink %s: not drained (delivery failing: %s); resumes after seq %d next start",
                    self.name, self.component.reason, self._committed_offset)
        self._scope.cancel()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        offset = await self.reader.offset(self.name)
        stored = offset
        if stored is None:
            stored = 0 if self.cfg.start == "beginning" else await self.reader.head()
        self._committed_offset = self.offset = stored
        self.metrics.sink_offset.labels(self.name).set(stored)
        meta = await self.reader.meta()
        if self._stable:
            upto = meta.get(self._batch_key, "")
            self._replay_upto = int(upto) if upto.isdigit() else 0
        reset = bool(meta.get(self._reset_key))
        task_status.started()
        try:
            with self._scope:
                # The sink may be unreachable at start (a missing mount, a server down): that
                # is a retry like any failed delivery, not a reason to hold up the daemon.
                self.offset = await retrying(lambda: self._resume_after(stored, offset is not None, reset),
                                             policy=self.cfg.backoff, retry_on=self._failed,
                                             metrics=self.metrics, component=self.component,
                                             what="checking what it holds")
                if reset:  # done (the sink's own offset moved too): not again at the next start
                    await self._submit(Batch(meta={self._reset_key: ""}))
                self.metrics.sink_offset.labels(self.name).set(self.offset)
                self.component.ok()
                await self._loop()
        finally:
            with anyio.CancelScope(shield=True):
                await self.sink.aclose()
            self.component.set(State.STOPPED)

    async def _resume_after(self, stored: int, had_offset: bool, reset: bool) -> int:
        """The seq delivery resumes after. A sink without an offset of its own: after
        max(offset, recover()). One with (`held_offset`): after the offset it holds, checked
        against the feed; after the feed's offset when it holds none, or was just reset."""
        recovered = await self.sink.recover()
        sink = self.sink
        if not sink.holds_offset:
            if recovered > stored:
                log.info("sink %s: already holds events up to seq %d (offset was %d); resuming "
                         "after it", self.name, recovered, stored)
            return max(stored, recovered)
        if reset:
            await sink.reset_offset(stored, await self._id_at(stored))
            log.info("sink %s: its own offset reset to seq %d (streamd sink reset)", self.name, stored)
        at = await sink.held_offset()
        if at is None:
            if had_offset and stored > 0:
                log.warning("sink %s: holds no offset of its own (new, or its tables were dropped) "
                            "while the feed's offset for it is %d: loading from seq %d on. To load "
                            "the whole feed, stop streamd and run `streamd sink reset %s --to-seq 0`",
                            self.name, stored, stored + 1, self.name)
            return stored
        seq, event_id = at
        head = await self.reader.head()
        fix = (f"if it was loaded from another feed, give this sink its own schema or name; to load "
               f"from this feed's seq N on, stop streamd and run `streamd sink reset {self.name} "
               "--to-seq N`")
        if seq > head:
            raise Retryable(f"its own offset is seq {seq}, past this feed's head ({head}); {fix}")
        known = await self._id_at(seq) if event_id else ""
        if known and known != event_id:
            raise Retryable(f"its own offset is seq {seq} (event {event_id}), but this feed's event at "
                            f"seq {seq} is {known}; {fix}")
        if seq != stored:
            log.info("sink %s: resuming after seq %d, the offset it holds itself (the feed's copy "
                     "said %d)", self.name, seq, stored)
        return seq

    async def _id_at(self, seq: int) -> str:
        """The id of the event at `seq`, "" when there is none (0, or pruned)."""
        events = await self.reader.read(seq - 1, seq, 1) if seq > 0 else []
        return events[0].id if events else ""

    def _batch_max(self) -> int:
        """The most events to read for the next batch: `batch_max`, or less when the sink
        sizes its batches itself (`batch_size`, the postgres sink's commit-time target)."""
        size = self.sink.batch_size()
        if size is None:
            return self.cfg.batch_max
        return max(1, min(self.cfg.batch_max, size))

    async def _loop(self) -> None:
        ahead: _Prefetch | None = None
        while True:
            batch_max = self._batch_max()
            self.component.beat(IDLE_WAIT * 10)
            await self._retry_dead_letters()
            if ahead is not None:
                read, ahead = ahead.result(), None
            else:
                head = self.writer.head
                if self.offset >= head:
                    await self._commit_offset(force=True, wait=True)
                    if self.offset < self.writer.head:
                        continue  # committed while we waited (shutdown's last commit, say)
                    if self._state is not DispatcherState.RUNNING:
                        return
                    with anyio.move_on_after(IDLE_WAIT):
                        await self.writer.wait_head(self.offset)
                    continue
                if self._linger and self._state is DispatcherState.RUNNING and head - self.offset < batch_max:
                    head = await self._linger_for(head, batch_max)
                read = await self._read(self.offset, head, batch_max)
            events, scanned, replay, batch_max = read
            if events:
                if self._stable and not replay and len(events) < batch_max:
                    # A full batch is the same on every read from this offset; a partial one
                    # is not (the head moves): remember where it ends before sending it.
                    await self._submit(Batch(meta={self._batch_key: str(scanned)}))
                ahead = self._prefetch(scanned)
                if ahead is None:
                    await self._deliver(events)
                else:
                    # The next batch is read from the feed while this one is delivered: the
                    # sink's wait (a commit, a round trip) and the read overlap. Its events
                    # are delivered only after this delivery returned, as they always were.
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(ahead.run)
                        await self._deliver(events)
            self.offset = scanned
            self.metrics.sink_offset.labels(self.name).set(scanned)
            await self._commit_offset(force=bool(events))

    async def _read(self, offset: int, head: int, batch_max: int) -> _Read:
        """The next batch past `offset`: its events, where the scan ended, whether it
        replays the batch in flight at the last stop (stable batches), and the size asked."""
        upto = min(head, offset + SCAN_WINDOW)
        replay = self._replay_upto > offset
        if replay:
            upto = min(upto, self._replay_upto)
        events = await self.reader.read(offset, upto, batch_max, self.cfg.match)
        scanned = events[-1].seq if len(events) == batch_max else upto
        return events, scanned, replay, batch_max

    def _prefetch(self, offset: int) -> _Prefetch | None:
        """A read of the batch after `offset`, to run while the current one is delivered;
        None when the loop should wait for events instead (none committed past it yet, or
        fewer than a batch while `batch_linger` asks to wait for a full one). One batch
        ahead at most: two batches in memory, never more."""
        head = self.writer.head
        batch_max = self._batch_max()
        lingering = self._linger and self._state is DispatcherState.RUNNING
        if offset >= head or (lingering and head - offset < batch_max):
            return None
        return _Prefetch(lambda: self._read(offset, head, batch_max))

    @property
    def _batch_key(self) -> str:
        return f"sink.{self.name}.batch_upto"

    @property
    def _reset_key(self) -> str:
        return f"sink.{self.name}.reset"  # written by `streamd sink reset`

    async def _linger_for(self, head: int, batch_max: int) -> int:
        """Wait up to `batch_linger` for a full batch past the offset; return the head."""
        self.component.beat(self._linger + IDLE_WAIT * 10)
        with anyio.move_on_after(self._linger):
            while head - self.offset < batch_max and self._state is DispatcherState.RUNNING:
                moved = await self.writer.wait_head(head)
                if moved == head:  # woken without progress: draining, or the writer stopped
                    break
                head = moved
        return max(head, self.writer.head)

    async def _settle_offset(self) -> None:
        if self._offset_inflight is not None:
            pending, value = self._offset_inflight
            with self._on_store():
                await pending.committed()
            self._committed_offset = value
            self._offset_inflight = None

    async def _commit_offset(self, *, force: bool, wait: bool = False) -> None:
        """Queue a commit of the offset (after a delivery), keeping at most one in flight;
        `wait` returns only once it is on disk (before idling or stopping)."""
        if self._offset_inflight is not None and (wait or self._offset_inflight[0].done):
            await self._settle_offset()
        states = self.sink.take_state()
        if self._offset_inflight is not None and not states:
            # The last commit is still on its way: the next one (after the next delivery, or
            # the idle loop's) takes this offset with it. Waiting for it here held every
            # batch behind the writer's commit of the one before (a third of the file
            # sink's time while the feed took a burst).
            return
        queued = self._offset_inflight[1] if self._offset_inflight else self._committed_offset
        now = time.monotonic()
        if states or (self.offset != queued
                      and (force or now - self._last_offset_commit >= OFFSET_IDLE_COMMIT)):
            await self._settle_offset()
            with self._on_store():
                pending = await self.writer.enqueue(Batch(
                    offsets={self.name: self.offset},
                    sink_states={self.name: states} if states else {}))
            self._offset_inflight = (pending, self.offset)
            self._last_offset_commit = now
        if wait:
            await self._settle_offset()

    @contextlib.contextmanager
    def _on_store(self) -> Iterator[None]:
        """Around a wait on the writer (a queue slot, a commit): no promise to beat meanwhile.
        A full disk holds commits for as long as it lasts, and the writer's own beat says
        whether the store is stuck: a sink waiting behind it is not wedged, and must not
        get the daemon restarted by the watchdog."""
        self.component.beat(math.inf)
        try:
            yield
        finally:
            self.component.beat(IDLE_WAIT * 10)

    async def _submit(self, batch: Batch) -> None:
        with self._on_store():
            await self.writer.submit(batch)

    async def publish_lag(self, now: float) -> None:
        """Set the lag gauges. The daemon calls this every second, from outside the sink's
        loop, so they keep moving wherever the sink is stuck (a delivery, its start-up check).
        Reads the store only when the offset moved."""
        lag = max(self.writer.head - self.offset, 0)
        if lag and self._pending_for != self.offset:
            since = await self.reader.received_at(self.offset + 1)
            if since is not None:
                self._pending_for = self.offset
                self._pending_since_ms = since
        self.metrics.sink_lag_events.labels(self.name).set(lag)
        seconds = 0.0
        if lag and self._pending_for == self.offset and self._pending_since_ms is not None:
            seconds = max(now - self._pending_since_ms / 1000.0, 0.0)
        self.metrics.sink_lag_seconds.labels(self.name).set(seconds)

    # ---------------------------------------------------------------- delivery

    async def _attempt(self, events: Sequence[FeedEvent]) -> None:
        # A delivery that never returns is a wedged sink: the watchdog must notice.
        self.component.beat(self.cfg.stall_after.seconds)
        try:
            await self.sink.deliver(events)
        except DeliveryError:
            raise
        except Exception as exc:
            log.exception("sink %s: unexpected error while delivering", self.name)
            raise Retryable(f"{type(exc).__name__}: {exc}") from exc

    def _failed(self, exc: BaseException) -> bool:
        kind = "permanent" if isinstance(exc, Permanent) else "retryable"
        self.metrics.sink_failures.labels(self.name, kind).inc()
        if self._state is DispatcherState.DRAINING:
            self._give_up_draining()
        return isinstance(exc, Retryable)

    async def _deliver_retrying(self, events: Sequence[FeedEvent]) -> None:
        await retrying(lambda: self._attempt(events), policy=self.cfg.backoff,
                       retry_on=self._failed, metrics=self.metrics, component=self.component,
                       what=f"delivering {len(events)} events")
        self.metrics.sink_delivered.labels(self.name).inc(len(events))
        if self.component.state is not State.OK:
            log.info("sink %s: delivering again", self.name)
            self.component.ok()

    async def _deliver(self, events: Sequence[FeedEvent]) -> None:
        try:
            await self._deliver_retrying(events)
            return
        except Permanent as exc:
            if len(events) > 1:
                log.warning("sink %s: batch of %d refused (%s); splitting it to find the cause",
                            self.name, len(events), exc)
                mid = len(events) // 2
                await self._deliver(events[:mid])
                await self._deliver(events[mid:])
                return
            first_error = exc
        await self._poison(events[0], first_error)

    async def _poison(self, event: FeedEvent, error: Permanent, attempts: int = 1) -> bool:
        """Retry one refused event up to max_tries; dead-letter it if it never goes through.
        Returns whether it was delivered."""
        # The sink is not retrying (it goes on once the event is dead-lettered): one event is.
        retries = Retries(self.cfg.backoff, metrics=self.metrics, component=self.component, mark=False,
                          logger=log, fields={"seq": event.seq},
                          message="%(kind)s %(name)s: event seq %(seq)d refused (%(reason)s); "
                                  "retry %(attempt)d in %(wait).1fs")
        last = error
        while attempts < self.cfg.max_tries:
            await retries.pause(str(last))
            attempts += 1
            try:
                await self._deliver_retrying([event])
                return True
            except Permanent as exc:
                last = exc
        log.error("sink %s: event seq %d (%s) refused %d times, moved to dead letters: %s",
                  self.name, event.seq, event.id, attempts, last)
        await self._submit(Batch(dead_letters=[DeadLetter(
            origin="sink", name=self.name, reason=str(last), raw=event.line,
            context={"id": event.id, "type": event.type}, event_seq=event.seq,
            attempts=attempts)]))
        return False

    async def _retry_dead_letters(self) -> None:
        """Re-deliver this sink's dead letters that `streamd dlq retry` marked."""
        now = time.monotonic()
        if now - self._last_dlq_check < _DLQ_CHECK:
            return
        self._last_dlq_check = now
        rows = await self.reader.dead_letters(origin="sink", name=self.name, status="retry")
        for row in rows:
            await self._retry_one(row)

    async def _retry_one(self, row: DeadLetterRow) -> None:
        try:
            event = _from_line(row)
        except (msgspec.ValidationError, msgspec.DecodeError, TypeError) as exc:
            log.error("sink %s: dead letter %d holds no readable event (%s); dropping it",
                      self.name, row.id, exc)
            await self._submit(Batch(resolved_dead_letters=[row.id]))
            return
        try:
            await self._deliver_retrying([event])
        except Permanent as exc:
            # Tried again, still refused: replace the row so the attempts count stays honest.
            await self._submit(Batch(resolved_dead_letters=[row.id], dead_letters=[
                DeadLetter(origin="sink", name=self.name, reason=str(exc), raw=row.raw,
                           context=row.context, event_seq=row.event_seq,
                           attempts=row.attempts + 1)]))
            return
        log.info("sink %s: dead letter %d (seq %s) delivered on retry", self.name, row.id,
                 row.event_seq)
        states = self.sink.take_state()
        await self._submit(Batch(resolved_dead_letters=[row.id],
                                 sink_states={self.name: states} if states else {}))


_Read = tuple[list[FeedEvent], int, bool, int]  # events, the seq scanned to, a replay, batch_max


class _Prefetch:
    """One read run beside a delivery. Its failure (the store unreadable) is kept and
    raised when its result is asked for, after the delivery: a failing read must not
    cancel a delivery half done."""

    def __init__(self, read: Callable[[], Awaitable[_Read]]) -> None:
        self._read = read
        self._result: _Read | None = None
        self._error: BaseException | None = None

    async def run(self) -> None:
        try:
            self._result = await self._read()
        except Exception as exc:
            self._error = exc

    def result(self) -> _Read:
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


def _from_line(row: DeadLetterRow) -> FeedEvent:
    if row.raw is None:
        raise TypeError("no feed line")
    ce = msgspec.json.decode(row.raw, type=CloudEvent)
    entity, _, op = ce.type.partition(".")
    key = ce.subject.partition("/")[2]
    source = ce.source.rsplit("/", 1)[-1]
    return FeedEvent(ce.seq, ce.id, source, ce.provider, ce.tenant or "", entity, op, key, ce.time, 0,
                     bytes(ce.data), row.raw)
