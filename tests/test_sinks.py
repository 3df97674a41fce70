"""Sink dispatchers over a real feed: offsets, filters, retries, poison events, the file sink."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from streamd.config import BackoffPolicy, Match, SinkConfig
from streamd.errors import Permanent, Retryable, StoreError
from streamd.health import State
from streamd.model import Invoice, Party, make_event
from streamd.sinks.base import Sink
from streamd.sinks.dispatcher import Dispatcher, DispatcherState
from streamd.sinks.file import FileSink, FileSinkConfig
from streamd.store import Batch, FeedEvent, FeedReader
from streamd.store.reader import Lines
from streamd.units import Duration, Size

from .conftest import feed_lines, until
from .test_store import Store, open_store, sample

pytestmark = pytest.mark.anyio
T0 = datetime(2026, 1, 1, tzinfo=UTC)
FAST = BackoffPolicy(min=Duration(0.01), max=Duration(0.05))


def events(n: int, start: int = 0, tenant: str = "t") -> list:  # type: ignore[type-arg]
    out = []
    for i in range(start, start + n):
        if i % 2:
            data: object = Invoice(direction="receivable", currency="EUR", total=i)  # type: ignore[arg-type]
            entity = "invoice"
        else:
            data, entity = Party(name=f"p{i}"), "party"
        out.append(make_event(provider="synthetic", source="s", tenant=tenant, entity=entity,
                              op="created", key=f"k{i}", time=T0, data=data, version="v"))  # type: ignore[arg-type]
    return out


class Scripted(Sink):
    """A sink whose failures the test decides; it records what it was given."""

    def __init__(self, name: str = "scripted") -> None:
        self.name = name
        self.got: list[FeedEvent] = []
        self.calls = 0
        self.sizes: list[int] = []
        self.retryable_left = 0
        self.refuse: set[str] = set()  # keys it can never take
        self.gate: anyio.Event | None = None

    async def recover(self) -> int:
        return 0

    async def deliver(self, events: Sequence[FeedEvent]) -> None:
        self.calls += 1
        self.sizes.append(len(events))
        if self.gate is not None:
            await self.gate.wait()
        if self.retryable_left:
            self.retryable_left -= 1
            raise Retryable("receiver busy", retry_after=0.01)
        bad = [e.key for e in events if e.key in self.refuse]
        if bad:
            raise Permanent(f"refused {bad}")
        self.got.extend(events)

    async def aclose(self) -> None:
        pass


def test_a_sink_declares_its_capabilities_or_takes_the_defaults() -> None:
    """The dispatcher calls every capability without asking: a sink without them gets the
    defaults that mean "not this sink", and one that says it holds its own offset but
    cannot say where is refused when its class is made, not at its first delivery."""
    sink = Scripted()
    assert (sink.stable_batches, sink.holds_offset, sink.batch_size()) == (False, False, None)
    with pytest.raises(TypeError, match="must define held_offset"):
        class Claims(Scripted):
            holds_offset = True


class Running:
    def __init__(self, store: Store, dispatcher: Dispatcher) -> None:
        self.store = store
        self.d = dispatcher

    async def caught_up(self) -> None:
        async def done() -> bool:
            head = self.store.writer.head
            return self.d.offset >= head and await self.store.reader.offset(self.d.name) == head

        await until(done, 10, f"sink {self.d.name} to catch up")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(tmp_path / "feed.db") as s:
        yield s


class dispatching:
    def __init__(self, store: Store, sink: object, **cfg: object) -> None:
        self.store = store
        self.sink = sink
        self.cfg = SinkConfig(type="test", backoff=FAST, **cfg)  # type: ignore[arg-type]

    async def __aenter__(self) -> Running:
        self.reader = await FeedReader.open(self.store.cfg)
        name = getattr(self.sink, "name", "sink")
        self.store.metrics.init_sink(name)
        comp = self.store.health.add("sink", name, grace=1, watched=True)
        self.d = Dispatcher(name, self.cfg, self.sink, self.store.writer, self.reader,  # type: ignore[arg-type]
                            self.store.metrics, comp)
        self.tg = anyio.create_task_group()
        await self.tg.__aenter__()
        await self.tg.start(self.d.run)
        return Running(self.store, self.d)

    async def __aexit__(self, *exc: object) -> None:
        self.tg.cancel_scope.cancel()
        await self.tg.__aexit__(None, None, None)
        await self.reader.close()


async def test_delivers_in_order_and_commits_the_offset(store: Store) -> None:
    sink = Scripted()
    await store.writer.submit(Batch(source="s", events=events(25)))
    async with dispatching(store, sink, batch_max=10) as run:
        await store.writer.submit(Batch(source="s", events=events(5, start=25)))
        await run.caught_up()
    assert [e.seq for e in sink.got] == list(range(1, 31))
    assert max(sink.sizes) == 10 and sum(sink.sizes) == 30, "batches of at most batch_max"
    assert await store.reader.offset("scripted") == 30
    assert sample(store.metrics, "streamd_sink_events_delivered_total", sink="scripted") == 30
    assert sample(store.metrics, "streamd_sink_lag_events", sink="scripted") == 0


async def test_match_filters_but_the_offset_passes_everything(store: Store) -> None:
    sink = Scripted()
    await store.writer.submit(Batch(source="s", events=events(10) + events(10, start=100, tenant="u")))
    async with dispatching(store, sink, match=Match(type=["invoice.*"], tenant=["u"])) as run:
        await run.caught_up()
    assert {(e.entity, e.tenant) for e in sink.got} == {("invoice", "u")}
    assert len(sink.got) == 5
    assert await store.reader.offset("scripted") == 20


async def test_the_offset_moves_only_after_the_sink_confirmed(store: Store) -> None:
    sink = Scripted()
    sink.gate = anyio.Event()
    await store.writer.submit(Batch(source="s", events=events(3)))
    async with dispatching(store, sink) as run:
        await until(lambda: sink.calls > 0)
        assert await store.reader.offset("scripted") in (None, 0)
        sink.gate.set()
        await run.caught_up()
    assert await store.reader.offset("scripted") == 3


async def test_retryable_failures_back_off_and_are_counted(store: Store) -> None:
    sink = Scripted()
    sink.retryable_left = 3
    await store.writer.submit(Batch(source="s", events=events(4)))
    async with dispatching(store, sink) as run:
        await run.caught_up()
        assert store.health.get("sink", "scripted").state is State.OK
    assert [e.seq for e in sink.got] == [1, 2, 3, 4], "each event delivered once, after the retries"
    assert sample(store.metrics, "streamd_sink_failures_total", sink="scripted", kind="retryable") == 3
    assert sample(store.metrics, "streamd_retries_total", component="sink", name="scripted") == 3


async def test_a_poison_event_is_found_dead_lettered_and_skipped(store: Store) -> None:
    sink = Scripted()
    sink.refuse = {"k5"}
    await store.writer.submit(Batch(source="s", events=events(12)))
    async with dispatching(store, sink, batch_max=12, max_tries=3) as run:
        await run.caught_up()
    assert [e.key for e in sink.got] == [f"k{i}" for i in range(12) if i != 5], "the rest, in order"
    (dl,) = await store.reader.dead_letters(origin="sink")
    assert dl.event_seq == 6 and dl.attempts == 3 and "refused" in dl.reason
    assert json.loads(dl.raw or b"")["subject"] == "invoice/k5"
    # and `streamd dlq retry` later: once the receiver takes it, it is delivered and resolved
    sink.refuse = set()
    side = __import__("sqlite3").connect(store.cfg.path)
    side.execute("UPDATE dead_letters SET status = 'retry'")
    side.commit()
    side.close()
    async with dispatching(store, sink):
        async def resolved() -> bool:
            return not await store.reader.dead_letters()

        await until(resolved, 10, "the dead letter to be delivered and resolved")
    assert sink.got[-1].key == "k5" and sink.got[-1].seq == 6


# ---------------------------------------------------------------- the file sink

def file_sink(tmp_path: Path, **kw: object) -> FileSink:
    return FileSink("file", FileSinkConfig(type="file", path=str(tmp_path / "out" / "feed.jsonl"),
                                           **kw))  # type: ignore[arg-type]


async def test_the_file_sink_writes_the_feed_lines(store: Store, tmp_path: Path) -> None:
    await store.writer.submit(Batch(source="s", events=events(7)))
    async with dispatching(store, file_sink(tmp_path)) as run:
        await run.caught_up()
    lines = (tmp_path / "out" / "feed.jsonl").read_bytes().splitlines(keepends=True)
    assert lines == [e.line for e in await store.reader.read(0, 100, 100)]


async def test_the_file_sink_writes_each_line_byte_for_byte_as_pinned(store: Store, tmp_path: Path) -> None:
    """The feed line's bytes are a contract (consumers hash and diff them): the envelope
    around the stored data, field order, escaping, UTF-8 and the null tenant, pinned."""
    ev = make_event(provider="synthetic", source="s", tenant="", entity="party", op="created",
                    key='k "1" \u00fc/\u00e9\\', time=T0, data=Party(name="p"), version="v")
    await store.writer.submit(Batch(source="s", events=[ev]))
    async with dispatching(store, file_sink(tmp_path)) as run:
        await run.caught_up()
    written = (tmp_path / "out" / "feed.jsonl").read_bytes()
    assert written == (
        b'{"specversion":"1.0","id":"' + ev.id.encode() + b'","source":"/synthetic/s",'
        b'"type":"party.created","subject":"party/k \\"1\\" \xc3\xbc/\xc3\xa9\\\\",'
        b'"time":"2026-01-01T00:00:00.000Z","datacontenttype":"application/json","seq":1,'
        b'"provider":"synthetic","tenant":null,"entity":"party","data":' + ev.data + b'}\n')


async def test_an_event_read_by_two_sinks_is_rendered_once(store: Store) -> None:
    """Encode once: readers sharing `Lines` hand every sink the same bytes, rendered by
    the first to ask; asking again (a batch delivered again) renders nothing either."""
    await store.writer.submit(Batch(source="s", events=events(3)))
    lines = Lines()
    a, b = (await FeedReader.open(store.cfg, lines), await FeedReader.open(store.cfg, lines))
    try:
        first, second = await a.read(0, 10, 10), await b.read(0, 10, 10)
        assert all(e.rendered is None for e in first + second)  # nothing rendered by reading
        sent = [e.line for e in first]
        assert all(x.line is y for x, y in zip(second, sent, strict=True))
        assert all(x.line is y for x, y in zip(first, sent, strict=True))
        alone = await store.reader.read(0, 10, 10)  # a reader of its own renders the same bytes
        assert alone == first  # equal events, whether their line was rendered yet or not
        assert [e.line for e in alone] == sent and all(x is not y for x, y in
                                                       zip((e.line for e in alone), sent, strict=True))
    finally:
        await a.close()
        await b.close()


async def test_the_next_batch_is_read_while_one_is_delivered(store: Store) -> None:
    """The read of the next batch overlaps the delivery of this one (the postgres sink's
    commit), and is delivered only after it returned, in order, the offset unchanged."""
    await store.writer.submit(Batch(source="s", events=events(10)))
    sink = Scripted()
    sink.gate = anyio.Event()
    reads: list[int] = []
    async with dispatching(store, sink, batch_max=4) as run:
        original = run.d.reader.read

        async def read(after: int, upto: int, limit: int, match: Match | None = None) -> list[FeedEvent]:
            reads.append(after)
            return await original(after, upto, limit, match)

        run.d.reader.read = read  # type: ignore[method-assign]
        # The first batch is already in delivery (held at the gate): the second is read meanwhile.
        await until(lambda: 4 in reads, 10, "the second batch to be read during the first delivery")
        assert sink.calls == 1 and sink.got == [] and run.d.offset == 0
        assert 8 not in reads  # one batch ahead, no more
        sink.gate.set()
        await run.caught_up()
    assert [e.key for e in sink.got] == [f"k{i}" for i in range(10)] and sink.sizes == [4, 4, 2]


async def test_a_failed_read_ahead_never_cuts_the_delivery_short(store: Store) -> None:
    """The read of the next batch fails while this one is delivered: the delivery still
    completes and its offset moves; the failure surfaces after it, as a read's would."""
    await store.writer.submit(Batch(source="s", events=events(10)))
    sink = Scripted()
    sink.gate = anyio.Event()
    reader = await FeedReader.open(store.cfg)
    original = reader.read
    reads = 0

    async def read(after: int, upto: int, limit: int, match: Match | None = None) -> list[FeedEvent]:
        nonlocal reads
        reads += 1
        if reads == 2:
            raise StoreError("disk I/O error")
        return await original(after, upto, limit, match)

    reader.read = read  # type: ignore[method-assign]
    store.metrics.init_sink("scripted")
    d = Dispatcher("scripted", SinkConfig(type="test", backoff=FAST, batch_max=4), sink,  # type: ignore[arg-type]
                   store.writer, reader, store.metrics, store.health.add("sink", "scripted", grace=1))
    failed: list[BaseException] = []

    async def run() -> None:
        try:
            await d.run()
        except StoreError as exc:
            failed.append(exc)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await until(lambda: reads == 2, 10, "the read ahead to fail")
            assert not failed and sink.calls == 1  # the delivery goes on
            sink.gate.set()
            await until(lambda: bool(failed), 10, "the failure to surface")
    finally:
        await reader.close()
    assert [e.key for e in sink.got] == ["k0", "k1", "k2", "k3"] and d.offset == 4


