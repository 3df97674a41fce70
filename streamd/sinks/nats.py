"""`type = "nats"`: the feed published into a NATS JetStream stream, exactly once
(docs/sinks/nats.md, docs/scale-out.md).

Each event is one message: the CloudEvent JSON as the body (the feed line without its
newline, as the http sink sends it), `Nats-Msg-Id` = the event id, and headers
`ce-type`, `ce-source`, `streamd-seq` (its feed seq) and `streamd-shard`. The subject
comes from the `subject` template (`subjects`), and always holds the shard as a token.

Exactly once, whatever the stream's `duplicate_window`: the stream itself is the offset
of record. Every batch is one JetStream *atomic batch* (all of it stored, or none)
whose first message says `Nats-Expected-Last-Subject-Sequence` = the stream seq of the
last message this shard stored, over this shard's subject filter. So the stream takes
a batch only right after the one before it: a batch sent twice (a retry after a lost
ack, a straggler of a killed process) is stored once, and the other copy is refused
(wrong last sequence), whatever time passed between them. What the shard stored last
is read from the stream (its last message on the filter): at start (`recover`: its
`streamd-seq` is where delivery resumes), and whenever an answer was lost or the
stream refused a batch's expectation; the `Nats-Batch-Id` of that message says which
of our attempts it was, and those events are not sent again. The SQLite offset moves
only past acked (or found) events. Within a batch, messages are pipelined; batches go
one at a time, in feed order, so each subject gets the feed's order.

The stream's dedupe (`Nats-Msg-Id`, within its window) is left for what only it can
see: the same event id from two shards, while a tenant moves (docs/scale-out.md). A
batch holding such an id is refused whole (atomic); it is split until the duplicates
are alone, and those are skipped and counted.

Connection, TLS, authentication and stream problems are retryable, with the reason
in /readyz and the log: a NATS cluster down, or a stream missing, holds the offset and
loses nothing. An event too large for the server or the stream is refused for good
(dead letters).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import ssl
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from ..errors import ConfigError, JetStreamRefused, Permanent, Retryable, SecretError
from ..metrics import Metrics
from ..secrets import Secret
from ..store import FeedEvent
from .base import Sink, SinkSpec
from .nats_config import (
    CONTENT_TYPE,
    NatsSinkConfig,
    config_warnings,
    default_shard,
    stream_subjects,
    tls_context,
    validate_config,
    wants_tls,
)
from .nats_messages import Message, Stored, header_lines
from .subjects import MAX_SUBJECT, Template, covers

if TYPE_CHECKING:
    from .nats_io import Connection, ConnectOptions

log = logging.getLogger("streamd.sink")

# ---------------------------------------------------------------- the sink

class NatsSink(Sink):
    """One shard's publisher into one stream. What it knows of the stream: `_tail`, the
    stream seq and feed seq of the last message this shard stored (None: ask the stream);
    `_attempts`, the batches sent since then whose answer has not come (by batch id);
    `_unsure`, whether one of them may have been stored unseen."""

    def __init__(self, name: str, cfg: NatsSinkConfig) -> None:
        self.name = name
        self.cfg = cfg
        self.template = Template.parse(cfg.subject)
        for warning in config_warnings(cfg):
            log.warning("sink %s: %s", name, warning)
        self._conn: Connection | None = None
        self._tail: tuple[int, int] | None = None
        self._attempts: dict[str, list[Message]] = {}
        self._unsure = True
        # Feed seq ranges found in the stream (a batch whose ack was lost): the events
        # delivered in them are not sent again.
        self._held: list[tuple[int, int]] = []
        self._high = 0  # the highest feed seq this shard has in the stream
        self._cap = cfg.batch_max  # messages per atomic batch (lowered if the server says so)
        self._stream_ok = False
        self._metrics: Metrics | None = None
        self._problem = ""  # the last reason publishing failed, logged once
        self._routes: dict[tuple[str, ...], tuple[str, bytes]] = {}
        self.attach_shard(default_shard())

    def __repr__(self) -> str:
        return f"NatsSink({self.name!r}, stream {self.cfg.stream}, shard {self.shard})"

    def attach_shard(self, shard: str) -> None:
        """The daemon's `[daemon] shard`: in every subject and header, and the filter the
        sink asks the stream about."""
        self.shard = shard
        self._routes = {}
        self.filter = self.template.filter(shard)

    def attach_metrics(self, metrics: Metrics) -> None:
        self._metrics = metrics
        for outcome in ("stored", "found", "refused", "unanswered"):
            metrics.sink_nats_batches.labels(self.name, outcome)
        for reason in ("held", "duplicate"):
            metrics.sink_nats_skipped.labels(self.name, reason)

    # ------------------------------------------------------------ connection

    def connect_options(self) -> ConnectOptions:
        """How to connect (reads the CA and key files: call it off the event loop)."""
        from .nats_io import ConnectOptions

        cfg = self.cfg
        try:
            tls = tls_context(cfg)
        except (ssl.SSLError, OSError, SecretError) as exc:
            why = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
            raise Retryable(f"cannot load the CA or the client certificate ({why})") from None

        def reveal(secret: Secret | None) -> str | None:
            return secret.reveal() if secret is not None else None

        return ConnectOptions(
            servers=list(cfg.servers), name=f"streamd {self.shard}/{self.name}",
            timeout=cfg.timeout.seconds, tls=tls, require_tls=wants_tls(cfg),
            credentials=reveal(cfg.credentials), nkey_seed=reveal(cfg.nkey_seed),
            token=reveal(cfg.token), user=cfg.user, password=reveal(cfg.password))

    async def _connection(self) -> Connection:
        if self._conn is not None and self._conn.lost is None:
            return self._conn
        await self._drop()
        from .nats_io import Connection

        # Loading the CA and the key reads files: not on the event loop.
        opts = await anyio.to_thread.run_sync(self.connect_options)
        conn = await Connection.open(opts)
        try:
            await self._check_stream(conn)
        except BaseException:
            await conn.close()
            raise
        log.info("sink %s: connected to %s (%s); publishing into stream %s as shard %s",
                 self.name, conn.server, conn.nc.connected_server_version, self.cfg.stream, self.shard)
        self._conn = conn
        return conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._unsure = self._unsure or bool(self._attempts)
            await conn.close()

    async def aclose(self) -> None:
        await self._drop()

    async def _check_stream(self, conn: Connection) -> None:
        """The stream exists (or is created) and can take this sink's batches; with
        create = true, its config is the sink's."""
        cfg = self.cfg
        info = await conn.stream_info(cfg.stream)
        if info is None:
            if not cfg.create:
                raise Retryable(f"stream {cfg.stream} does not exist (create = false): create it, "
                                "or set create = true")
            info = await conn.add_stream(self._stream_config())
            log.info("sink %s: created stream %s (subjects %s, %d replicas, %s storage)", self.name,
                     cfg.stream, ", ".join(stream_subjects(cfg)), cfg.replicas, cfg.storage)
        problems = self._stream_problems(info.config)
        if problems:
            raise Retryable(f"stream {cfg.stream}: " + "; ".join(problems) + "; not publishing")
        if not self._stream_ok:
            self._stream_ok = True
            window = info.config.duplicate_window or 0
            log.info("sink %s: stream %s: %s replicas, duplicate_window %gs (exactly once does not "
                     "depend on it)", self.name, cfg.stream, info.config.num_replicas, window)

    def _stream_config(self) -> Any:
        from nats.js.api import StorageType, StreamConfig

        cfg = self.cfg
        return StreamConfig(
            name=cfg.stream, subjects=stream_subjects(cfg), num_replicas=cfg.replicas,
            storage=StorageType.FILE if cfg.storage == "file" else StorageType.MEMORY,
            max_age=cfg.max_age.seconds or None, max_bytes=cfg.max_bytes.bytes or None,
            duplicate_window=cfg.duplicate_window.seconds, allow_atomic=True)

    def _stream_problems(self, sc: Any) -> list[str]:
        cfg = self.cfg
        problems: list[str] = []
        if not sc.allow_atomic:
            problems.append("allow_atomic is off: the sink publishes atomic batches (nats-server "
                            "2.12 or later), which the stream must allow (\"allow_atomic\": true)")
        if not any(covers(s, self.filter) for s in sc.subjects or []):
            problems.append(f"its subjects {sc.subjects or []} do not cover {self.filter}")
        if sc.sealed:
            problems.append("it is sealed")
        if sc.mirror is not None:
            problems.append("it is a mirror (it takes no publishes)")
        if sc.no_ack:
            problems.append("no_ack is on (the sink needs JetStream's acks)")
        if cfg.create:
            mine = self._stream_config()
            for key, theirs, ours in (
                    ("subjects", sorted(sc.subjects or []), sorted(mine.subjects)),
                    ("replicas", sc.num_replicas, mine.num_replicas),
                    ("storage", str(getattr(sc.storage, "value", sc.storage)), mine.storage.value),
                    ("max_age", sc.max_age or 0, mine.max_age or 0),
                    ("max_bytes", sc.max_bytes if sc.max_bytes and sc.max_bytes > 0 else 0,
                     mine.max_bytes or 0),
                    ("duplicate_window", sc.duplicate_window or 0, mine.duplicate_window)):
                if theirs != ours:
                    problems.append(f"{key} is {theirs}, the sink's config says {ours} (create = "
                                    "true: the sink's keys are the stream's config)")
        return problems

    # ------------------------------------------------------------ what the stream holds

    async def recover(self) -> int:
        """Where this shard's messages in the stream end: delivery resumes after it."""
        with self._reported():
            return await self._recover()

    async def deliver(self, events: Sequence[FeedEvent]) -> None:
        with self._reported():
            await self._deliver(events)

    @contextlib.contextmanager
    def _reported(self) -> Iterator[None]:
        """Each new reason the sink cannot publish, logged once as a warning (the dispatcher
        logs every retry at info, and /readyz shows the latest)."""
        try:
            yield
        except Retryable as exc:
            if str(exc) != self._problem:
                self._problem = str(exc)
                log.warning("sink %s: %s", self.name, exc)
            raise
        if self._problem:
            self._problem = ""
            log.info("sink %s: publishing into stream %s again", self.name, self.cfg.stream)

    async def _recover(self) -> int:
        conn = await self._connection()
        self._tail = None
        await self._resolve(conn, [])
        if self._high:
            log.info("sink %s: stream %s holds shard %s's events up to seq %d (stream seq %d)",
                     self.name, self.cfg.stream, self.shard, self._high, self._tail[0] if self._tail else 0)
        return self._high

    def _adopt(self, last: Stored | None) -> None:
        if last is None:
            self._tail = (0, 0)
            return
        seq = last.int_header("streamd-seq")
        self._tail = (last.seq, seq)
        self._high = max(self._high, seq, last.int_header("streamd-high"))

    async def _resolve(self, conn: Connection, pending: Sequence[Message]) -> None:
        """Learn what the stream holds from this shard since `_tail`: which of our unanswered
        batches (if any) was stored. Its feed seqs go to `_held`, not to be sent again."""
        last = await conn.last(self.cfg.stream, self.filter)
        known = self._tail
        if known is None or last is None or last.seq <= known[0]:
            if known is not None and (last is None or last.seq < known[0]):
                log.warning("sink %s: shard %s's last message in stream %s is gone (max_age, "
                            "max_bytes or a purge?); continuing after what it holds now", self.name,
                            self.shard, self.cfg.stream)
        else:
            stored = self._attempts.get(last.headers.get("Nats-Batch-Id", ""))
            # A batch is a run of consecutive events (those between them already held).
            held = ((stored[0].seq, stored[-1].seq) if stored
                    else await self._predecessor(conn, last, pending))
            self._held.append(held)
            self._count("found")
            log.info("sink %s: a batch whose ack was lost is in stream %s (seqs %d to %d); not "
                     "sending it again", self.name, self.cfg.stream, *held)
        self._adopt(last)
        self._attempts.clear()
        self._unsure = False

    def _is_held(self, seq: int) -> bool:
        return any(lo <= seq <= hi for lo, hi in self._held)

    async def _predecessor(self, conn: Connection, last: Stored,
                           pending: Sequence[Message]) -> tuple[int, int]:
        """A batch this process did not send landed after what it knew: a straggler of the
        process before it (killed while its batch was on the way), when its first message is
        one of the events at hand; else another process publishes as this shard."""
        n = last.int_header("Nats-Batch-Sequence") or 1
        first = last if n == 1 else await conn.get(self.cfg.stream, last.seq - n + 1)
        mine = {m.seq: m for m in pending}
        if first is not None:
            m = mine.get(first.int_header("streamd-seq"))
            if m is not None and first.headers.get("Nats-Msg-Id") == m.id:
                return m.seq, last.int_header("streamd-seq")
        raise Retryable(f"stream {self.cfg.stream}: a batch this sink did not send was stored as "
                        f"shard {self.shard!r} (stream seq {last.seq}): another streamd, or another "
                        "sink of this one, publishes as the same shard into this stream; give each "
                        "host its own [daemon] shard, and each sink its own subject")

    # ------------------------------------------------------------ delivery

    def _route(self, e: FeedEvent) -> tuple[str, bytes]:
        """The event's subject, and its header lines but the id and seq: made once per
        (source, tenant, entity, op), as a batch holds few of them."""
        key = (e.provider, e.source, e.tenant, e.entity, e.op)
        route = self._routes.get(key)
        if route is None:
            if len(self._routes) >= 4096:
                self._routes.clear()
            subject = self.template.render({
                "provider": e.provider, "source": e.source, "tenant": e.tenant,
                "entity": e.entity, "op": e.op, "type": e.type, "shard": self.shard})
            if len(subject) > MAX_SUBJECT:
                raise Permanent(f"event {e.id} (seq {e.seq}): its subject would be {len(subject)} "
                                f"bytes (at most {MAX_SUBJECT})")
            try:
                head = header_lines({"content-type": CONTENT_TYPE, "ce-type": e.type,
                                     "ce-source": f"/{e.provider}/{e.source}",
                                     "streamd-shard": self.shard})
            except ValueError as exc:
                raise Permanent(f"event {e.id} (seq {e.seq}): {exc}") from None
            route = self._routes[key] = (subject, head)
        return route

    def _message(self, e: FeedEvent) -> Message:
        subject, head = self._route(e)
        body = e.line[:-1] if e.line.endswith(b"\n") else e.line
        # The id is hex and the seq a number: no line break can come with them.
        head = b"Nats-Msg-Id: %s\r\nstreamd-seq: %d\r\n%s" % (e.id.encode(), e.seq, head)
        return Message(e.seq, e.id, subject, head, body, e.received_ms)

    async def _deliver(self, events: Sequence[FeedEvent]) -> None:
        messages = [self._message(e) for e in events]
        conn = await self._connection()
        limit = conn.max_payload
        for m in messages:
            if m.size > limit:
                raise Permanent(f"event {m.id} (seq {m.seq}) is {m.size} bytes with its headers; the "
                                f"server takes at most {limit} (max_payload)")
        if self._unsure or self._tail is None:
            await self._resolve(conn, messages)
        todo = [m for m in messages if not self._is_held(m.seq)]
        if self._metrics is not None and len(todo) < len(messages):
            self._metrics.sink_nats_skipped.labels(self.name, "held").inc(len(messages) - len(todo))
        for i in range(0, len(todo), self._cap):
            await self._commit(conn, todo[i:i + self._cap])
        # Found events stay held until delivery has passed them: a batch the dispatcher
        # splits (an event refused for good) comes back in parts.
        if messages:
            upto = messages[-1].seq
            self._held = [(lo, hi) for lo, hi in self._held if hi > upto]

    async def _commit(self, conn: Connection, batch: list[Message]) -> None:
        """Store `batch` (after `_tail`), splitting it where the stream wants that."""
        from .nats_io import DUPLICATE, MESSAGE_TOO_LARGE, TOO_LARGE_BATCH, WRONG_LAST

        for _ in range(3):
            batch = [m for m in batch if not self._is_held(m.seq)]
            if not batch:
                return
            before = self._tail
            try:
                await self._send(conn, batch)
                return
            except JetStreamRefused as exc:
                if exc.code in (WRONG_LAST, DUPLICATE):
                    # Our own batch may be in the stream already (a straggler, an ack lost
                    # while we retried): ask before anything else.
                    await self._resolve(conn, batch)
                    if exc.code == DUPLICATE and self._tail == before:
                        await self._split_duplicates(conn, [m for m in batch
                                                            if not self._is_held(m.seq)])
                        return
                    continue
                if exc.code in (TOO_LARGE_BATCH, MESSAGE_TOO_LARGE) and len(batch) > 1:
                    if exc.code == TOO_LARGE_BATCH:
                        self._cap = max(len(batch) // 2, 1)
                        log.warning("sink %s: the server takes fewer messages per batch (%s); "
                                    "sending batches of %d", self.name, exc.description, self._cap)
                    half = len(batch) // 2
                    await self._commit(conn, batch[:half])
                    await self._commit(conn, batch[half:])
                    return
                if exc.code == MESSAGE_TOO_LARGE:
                    raise Permanent(f"event {batch[0].id} (seq {batch[0].seq}): stream "
                                    f"{self.cfg.stream} refused it: {exc.description}") from None
                raise Retryable(f"stream {self.cfg.stream} refused a batch: {exc}") from None
        raise Retryable(f"stream {self.cfg.stream} keeps refusing this shard's expected last "
                        "sequence; asking again")

    async def _split_duplicates(self, conn: Connection, batch: list[Message]) -> None:
        """The stream's dedupe holds ids of this batch (another shard published them within
        the duplicate window): halve it until each such event is alone, and skip those."""
        from .nats_io import DUPLICATE

        if not batch:
            return
        if len(batch) == 1:
            try:
                await self._send(conn, batch)
            except JetStreamRefused as exc:
                if exc.code != DUPLICATE:
                    raise Retryable(f"stream {self.cfg.stream} refused a batch: {exc}") from None
                m = batch[0]
                log.info("sink %s: event %s (seq %d) is in stream %s already (another shard "
                         "published it within the duplicate window); not published again",
                         self.name, m.id, m.seq, self.cfg.stream)
                if self._metrics is not None:
                    self._metrics.sink_nats_skipped.labels(self.name, "duplicate").inc()
            return
        half = len(batch) // 2
        await self._commit(conn, batch[:half])
        await self._commit(conn, batch[half:])

    async def _send(self, conn: Connection, batch: list[Message]) -> None:
        assert self._tail is not None
        name = secrets.token_hex(12)
        last = batch[-1]
        if last.seq < self._high:  # a dead letter sent again: say how far the shard got
            last = last.with_header("streamd-high", str(self._high))
            batch = [*batch[:-1], last]
        self._attempts[name] = batch
        try:
            seq = await conn.commit(name, batch, expect=self._tail[0], shard_subjects=self.filter)
        except JetStreamRefused:
            self._attempts.pop(name, None)
            self._count("refused")
            raise
        except Retryable:
            self._unsure = True
            self._count("unanswered")
            await self._drop()
            raise
        self._attempts.clear()
        self._tail = (seq, last.seq)
        self._high = max(self._high, last.seq)
        self._count("stored")
        if self._metrics is not None:  # the batch's oldest event: every other one waited less
            oldest = min(m.committed_ms for m in batch)
            self._metrics.sink_nats_ack_delay.labels(self.name).observe(
                max(_now_ms() - oldest, 0) / 1000.0)

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.sink_nats_batches.labels(self.name, outcome).inc()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _build(name: str, cfg: NatsSinkConfig) -> NatsSink:
    try:
        return NatsSink(name, cfg)
    except SecretError as exc:
        raise ConfigError(f"sinks.{name}: {exc}") from None


SPEC = SinkSpec(config=NatsSinkConfig, build=_build, validate=validate_config,
                warnings=config_warnings, path_fields=("ca", "cert", "key"))
