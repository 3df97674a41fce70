"""The Asperion source: a change feed made from full listings, per tenant and resource.

Asperion has no change feed and no "changed since" filter, so every `interval` each
(tenant, resource) is listed in full and compared, record by record, with what the
last listing left in `entity_state`:

    page 1 ──► pageCount known? ──► pages 2..n, `concurrency` in flight per tenant
       │            each page: normalize, diff, commit events + entity_state together
       ▼
    listing complete ──► ids that vanished: confirmed gone by GET /<id> (404)
                         ──► too many at once? held for the operator (`deletions`)
                         ──► `deleted` events + tombstones + progress, one commit

A page's events and the entity states that produced them commit in one transaction
(invariant 1): after a crash the next listing finds those records unchanged and
emits only what was not committed. A listing that fails part-way deletes nothing.

The pure half (each page diffed against the last listing, the records it no longer
shows, the events) is in `changes`; this module fetches, confirms and commits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import quote

import anyio
import httpx
import msgspec
from anyio.abc import TaskStatus

from ...errors import AuthFailed, PollFailed, TokenLost
from ...health import State
from ...model import Event, format_time
from ...model.fields import DECODE_ERRORS
from ...retry import Retries
from ...sources import SourceContext
from ...sources.polling import (
    ApiClient,
    Gate,
    PollHealth,
    Response,
    changed_values,
    fan_out,
    http_client,
    paginate,
    poll_every,
    url_path,
)
from ...sources.window import CommitWindow
from ...store import Batch
from . import wire
from .changes import Listing, record_event
from .config import AsperionConfig, tenant_ids, tls_context
from .deletions import Guard
from .oauth import Tokens

log = logging.getLogger("streamd.source.asperion")

PROVIDER = wire.PROVIDER
# Commits of pages not yet confirmed, per listing, before it waits for the oldest.
INFLIGHT = 4
# With no stored credentials, look for new ones (`streamd auth`) this often; and after
# an authorization failure try again anyway this long after (a provider-side glitch).
CREDENTIALS_CHECK = 5.0
AUTH_RETRY = 900.0


# ---------------------------------------------------------------- the source

class AsperionSource:
    def __init__(self, ctx: SourceContext, cfg: AsperionConfig) -> None:
        self.name = ctx.name
        self.ctx = ctx
        self.cfg = cfg
        self._ssl = tls_context(cfg)
        self._gates: dict[str, Gate] = {}
        self.health = PollHealth(ctx)
        self.deletions = Guard(ctx, cfg, self.health)
        self._auth_failure: AuthFailed | None = None
        self.polls = 0  # complete listings, for tests and the demo
        self.http: httpx.AsyncClient | None = None
        self.tokens: Tokens | None = None
        self.client: ApiClient | None = None
        ctx.metrics.init_poller(self.name, token_grants=True)
        ctx.metrics.source_tokens_lost.labels(self.name)

    # ---------------------------------------------------------------- the pure part

    def renormalize(self, raw: bytes, context: Mapping[str, str], received_at: datetime) -> list[Event]:
        return [record_event(context.get("resource", ""), raw, source=self.name,
                             tenant=context.get("tenant", ""), previous=context.get("previous", ""),
                             received_at=received_at, zone=self.cfg.zone)]

    # ---------------------------------------------------------------- lifecycle

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        component = self.ctx.component
        component.set(State.STARTING, "starting")
        task_status.started()
        await self.deletions.restore()
        timeout = self.cfg.timeout.seconds
        async with http_client(self._ssl, timeout) as http:
            self.http = http
            self.tokens = Tokens(self.ctx, self.cfg, http)
            self.client = ApiClient(self.ctx, self._ssl, self.tokens, timeout=timeout,
                                    policy=self.cfg.backoff, max_tries=self.cfg.max_tries, describe=_problem)
            async with self.client:
                while True:
                    try:
                        await self._authorized()
                    except TokenLost as exc:  # it names the remedy itself
                        self.health.refused(str(exc), "until then")
                        await self._wait_for_credentials()
                    except AuthFailed as exc:
                        self.health.refused(f"{exc}; new credentials: `streamd auth {self.name}`",
                                            "until then")
                        await self._wait_for_credentials()

    async def _wait_for_credentials(self) -> None:
        assert self.tokens is not None
        deadline = anyio.current_time() + AUTH_RETRY
        while anyio.current_time() < deadline:
            await anyio.sleep(CREDENTIALS_CHECK)
            try:
                found = await self.tokens.load()
            except AuthFailed:
                continue  # still undecryptable: `streamd auth` has not stored new ones yet
            if found:
                log.info("source %s: new credentials found in the store", self.name)
                return

    async def _authorized(self) -> None:
        assert self.tokens is not None
        self._auth_failure = None
        if self.tokens.state is None and not await self.tokens.load():
            raise AuthFailed(f"no refresh token stored: run `streamd auth {self.name}`")
        await self.tokens.access_token()
        async with anyio.create_task_group() as tg:
            if self.cfg.tenants:
                for tenant in tenant_ids(self.cfg):
                    self._start_tenant(tg, tenant)
            else:
                tg.start_soon(self._discover, tg)
        if self._auth_failure is not None:
            raise self._auth_failure

    def _start_tenant(self, tg: anyio.abc.TaskGroup, tenant: str) -> None:
        self._gates[tenant] = Gate(self.cfg.concurrency)
        for resource in self.cfg.resources:
            tg.start_soon(self._guarded, tg, tenant, resource)

    async def _guarded(self, tg: anyio.abc.TaskGroup, tenant: str, resource: str) -> None:
        try:
            await self._poll_loop(tenant, resource)
        except AuthFailed as exc:
            # Fatal for this source (every loop shares the token): stop them all.
            self._auth_failure = exc
            tg.cancel_scope.cancel()

    async def _discover(self, tg: anyio.abc.TaskGroup) -> None:
        """No tenants configured: poll every administration the token reaches, and look for
        new ones every interval."""
        self._gates[""] = Gate(self.cfg.concurrency)
        where = "*/administrations"
        retries = Retries(self.cfg.backoff, metrics=self.ctx.metrics, component=self.ctx.component,
                          cap=self.cfg.interval.seconds, mark=lambda reason: self.health.fail(where, reason),
                          logger=log, level=logging.WARNING,
                          message="source %(name)s: %(reason)s; retry %(attempt)d in %(wait).1fs")
        while True:
            try:
                resp = await self._get("", f"{self.cfg.base_url}/administrations")
                assert resp is not None
                found = [str(a.id) for a in wire.administrations_decoder.decode(resp.content).data]
                retries.reset()
            except AuthFailed as exc:
                self._auth_failure = exc
                tg.cancel_scope.cancel()
                return
            except (PollFailed, *DECODE_ERRORS) as exc:
                await retries.pause(f"listing administrations: {exc}")
                continue
            self.health.recovered(where)
            for tenant in found:
                if tenant not in self._gates:
                    log.info("source %s: polling administration %s", self.name, tenant)
                    self._start_tenant(tg, tenant)
            if not found:
                self.health.fail(where, "the token reaches no administration")
            await anyio.sleep(self.cfg.interval.seconds)

    async def _poll_loop(self, tenant: str, resource: str) -> None:
        await poll_every(self.ctx, self.health, lambda: self._poll(tenant, resource),
                         interval=self.cfg.interval.seconds, policy=self.cfg.backoff,
                         where=f"{tenant}/{resource}", complete=self._polled)

    def _polled(self) -> None:
        self.polls += 1

    # ---------------------------------------------------------------- one listing

    async def _poll(self, tenant: str, resource: str) -> None:
        listing = _Listing(self, tenant, resource,
                           await self.ctx.entity_versions(tenant, wire.RESOURCES[resource]))
        url = f"{self.cfg.base_url}/{wire.LISTING_PATHS.get(resource, resource)}"
        size = self.cfg.page_size
        first = await self._page(tenant, url, {"page": "1", "pageSize": str(size), "orderby": "id"})
        await listing.take(first.data)
        count = first.meta.pageCount
        next_url = first.meta.nextPage
        if count and count > 1 and next_url:
            # The number of pages is known: fetch the rest concurrently (the tenant's gate
            # bounds how many), then follow nextPage past the last one if records were added.
            last: list[wire.Page] = []

            async def fetch(n: int) -> None:
                page = await self._page(tenant, url, {"page": str(n), "pageSize": str(size),
                                                      "orderby": "id"})
                await listing.take(page.data)
                if n == count:
                    last.append(page)

            await fan_out(range(2, count + 1), self.cfg.concurrency, fetch, prefer=AuthFailed)
            next_url = last[0].meta.nextPage if last else None
        # nextPage on (there is one past the pages counted when records were added), to a
        # bound well past what the count allows.
        await paginate(next_url or None, lambda u, params: self._page(tenant, u, params), _next_page,
                       lambda page: listing.take(page.data), base=self.cfg.base_url, what="nextPage",
                       limit=(first.meta.totalCount or 0) // size + 1000)
        await listing.finish(url)

    async def _page(self, tenant: str, url: str, params: dict[str, str] | None) -> wire.Page:
        resp = await self._get(tenant, url, params)
        assert resp is not None
        try:
            return wire.page_decoder.decode(resp.content)
        except DECODE_ERRORS as exc:  # nested too deeply for the decoder (RecursionError) too
            raise PollFailed(f"{url_path(url)}: not a list page ({exc})") from None

    # ---------------------------------------------------------------- HTTP

    async def _get(self, tenant: str, url: str, params: dict[str, str] | None = None, *,
                   missing_ok: bool = False) -> Response | None:
        """GET through the tenant's gate (a 429's Retry-After holds the whole tenant back);
        None for a 404 when `missing_ok`."""
        assert self.client is not None
        resp = await self.client.get(url, params, gate=self._gates[tenant],
                                     headers={wire.TENANT_HEADER: tenant} if tenant else None,
                                     passthrough=(404,) if missing_ok else (),
                                     what=f"tenant {tenant or '-'}")
        return None if resp.status_code == 404 else resp


class _Listing:
    """One full listing of one tenant's resource: the pure diff (`changes.Listing`) fed
    page by page, what it emits committed through a window, the records it no longer
    shows confirmed gone one by one."""

    def __init__(self, src: AsperionSource, tenant: str, resource: str, known: dict[str, str]) -> None:
        self.src = src
        self.ctx = src.ctx
        self.diff = Listing(source=src.name, tenant=tenant, resource=resource, known=known,
                            received_at=src.ctx.now(), zone=src.cfg.zone)
        self.window = CommitWindow(src.ctx.enqueue, INFLIGHT)

    async def take(self, records: list[msgspec.Raw] | list[bytes]) -> None:
        self.ctx.received(len(records))
        diff = self.diff
        page = diff.page(bytes(item) for item in records)
        events, states = page.events, page.states
        if page.differing:
            changed, restated = await changed_values(self.ctx, diff.tenant, diff.entity, page.differing,
                                                     diff.known)
            events += changed
            states += restated
        dls = [self.ctx.dead_letter(*refusal) for refusal in page.refused]
        if events or states or dls:
            await self.window.add(Batch(events=events, entity_states=states, dead_letters=dls))

    async def finish(self, url: str) -> None:
        """The listing is complete: records it did not see are gone, if the API agrees."""
        await self.window.settle()
        diff, tenant = self.diff, self.diff.tenant
        missing = diff.missing()
        gone: list[str] = []
        if missing:
            # Offset pagination skips a record when one before it is deleted mid-listing:
            # a record is only deleted once its own URL says 404.
            async def confirm(key: str) -> None:
                # The id as one path segment, whatever it holds ("a/b", "?", a line break).
                resp = await self.src._get(tenant, f"{url}/{quote(key, safe='')}", missing_ok=True)
                if resp is None:
                    gone.append(key)
                else:
                    await self.take([resp.content])  # its `_meta` is ignored like a list item's

            await fan_out(missing, self.src.cfg.concurrency, confirm, prefer=AuthFailed)
        await self.window.settle()
        now = self.ctx.now()
        delete, progress = await self.src.deletions.decide(tenant, diff.resource, len(gone),
                                                           diff.known_live, now)
        if not delete:
            gone = []
        data = (await self.ctx.reader.entity_data(self.src.name, tenant, diff.entity, gone)
                if gone else {})
        events, states = diff.deleted(gone, data, now)
        progress[f"poll.{tenant}.{diff.resource}"] = {
            "completed": format_time(now), "records": len(diff.seen), "deleted": len(events)}
        await self.ctx.submit(Batch(events=events, entity_states=states, progress=progress))


def _next_page(page: wire.Page) -> str | None:
    return page.meta.nextPage or None


def _problem(resp: Response) -> str:
    try:
        return wire.problem_decoder.decode(resp.content).describe()
    except DECODE_ERRORS:
        return (resp.text[:200].strip() or resp.reason_phrase) if resp.content else resp.reason_phrase
