"""The HORISEN source: the seed's finance flow as a change feed.

Every `interval`:

    list documents-export: documentDate within `window` (and, after the first poll,
    statusDt since the last poll's newest minus `lookback`), page by page, sorted by id
       │   each page: normalize, diff against entity_state
       │     new invoice  ──► its traffic reports (`concurrency` in flight) ──► `created`
       │     watched fields changed (status, paymentStatus, totalUnpaid) ──► `updated`
       │     new or changed bizPartner ──► party `created` / `updated`
       │   commit the page's events + entity states together
       ▼
    listing complete (every document the API counted was seen) ──► progress: cursor

An invoice whose traffic reports cannot be fetched (404 INVOICE_NOTFOUND, or HORISEN
failing past `max_tries`) is not emitted half-built: it is held, the cursor does not
pass it, and the next poll tries again. After `report_tries` polls of 404 it goes to
dead letters with its document, so an invoice HORISEN never reports on is not lost
silently.

A listing is paged by offset; a document changing mid-listing can shift another past
a page boundary. So a listing that saw fewer documents than the API's `total` is run
again at once (the diff makes the repeat free), and the cursor only moves after a
complete one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import msgspec
from anyio.abc import TaskStatus

from ...errors import AuthFailed, PollFailed, Rejected, ReportsMissing
from ...health import State
from ...model import Event, Invoice, TrafficLine, format_time
from ...model.fields import DECODE_ERRORS
from ...sources import SourceContext
from ...sources.changes import rejected_marker, same_content
from ...sources.polling import (
    ApiClient,
    Gate,
    PollHealth,
    changed_values,
    fan_out,
    http_client,
    poll_every,
    server_tls,
    url_path,
)
from ...store import Batch, DeadLetter, EntityState, Pending
from . import wire
from .changes import invoice_event, party_event, renormalized, unchanged
from .config import HorisenConfig
from .normalize import NormalizedDocument, document_key, normalize_document, normalize_traffic, traffic_rows
from .oauth import ClientToken

log = logging.getLogger("streamd.source.horisen")

PROGRESS_KEY = "poll"
#: The format of `statusDt` in a filter [I] (UTC).
STAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
# Pages whose commits are not yet confirmed, before the listing waits for the oldest.
INFLIGHT = 4
# A listing that missed documents (offset paging shifted by a change) is run again
# at once at most this often; then the cursor stays and the next poll repeats it.
RELISTS = 3
# After the credentials were refused, try again this long after (a fixed secret file
# may have been replaced; HORISEN may have had a glitch).
AUTH_RETRY = 300.0


@dataclass
class Held:
    tries: int  # polls that answered 404 for its traffic reports
    since: str | None  # its statusDt (UTC, RFC 3339): the cursor does not pass it


@dataclass
class PollState:
    cursor: str | None = None  # newest statusDt a complete listing saw (UTC, RFC 3339)
    full_at: str | None = None  # when the last listing without the statusDt filter began
    held: dict[str, Held] = field(default_factory=dict)

    @classmethod
    def load(cls, value: Any) -> PollState:
        try:
            return msgspec.convert(value, cls) if value else cls()
        except msgspec.ValidationError:
            log.warning("horisen: unreadable poll progress %r; listing the whole window", value)
            return cls()


class HorisenSource:
    def __init__(self, ctx: SourceContext, cfg: HorisenConfig) -> None:
        self.name = ctx.name
        self.ctx = ctx
        self.cfg = cfg
        self.tenant = cfg.feed_tenant
        self._ssl = server_tls(cfg.ca)
        self._gate = Gate(cfg.concurrency)
        self.health = PollHealth(ctx)
        self.polls = 0  # complete polls, for tests and the demo
        self.http: httpx.AsyncClient | None = None
        self.token: ClientToken | None = None
        self.client: ApiClient | None = None
        ctx.metrics.init_poller(self.name, token_grants=True)
        ctx.metrics.source_held.labels(self.name).set(0)

    def renormalize(self, raw: bytes, context: Mapping[str, str], received_at: datetime) -> list[Event]:
        return renormalized(raw, source=self.name, tenant=context.get("tenant", self.tenant),
                            previous=context.get("previous", ""), received_at=received_at,
                            zone=self.cfg.zone)

    # ---------------------------------------------------------------- lifecycle

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        component = self.ctx.component
        component.set(State.STARTING, "starting")
        task_status.started()
        async with http_client(self._ssl, self.cfg.timeout.seconds) as http:
            self.http = http
            self.token = ClientToken(self.ctx, self.cfg, http)
            self.client = ApiClient(self.ctx, http, self.token, policy=self.cfg.backoff,
                                    max_tries=self.cfg.max_tries, describe=_error)
            while True:
                try:
                    await self._poll_loop()
                except AuthFailed as exc:
                    self.health.refused(str(exc), f"tried again in {AUTH_RETRY:.0f}s")
                    await anyio.sleep(AUTH_RETRY)

    async def _poll_loop(self) -> None:
        await poll_every(self.ctx, self.health, self.poll, interval=self.cfg.interval.seconds,
                         policy=self.cfg.backoff, complete=self._polled)

    def _polled(self) -> None:
        self.polls += 1

    # ---------------------------------------------------------------- one poll

    async def poll(self) -> None:
        state = PollState.load((await self.ctx.progress()).get(PROGRESS_KEY))
        now = self.ctx.now()
        full = (state.cursor is None or state.full_at is None
                or now - _parse(state.full_at) >= timedelta(seconds=self.cfg.full_every.seconds))
        today = now.astimezone(UTC).date()
        # +1 day: the platform's "today" may be ahead of UTC.
        params = {"between(documentDate)": f"{today - timedelta(seconds=self.cfg.window.seconds)},"
                                           f"{today + timedelta(days=1)}",
                  "sort": "id", "page_size": str(self.cfg.page_size)}
        if self.cfg.payment_status:
            params["paymentStatus"] = self.cfg.payment_status
        if not full and state.cursor is not None:
            since = _parse(state.cursor) - timedelta(seconds=self.cfg.lookback.seconds)
            params["gte(statusDt)"] = since.astimezone(UTC).strftime(STAMP_FORMAT)
        listing = _Listing(self, state, now)
        await listing.load()
        for attempt in range(1, RELISTS + 1):
            total = await self._list(params, listing)
            if listing.count >= total:
                break
            log.info("source %s: listing saw %d of %d documents (one moved mid-listing); "
                     "listing again (%d/%d)", self.name, listing.count, total, attempt, RELISTS)
        await listing.finish(complete=listing.count >= total, full=full)

    async def _list(self, params: dict[str, str], listing: _Listing) -> int:
        """One pass over every page; returns the API's `total` on the last page fetched."""
        url = self.cfg.api_url.rstrip("/") + wire.DOCUMENTS_PATH
        first = await self._page(url, {**params, "page_number": "1"})
        await listing.take(first.data)
        pages = first.meta.pagination.totalPages or 1
        totals = [first.meta.pagination.total or len(first.data)]

        async def fetch(n: int) -> None:
            page = await self._page(url, {**params, "page_number": str(n)})
            await listing.take(page.data)
            if page.meta.pagination.total is not None:
                totals.append(page.meta.pagination.total)

        await fan_out(range(2, pages + 1), self.cfg.concurrency, fetch, prefer=AuthFailed)
        await listing.settle()
        return max(totals)

    async def _page(self, url: str, params: dict[str, str]) -> wire.Page:
        assert self.client is not None
        resp = await self.client.get(url, params, gate=self._gate)
        try:
            return wire.page_decoder.decode(resp.content)
        except DECODE_ERRORS as exc:  # nested too deeply for the decoder (RecursionError) too
            raise PollFailed(f"{url_path(url)}: not a documents page ({exc})") from None

    async def traffic(self, key: str) -> list[bytes]:
        assert self.client is not None
        # The id as one path segment, whatever it holds ("a/b", "?", a line break).
        path = self.cfg.traffic_reports_path.format(invoice_id=quote(key, safe=""))
        url = self.cfg.api_url.rstrip("/") + path
        resp = await self.client.get(url, gate=self._gate, passthrough=(404,))
        if resp.status_code == 404:
            raise ReportsMissing(f"{url_path(url)}: HTTP 404 {_error(resp)}")
        return traffic_rows(resp.content)

    # ---------------------------------------------------------------- HTTP