async def test_a_slow_offset_commit_holds_back_no_delivery(store: Store) -> None:
    """While the store cannot commit (another process holds its write lock), the sink goes
    on delivering: the offset of one batch is committed with a later one's, never waited
    for before the next delivery. The offset reaches the head once the store commits."""
    await store.writer.submit(Batch(source="s", events=events(12)))
    sink = Scripted()
    sink.gate = anyio.Event()
    side = sqlite3.connect(store.cfg.path, isolation_level=None)
    try:
        async with dispatching(store, sink, batch_max=4) as run:
            await until(lambda: sink.calls == 1, 10, "the first delivery")
            side.execute("BEGIN IMMEDIATE")  # the writer's next commit (this offset) waits
            sink.gate.set()
            await until(lambda: len(sink.got) == 12, 5, "every batch delivered while the store is locked")
            assert await store.reader.offset("scripted") in (None, 0), "nothing could commit yet"
            side.execute("ROLLBACK")
            await run.caught_up()
    finally:
        side.close()
    assert [e.seq for e in sink.got] == list(range(1, 13)) and sink.sizes == [4, 4, 4]
    assert await store.reader.offset("scripted") == 12


async def test_the_file_sink_repairs_a_torn_line_and_resumes_exactly(store: Store, tmp_path: Path) -> None:
    await store.writer.submit(Batch(source="s", events=events(10)))
    async with dispatching(store, file_sink(tmp_path), batch_max=4) as run:
        await run.caught_up()
    path = tmp_path / "out" / "feed.jsonl"
    # A crash after the file got lines 1-10 and half of 11, but before offsets moved past 4.
    await store.writer.submit(Batch(offsets={"file": 4}, source="s", events=events(3, start=10)))
    line11 = (await store.reader.read(10, 11, 1))[0].line
    await anyio.Path(path).write_bytes(await anyio.Path(path).read_bytes() + line11[:25])
    async with dispatching(store, file_sink(tmp_path)) as run:
        await run.caught_up()
    seqs = [json.loads(line)["seq"] for line in path.read_bytes().splitlines()]
    assert seqs == list(range(1, 14)), "no duplicates, no gap, no torn line"


