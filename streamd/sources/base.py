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

A source's `run` handles its peer's failures itself (each retry one `retry.Retries`
step) and returns only when cancelled. `renormalize` re-runs the pure normalizer on a
dead letter's raw bytes for `streamd dlq retry`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
from anyio.abc import TaskStatus

from ..config import SourceConfig, no_checks
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
class ProviderSpec:
    config: type[SourceConfig]
    build: Callable[[SourceContext, Any], Source]
    validate: Callable[[Any], list[str]] = no_checks
    path_fields: tuple[str, ...] = ()
    # The source keeps credentials in the store (`secret.` progress): `streamd check`
    # warns when `[store] secrets_key` is not set to encrypt them.
    keeps_credentials: bool = False


def json_reply(status: int, **body: Any) -> WebhookReply:
    return WebhookReply(status, body or None)


_enc = msgspec.json.Encoder(decimal_format="string")


def encode_body(body: Any) -> bytes:
    return _enc.encode(body)
