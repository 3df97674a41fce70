"""The daemon: one task group over the store writer, the sinks, the HTTP listener and
the sources, started in that order, each ready before the next (`await tg.start`).
Once all are ready (READY=1), three more: the watchdog and status line (`_supervise`),
retention (`store/retention.py`) and the retry of source dead letters
(`sources/dead_letters.py`). A source or sink loop that crashes is started again after
its backoff (`_restarting`); a store error stops the daemon.

Shutdown (SIGTERM/SIGINT, or `request_stop()`), in phases under
`daemon.shutdown_timeout`:

1. stop intake: webhooks answer 503 (requests already in a handler finish), sources
   are cancelled;
2. flush: everything already submitted is committed;
3. drain: every sink delivers up to the final head and commits its offset;
4. close the writer, then the listener. Exit 0.

Past the deadline the rest is cancelled: nothing is lost (an unconfirmed batch is
re-delivered from its sink's offset next start). A second signal exits at once.

The process stops with an error only for a bad config (78) or an unusable store (1).
"""

from __future__ import annotations

import enum
import gc
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import anyio
from anyio.abc import TaskStatus

from . import __version__
from .config import BackoffPolicy, Config, SinkConfig, SourceConfig
from .errors import StartupError, StoreError, StoreFatal
from .health import Component, Health, State
from .metrics import Metrics
from .notify import Notifier
from .providers import provider_spec
from .retry import Retries
from .sinks import sink_spec
from .sinks.dispatcher import Dispatcher, DispatcherState
from .sources import Source, SourceContext
from .sources.dead_letters import SourceDeadLetters
from .store import Batch, FeedReader, Writer, connect
from .store.reader import Lines
from .store.retention import Retention
from .web import Web

log = logging.getLogger("streamd")

LINES_SHARED = 8 << 20  # bytes of rendered feed lines the sinks share (about 10,000 events)

