"""The seat every provider plugs into.

A provider module (`streamd/providers/<name>/`) exposes `SPEC: ProviderSpec`. For
each `[sources.<name>]` table the daemon calls `SPEC.build(ctx, cfg)` before the
HTTP listener starts, then starts `source.run()` in its task group. The
`SourceContext` is all a source gets:

- `await ctx.submit(Batch(events=…, progress=…))` returns once events and progress
  are committed together (invariant 1); `ctx.enqueue()` queues without waiting,
  for a reader that pipelines a bounded number of uncommitted batches.
- `ctx.webhook(path, handler, auth=…)` registers a route on the daemon's listener. `auth`
  is required: it decides from the headers alone (constant-time compare) whether the
  caller may send a body at all, and a refusal is answered (and the connection closed)
  without reading it. The listener then enforces the body limit (413) and deadline
  (408), answers 503 while draining or when the commit does not finish in
  `http.commit_timeout`, and counts every answer. A handler answers 2xx only after
  its `submit()` returned (invariant 2).
- `ctx.component` is the source's health (`ok`, `retrying`, `failed`), shown in
  /readyz; `ctx.metrics` its counters; `ctx.progress()` its last committed progress.
- `ctx.dead_letter(reason, raw, context)` builds a dead-letter row for a payload
  normalization refused; submit it in the same batch as the good events.

Beside `build`, a `ProviderSpec` may carry hooks for the command line, so that it names
no provider: `demo` makes the provider's part in `streamd demo` (a `DemoPart`: its
simulator, its source table, its platform at work), and `authorize` signs a source in
for `streamd auth <source>` (an `Authorization` says which, and how).

A source's `run` handles its peer's failures itself (each retry one `retry.Retries`
step) and returns only when cancelled. `renormalize` re-runs the pure normalizer on a
dead letter's raw bytes for `streamd dlq retry`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import anyio
import msgspec
from anyio.abc import TaskStatus

from ..config import SourceConfig, StoreConfig, no_checks
from ..health import Component
from ..metrics import Metrics
from ..model import Event
from ..store import Batch, Committed, DeadLetter, FeedReader, Pending, Writer


@dataclass(frozen=True)
class WebhookRequest:
    method: str
    path: str
    path_params: Mapping[str, str]
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    client: str


@dataclass(frozen=True)
class WebhookReply:
    status: int
    body: Any = None  # encoded as JSON; None sends no body
    headers: Mapping[str, str] = field(default_factory=dict)


WebhookHandler = Callable[[WebhookRequest], Awaitable[WebhookReply]]
# The request's headers (lower-case names) -> None when the caller may send its body, or
# the reply that refuses it (401 and whatever headers the scheme wants, e.g. WWW-Authenticate).
WebhookAuth = Callable[[Mapping[str, str]], WebhookReply | None]


class Routes(Protocol):
    def webhook(self, owner: str, path: str, handler: WebhookHandler, *, auth: WebhookAuth,
                methods: Sequence[str] = ("POST",)) -> None: ...


class SourceContext:
    def __init__(self, *, name: str, provider: str, writer: Writer, reader: FeedReader,
                 metrics: Metrics, component: Component, routes: Routes,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.name = name
        self.provider = provider
        self.writer = writer
        self.reader = reader
        self.metrics = metrics
        self.component = component
        self._routes = routes
        self._clock = clock or (lambda: datetime.now(UTC))

    def now(self) -> datetime:
        """The received_at to pass into normalization (which never reads a clock itself)."""
        return self._clock()

    async def submit(self, batch: Batch) -> Committed:
        batch.source = self.name
        return await self.writer.submit(batch)

    async def enqueue(self, batch: Batch) -> Pending:
        batch.source = self.name
        return await self.writer.enqueue(batch)

    async def progress(self) -> dict[str, Any]:
        return await self.reader.progress(self.name)

    async def entity_versions(self, tenant: str, entity: str) -> dict[str, str]:
        return await self.reader.entity_versions(self.name, tenant, entity)

    def webhook(self, path: str, handler: WebhookHandler, *, auth: WebhookAuth,
                methods: Sequence[str] = ("POST",)) -> None:
        self._routes.webhook(self.name, path, handler, auth=auth, methods=methods)

    def dead_letter(self, reason: str, raw: bytes | None,
                    context: Mapping[str, str] | None = None) -> DeadLetter:
        return DeadLetter(origin="source", name=self.name, provider=self.provider, reason=reason,
                          raw=raw, context=dict(context or {}))

    def received(self, n: int = 1) -> None:
        self.metrics.source_received.labels(self.name).inc(n)


class Source(Protocol):
    name: str

    async def run(self, *, task_status: TaskStatus[None]) -> None: ...

    def renormalize(self, raw: bytes, context: Mapping[str, str],
                    received_at: datetime) -> list[Event]:
        """Normalize a dead letter's raw payload again; raise `Rejected` if it still fails."""
        ...