class _Listing:
    """One poll's documents, diffed page by page against what the last poll left."""

    def __init__(self, src: HorisenSource, state: PollState, now: datetime) -> None:
        self.src = src
        self.ctx = src.ctx
        self.state = state
        self.started = now
        self.received_at = now
        self.invoices: dict[str, str] = {}
        self.parties: dict[str, str] = {}
        self.seen: set[str] = set()
        self.unkeyed: set[bytes] = set()  # documents without a usable id (dead-lettered)
        self.newest: datetime | None = None  # newest statusDt among documents settled
        self.held: dict[str, Held] = {}
        self.pending: list[Pending] = []

    @property
    def count(self) -> int:
        """Distinct documents seen, to hold against the API's `total`."""
        return len(self.seen) + len(self.unkeyed)

    async def load(self) -> None:
        self.invoices = await self.ctx.entity_versions(self.src.tenant, "invoice")
        self.parties = await self.ctx.entity_versions(self.src.tenant, "party")

    def _context(self, previous: str) -> dict[str, str]:
        return {"via": "poll", "tenant": self.src.tenant, "previous": previous}

    async def take(self, records: list[msgspec.Raw]) -> None:
        self.ctx.received(len(records))
        src, tenant = self.src, self.src.tenant
        events: list[Event] = []
        states: list[EntityState] = []
        dls: list[DeadLetter] = []
        new: list[tuple[bytes, NormalizedDocument]] = []
        updated: list[tuple[NormalizedDocument, str]] = []
        parties: dict[str, Event] = {}  # emitted before, under another digest
        for item in records:
            raw = bytes(item)
            try:
                key = document_key(raw)
            except Rejected as exc:
                dls.append(self.ctx.dead_letter(exc.reason, raw, self._context("")))
                self.unkeyed.add(raw)
                continue
            self.seen.add(key)
            previous = self.invoices.get(key, "")
            try:
                n = normalize_document(raw, None, received_at=self.received_at, zone=src.cfg.zone)
            except Rejected as exc:
                marker = rejected_marker(raw, previous)
                if marker != previous:  # not the same bad document as last time
                    dls.append(self.ctx.dead_letter(exc.reason, raw, self._context(previous)))
                    states.append(EntityState(tenant, "invoice", key, marker))
                    self.invoices[key] = marker
                continue
            self._party(n, events, states, parties)
            if unchanged(previous, n):
                self._settled(n)
            elif previous.startswith("poll:"):
                updated.append((n, previous))
            elif src.cfg.traffic_reports:
                new.append((raw, n))
            else:
                self._emit(invoice_event(n, source=src.name, tenant=tenant, previous=previous),
                           n, events, states)
        if parties:
            changed, restated = await changed_values(self.ctx, tenant, "party", list(parties.values()),
                                                     self.parties)
            events += changed
            states += restated
        if updated:
            keys = [n.key for n, _ in updated]
            stored = await self.ctx.reader.entity_data(src.name, tenant, "invoice", keys)
            for n, previous in updated:
                self._emit(invoice_event(n, source=src.name, tenant=tenant, previous=previous,
                                         traffic=_traffic_of(stored.get(n.key))), n, events, states)
        if new:
            await self._with_reports(new, events, states, dls)
        if events or states or dls:
            self.pending.append(await self.ctx.enqueue(
                Batch(events=events, entity_states=states, dead_letters=dls)))
            while len(self.pending) > INFLIGHT or (self.pending and self.pending[0].done):
                await self.pending.pop(0).committed()

    def _party(self, n: NormalizedDocument, events: list[Event], states: list[EntityState],
               differing: dict[str, Event]) -> None:
        if n.party is None:
            return
        key = n.party[0]
        previous = self.parties.get(key, "")
        ev = party_event(n, source=self.src.name, tenant=self.src.tenant, previous=previous)
        if ev is None or same_content(previous, ev.version):
            return
        if previous.startswith("poll:"):  # `changed_values` decides, from the stored state
            differing[key] = ev
            return
        events.append(ev)
        states.append(EntityState(self.src.tenant, "party", key, ev.version, ev.data))
        self.parties[key] = ev.version

    def _emit(self, ev: Event, n: NormalizedDocument, events: list[Event], states: list[EntityState]) -> None:
        events.append(ev)
        states.append(EntityState(self.src.tenant, "invoice", n.key, ev.version, ev.data))
        self.invoices[n.key] = ev.version
        self._settled(n)

    def _settled(self, n: NormalizedDocument) -> None:
        self.held.pop(n.key, None)
        at = n.invoice.updated_at
        if at is not None and (self.newest is None or at > self.newest):
            self.newest = at

    async def _with_reports(self, new: list[tuple[bytes, NormalizedDocument]], events: list[Event],
                            states: list[EntityState], dls: list[DeadLetter]) -> None:
        """Fetch the new invoices' traffic reports concurrently; emit those that came."""
        src, tenant = self.src, self.src.tenant
        results: dict[str, list[TrafficLine] | BaseException] = {}

        async def fetch(item: tuple[bytes, NormalizedDocument]) -> None:
            key = item[1].key
            try:
                rows = await src.traffic(key)
                results[key] = [normalize_traffic(row) for row in rows]
            except (ReportsMissing, PollFailed, Rejected) as exc:
                results[key] = exc

        await fan_out(new, src.cfg.concurrency, fetch, prefer=AuthFailed)
        for raw, n in new:
            got = results[n.key]
            previous = self.invoices.get(n.key, "")
            if not isinstance(got, BaseException):
                self._emit(invoice_event(n, source=src.name, tenant=tenant, previous=previous,
                                         traffic=got), n, events, states)
                continue
            if isinstance(got, Rejected):
                # The reports came but do not normalize: that is the document's fault too.
                marker = rejected_marker(raw, previous)
                if marker != previous:
                    dls.append(self.ctx.dead_letter(f"traffic reports: {got.reason}", raw,
                                                    self._context(previous)))
                    states.append(EntityState(tenant, "invoice", n.key, marker))
                    self.invoices[n.key] = marker
                continue
            before = self.state.held.get(n.key)
            tries = (before.tries if before else 0) + (1 if isinstance(got, ReportsMissing) else 0)
            if tries >= src.cfg.report_tries:
                log.error("source %s: invoice %s: no traffic reports after %d polls (%s); moved to "
                          "dead letters", src.name, n.key, tries, got)
                dls.append(self.ctx.dead_letter(
                    f"traffic reports not found after {tries} polls: {got}", raw,
                    {**self._context(previous), "invoice": n.key}))
                states.append(EntityState(tenant, "invoice", n.key, rejected_marker(raw, previous)))
                self.invoices[n.key] = rejected_marker(raw, previous)
                continue
            log.warning("source %s: invoice %s held until the next poll: traffic reports: %s",
                        src.name, n.key, got)
            at = n.invoice.updated_at
            self.held[n.key] = Held(tries, format_time(at) if at else None)

    async def settle(self) -> None:
        for pending in self.pending:
            await pending.committed()
        self.pending = []

    async def finish(self, *, complete: bool, full: bool) -> None:
        await self.settle()
        state = self.state
        cursor = state.cursor
        if complete and self.newest is not None and (cursor is None or self.newest > _parse(cursor)):
            cursor = format_time(self.newest)
        if cursor is not None and _parse(cursor) > self.started:
            # A statusDt from the future (a bad stamp; a clock ahead): a cursor past now would
            # hide every real change until the next full listing. Listing from now instead
            # shows that document again, unchanged: nothing is emitted twice.
            cursor = format_time(self.started)
        # Held invoices this listing did not show again (out of the window now) stay held.
        held = {k: v for k, v in state.held.items() if k not in self.seen} if complete else dict(state.held)
        held.update(self.held)
        oldest = min((_parse(h.since) for h in held.values() if h.since), default=None)
        if oldest is not None and cursor is not None and oldest < _parse(cursor):
            cursor = format_time(oldest)  # the next listing must show them again
        progress = PollState(cursor=cursor, held=held,
                             full_at=format_time(self.started) if full and complete else state.full_at)
        self.ctx.metrics.source_held.labels(self.src.name).set(len(held))
        await self.ctx.submit(Batch(progress={PROGRESS_KEY: msgspec.to_builtins(progress) | {
            "completed": format_time(self.ctx.now()), "documents": len(self.seen)}}))
        if not complete:
            raise PollFailed(f"the listing kept moving: saw {len(self.seen)} documents, fewer than "
                             "the API counted; the cursor stays")


def _traffic_of(data: bytes | None) -> list[TrafficLine] | None:
    if not data:
        return None
    try:
        return msgspec.json.decode(data, type=Invoice).traffic
    except DECODE_ERRORS:
        return None


def _parse(stamp: str) -> datetime:
    at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _error(resp: httpx.Response) -> str:
    try:
        return wire.error_decoder.decode(resp.content).describe()
    except DECODE_ERRORS:
        return (resp.text[:200].strip() or resp.reason_phrase) if resp.content else resp.reason_phrase