class DaemonState(enum.Enum):
    """One way: NEW -> STARTING -> RUNNING (ready) -> STOPPING -> STOPPED, or CUT_SHORT when
    the shutdown deadline passed (sinks resume from their offsets next start). A run that
    ends any other way (the store unusable, a port taken, cancelled) ends ABORTED."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    CUT_SHORT = "cut short"
    ABORTED = "aborted"


class Daemon:
    def __init__(self, cfg: Config, *, metrics: Metrics | None = None,
                 notifier: Notifier | None = None,
                 clock: Callable[[], float] = time.time, freeze_gc: bool = False) -> None:
        self.cfg = cfg
        self._freeze_gc = freeze_gc
        self.metrics = metrics or Metrics()
        self.metrics.shard.info({"shard": cfg.daemon.shard})
        self.health = Health()
        self.notifier = notifier or Notifier()
        self._clock = clock
        self.ready = anyio.Event()
        self._stop = anyio.Event()
        self._signals_seen = 0
        self._sources_scope = anyio.CancelScope()
        self._sources_done = anyio.Event()
        self.writer: Writer | None = None
        self.web: Web | None = None
        self.retention: Retention | None = None
        self.dead_letters: SourceDeadLetters | None = None
        self.sources: dict[str, Source] = {}
        self.dispatchers: dict[str, Dispatcher] = {}
        self._readers: list[FeedReader] = []
        self.state = DaemonState.NEW
        # Sinks' events share their rendered lines, so an event is encoded once, however
        # many sinks send it (one sink has nothing to share it with).
        self._lines = Lines(LINES_SHARED) if len(cfg.sinks) > 1 else None

    def request_stop(self) -> None:
        self._stop.set()

    # ---------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """Run until stopped. Raises StoreFatal (exit 1) or StartupError (exit 1). Once."""
        if self.state is not DaemonState.NEW:
            raise RuntimeError(f"this daemon is {self.state.value}: a Daemon runs once")
        self.state = DaemonState.STARTING
        cfg = self.cfg
        log.info("streamd %s starting: store %s, %d sources, %d sinks", __version__,
                 cfg.store.path, len(cfg.sources), len(cfg.sinks))
        db = await connect(cfg.store)
        try:
            await self._run(db)
        except BaseExceptionGroup as eg:
            raise _unwrap(eg) from None
        finally:
            if self.state not in (DaemonState.STOPPED, DaemonState.CUT_SHORT):
                self.state = DaemonState.ABORTED
            with anyio.CancelScope(shield=True):
                for r in self._readers:
                    await r.close()
                await db.close()
            self.notifier.close()

    async def _reader(self, lines: Lines | None = None) -> FeedReader:
        r = await FeedReader.open(self.cfg.store, lines)
        self._readers.append(r)
        return r

    async def _run(self, db: Any) -> None:
        cfg = self.cfg
        m = self.metrics
        self.writer = writer = Writer(db, cfg.store, m, self.health.add("store", "writer",
                                                                           grace=30.0, watched=True),
                                      clock=self._clock)
        self.web = web = Web(cfg.http, m, self.health)
        sources_reader = await self._reader()
        for name, scfg in cfg.sources.items():
            self.sources[name] = self._build_source(name, scfg, writer, sources_reader, web)
        for name, kcfg in cfg.sinks.items():
            self.dispatchers[name] = await self._build_sink(name, kcfg, writer)
        aux = await self._reader()
        self.retention = retention = Retention(cfg.store, writer, aux, list(cfg.sinks), self._clock)
        self.dead_letters = dead_letters = SourceDeadLetters(writer, aux, self.sources)
        web.bind()  # a BindError is a StartupError: exit 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(self._signals)
            await tg.start(writer.run)
            for d in self.dispatchers.values():
                await tg.start(self._supervise_sink, d)
            await tg.start(web.serve)
            await tg.start(self._run_sources)
            host, port = web.address or ("", 0)
            admin = ":".join(map(str, web.admin_address)) if web.admin_address else ""
            # Queued, not awaited: a full disk must not hold READY=1 back.
            await writer.enqueue(Batch(meta={
                "daemon.http": f"{host}:{port}", "daemon.admin": admin, "daemon.pid": str(os.getpid()),
                "daemon.version": __version__, "daemon.started": datetime.now(UTC).isoformat()}))
            status = self.status_line()
            self.notifier.ready(status)
            self.state = DaemonState.RUNNING
            self.ready.set()
            log.info("streamd ready: http on %s:%d; %s", *(web.address or ("?", 0)), status)
            if self._freeze_gc:
                _freeze_startup_objects()
            tg.start_soon(self._supervise)
            tg.start_soon(retention.run)
            tg.start_soon(dead_letters.run)
            await self._stop.wait()
            await self._shutdown()
            tg.cancel_scope.cancel()

    def _build_source(self, name: str, scfg: SourceConfig, writer: Writer, reader: FeedReader,
                      web: Web) -> Source:
        self.metrics.init_source(name)
        component = self.health.add("source", name, grace=scfg.backoff.max.seconds)
        ctx = SourceContext(name=name, provider=scfg.provider, writer=writer, reader=reader,
                            metrics=self.metrics, component=component, routes=web)
        return provider_spec(scfg.provider).build(ctx, scfg)

    async def _build_sink(self, name: str, kcfg: SinkConfig, writer: Writer) -> Dispatcher:
        self.metrics.init_sink(name)
        component = self.health.add("sink", name, grace=kcfg.backoff.max.seconds, watched=True)
        sink = sink_spec(kcfg.type).build(name, kcfg)
        # A sink that names this host to its peer (the nats sink's subjects) is told the shard.
        sink.attach_shard(self.cfg.daemon.shard)
        return Dispatcher(name, kcfg, sink, writer, await self._reader(self._lines), self.metrics,
                          component)

    async def _shutdown(self) -> None:
        assert self.writer is not None and self.web is not None
        deadline = self.cfg.daemon.shutdown_timeout.seconds
        self.state = DaemonState.STOPPING
        self.notifier.stopping("stopping: draining")
        log.info("stopping: intake closed; committing and draining sinks (deadline %.0fs)", deadline)
        with anyio.move_on_after(deadline) as scope:
            self.web.drain()
            self._sources_scope.cancel()
            await self._sources_done.wait()
            await self.web.idle()  # webhook handlers already past the 503 commit first
            await self.writer.submit(Batch())  # everything submitted before this is committed
            for d in self.dispatchers.values():
                d.drain()
            for d in self.dispatchers.values():
                await d.done.wait()
            self.writer.close()
            await self.writer.finished.wait()
        if scope.cancelled_caught:
            late = [n for n, d in self.dispatchers.items() if not d.done.is_set()]
            log.warning("stopping: deadline of %.0fs passed; sinks %s resume from their offsets "
                        "next start", deadline, ", ".join(late) or "-")
        else:
            late = [n for n, d in self.dispatchers.items() if d.state is DispatcherState.GAVE_UP]
            log.info("stopping: feed committed at seq %d; %s", self.writer.head,
                     f"sinks {', '.join(late)} not drained (failing); they resume from their offsets"
                     if late else "every sink drained")
        self.web.stop()
        with anyio.move_on_after(5):
            await self.web.finished.wait()
        self.state = DaemonState.CUT_SHORT if scope.cancelled_caught else DaemonState.STOPPED

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                self._signals_seen += 1
                name = signal.Signals(signum).name
                if self._signals_seen == 1:
                    log.info("%s received: shutting down (send it again to exit at once)", name)
                    self._stop.set()
                else:
                    log.warning("%s received again: exiting now", name)
                    logging.shutdown()
                    os._exit(128 + signum)

    # ---------------------------------------------------------------- sources

    async def _run_sources(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            with self._sources_scope:
                async with anyio.create_task_group() as tg:
                    for name, source in self.sources.items():
                        await tg.start(self._supervise_source, name, source)
                    task_status.started()
        finally:
            for name in self.sources:
                self.health.get("source", name).set(State.STOPPED)
                self.metrics.source_connected.labels(name).set(0)
            self._sources_done.set()

    async def _restarting(self, component: Component, policy: BackoffPolicy,
                          run: Callable[..., Awaitable[None]], *, on_crash: Callable[[], None] | None = None,
                          task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run a source or sink loop; if it crashes (a bug: peer failures it handles itself),
        log it and start it again after a backoff. Store errors stop the daemon."""
        retries = Retries(policy, metrics=self.metrics, component=component, logger=log,
                          level=logging.ERROR, message="%(kind)s %(name)s crashed; restarting in %(wait).1fs")
        status = _Once(task_status)
        while True:
            try:
                await run(task_status=status)
                return
            except StoreError:
                raise
            except Exception as exc:
                if on_crash is not None:
                    on_crash()
                status.started()
                await retries.pause(f"crashed: {type(exc).__name__}: {exc}", exc_info=exc)

    async def _supervise_source(self, name: str, source: Source, *,
                                task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        connected = self.metrics.source_connected.labels(name)
        await self._restarting(self.health.get("source", name), self.cfg.sources[name].backoff,
                               source.run, on_crash=lambda: connected.set(0), task_status=task_status)

    async def _supervise_sink(self, d: Dispatcher, *,
                              task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._restarting(d.component, d.cfg.backoff, d.run, task_status=task_status)
        finally:
            d.done.set()

    # ---------------------------------------------------------------- watchdog, status

    def status_line(self) -> str:
        head = self.writer.head if self.writer else 0
        now = self.health.now()
        comps = self.health.components.values()
        src = [c for c in comps if c.kind == "source"]
        snk = [c for c in comps if c.kind == "sink"]
        lag = max((max(head - d.offset, 0) for d in self.dispatchers.values()), default=0)
        return (f"head {head}; sources {sum(c.healthy(now) for c in src)}/{len(src)} ok; "
                f"sinks {sum(c.healthy(now) for c in snk)}/{len(snk)} ok, max lag {lag}")

    async def _supervise(self) -> None:
        """sd_notify STATUS= and WATCHDOG=1. The watchdog is fed only while the writer and
        every sink loop keep their promise to come back (health.beat); a wedged loop, or a
        blocked event loop, lets systemd's watchdog fire."""
        assert self.web is not None
        interval = self.notifier.watchdog_interval
        tick = min(interval or 1.0, 1.0)
        next_ping = 0.0
        last_status = ""
        complained = False
        while True:
            self.web.refresh_health_metrics()
            wall = self._clock()
            for d in self.dispatchers.values():
                await d.publish_lag(wall)
            now = anyio.current_time()
            if interval is not None and now >= next_ping:
                wedged = self.health.wedged()
                if wedged:
                    if not complained:
                        log.error("watchdog: %s stopped making progress; not feeding the "
                                  "watchdog", ", ".join(wedged))
                        complained = True
                else:
                    self.notifier.watchdog()
                    complained = False
                next_ping = now + interval
            status = self.status_line()
            if status != last_status:
                self.notifier.status(status)
                last_status = status
            await anyio.sleep(tick)


class _Once:
    """A TaskStatus that forwards only the first `started()`: a supervised task that
    restarts must not report readiness twice."""

    def __init__(self, outer: TaskStatus[None]) -> None:
        self._outer = outer
        self._done = False

    def started(self, value: object = None) -> None:
        if not self._done:
            self._done = True
            self._outer.started()


def _freeze_startup_objects() -> None:
    """Leave what start-up made (modules, config, metrics, compiled patterns: most of the
    interpreter's objects) out of every later garbage collection. A full collection then
    walks only what the running daemon made since: on seed frames at 2,000 events/s one
    came every 15 s or so and paused the event loop 30-45 ms, the longest wait an event
    had (docs/benchmarks.md, issue 18). Only for `streamd run`, its own process: a test
    process running daemons one after another would keep their garbage forever."""
    gc.collect()
    gc.freeze()


def _unwrap(eg: BaseExceptionGroup[Any]) -> BaseException:
    """The task group wraps errors; the caller wants the one that decides the exit code."""
    for kind in (StoreFatal, StoreError, StartupError):
        sub = eg.subgroup(lambda e, k=kind: isinstance(e, k))  # type: ignore[misc]
        if sub is not None:
            leaf: BaseException = sub
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            return leaf
    return eg