@dataclass(frozen=True)
class DemoSetup:
    """What `streamd demo` tells a provider's `demo` hook."""

    name: str  # the `[sources.<name>]` it gets (the provider's own name)
    directory: Path  # the demo's directory: certificates, secrets, the simulator's files
    rate: float  # `--rate`: events per second a simulator that streams should send


class DemoPart(Protocol):
    """A provider's part in `streamd demo`: its simulator on loopback, the source table that
    points streamd at it, and its platform at work while the demo runs. The demo calls, in
    this order: `serve` (started in its task group), `source_toml`, `prepare` with the
    parsed config, and once the daemon is ready `banner` and `activity` (started in the
    task group, cancelled when the demo ends)."""

    async def serve(self, *, task_status: TaskStatus[Any]) -> None:
        """Serve the simulator until cancelled; `task_status.started()` once it listens."""
        ...

    def source_toml(self, backoff: str) -> str:
        """The `[sources.<name>]` table, with the `backoff` (TOML) every demo source gets."""
        ...

    async def prepare(self, store: StoreConfig) -> None:
        """Before the daemon starts: leave in the store what a person would have done by
        hand (Asperion's sign-in, `streamd auth`)."""
        ...

    def banner(self, listener: str) -> list[str]:
        """Lines that say where the simulator is (`listener`: the daemon's http://host:port)."""
        ...

    async def activity(self, listener: str) -> None:
        """The platform at work until cancelled: records change, webhooks arrive."""
        ...


class _Serves(Protocol):
    async def serve(self, *, task_status: TaskStatus[Any]) -> None: ...


_Sim = TypeVar("_Sim", bound=_Serves)


class Simulated(Generic[_Sim]):
    """What every provider's demo part shares: its simulator `sim`, which serves itself
    (`serve`), and nothing to leave in the store beforehand (`prepare`: Asperion's
    overrides it). A part passes its simulator and writes the rest of `DemoPart`."""

    def __init__(self, setup: DemoSetup, sim: _Sim) -> None:
        self.name = setup.name
        self.sim = sim

    async def serve(self, *, task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        await self.sim.serve(task_status=task_status)

    async def prepare(self, store: StoreConfig) -> None:
        return


@dataclass(frozen=True)
class Authorization:
    """What `streamd auth <source>` hands a provider's `authorize` hook."""

    store: StoreConfig  # where the credentials go (`store.write_state`: sealed when a key is set)
    source: str  # the `[sources.<name>]` to authorize
    config: Any  # its table: the provider's own SourceConfig
    refresh_token: str | None  # one obtained elsewhere, to import instead of signing in
    timeout: float  # seconds to wait for the person to finish signing in
    say: Callable[[str], None]  # a message for the person at the terminal (never a token)


@dataclass(frozen=True)
class ProviderSpec:
    config: type[SourceConfig]
    build: Callable[[SourceContext, Any], Source]
    validate: Callable[[Any], list[str]] = no_checks
    path_fields: tuple[str, ...] = ()
    # The source keeps credentials in the store (`secret.` progress): `streamd check`
    # warns when `[store] secrets_key` is not set to encrypt them.
    keeps_credentials: bool = False
    # Its part in `streamd demo` (a provider without one is left out of the demo).
    demo: Callable[[DemoSetup], DemoPart] | None = None
    # `streamd auth <source>`: sign in once and keep the credentials in the store. Raises
    # AuthorizationFailed with a message for the person at the terminal.
    authorize: Callable[[Authorization], Awaitable[None]] | None = None
    # Its sources may hold deletions for `streamd deletions confirm` (sources/held.py).
    holds_deletions: bool = False


def json_reply(status: int, **body: Any) -> WebhookReply:
    return WebhookReply(status, body or None)


_enc = msgspec.json.Encoder(decimal_format="string")


def encode_body(body: Any) -> bytes:
    return _enc.encode(body)