async def test_the_file_sink_rotates_by_size_and_keeps_n(store: Store, tmp_path: Path) -> None:
    await store.writer.submit(Batch(source="s", events=events(200)))
    async with dispatching(store, file_sink(tmp_path, rotate_bytes=Size(8192), keep=3),
                           batch_max=5) as run:
        await run.caught_up()
    out = tmp_path / "out"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["feed.jsonl", "feed.jsonl.1", "feed.jsonl.2", "feed.jsonl.3"]
    for p in out.iterdir():
        assert p.stat().st_size <= 8192
    seqs = [json.loads(line)["seq"] for line in feed_lines(out / "feed.jsonl")]
    assert seqs == list(range(seqs[0], 201)), "the kept files hold the newest events, in order"


async def test_a_failing_file_write_is_retried_without_losing_the_offset(store: Store,
                                                                         tmp_path: Path) -> None:
    blocked = tmp_path / "out"
    blocked.write_text("a file where the sink's directory should be")
    sink = file_sink(tmp_path)
    await store.writer.submit(Batch(source="s", events=events(3)))
    async with dispatching(store, sink) as run:
        comp = store.health.get("sink", "file")
        await until(lambda: comp.state is State.RETRYING)
        assert await store.reader.offset("file") in (None, 0)
        blocked.unlink()
        blocked.mkdir(exist_ok=True)  # the sink's retry may make it first, as it would for a user
        await run.caught_up()
    assert len((blocked / "feed.jsonl").read_bytes().splitlines()) == 3


async def test_a_commit_landing_as_the_drain_begins_is_still_delivered(store: Store) -> None:
    """Shutdown's last commit can land while the sink, having just caught up, waits for its
    offset commit: the drain must look at the head again before it ends."""
    late = events(3, start=5)

    class LastCommitDuringDelivery(Scripted):
        dispatcher: Dispatcher | None = None

        async def deliver(self, evs: Sequence[FeedEvent]) -> None:
            await super().deliver(evs)
            if self.dispatcher is not None and len(self.got) == 5:
                await store.writer.enqueue(Batch(source="s", events=late))  # not yet committed
                self.dispatcher.drain()

    sink = LastCommitDuringDelivery()
    sink.gate = anyio.Event()
    await store.writer.submit(Batch(source="s", events=events(5)))
    async with dispatching(store, sink) as run:
        sink.dispatcher = run.d
        sink.gate.set()
        await until(lambda: run.d.component.state is State.STOPPED, 10, "the drain to end")
        assert run.d.state is DispatcherState.DRAINING, "drained, not given up on"
    assert [e.seq for e in sink.got] == list(range(1, 9))
