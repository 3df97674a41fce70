"""The HORISEN source: the seed's finance flow as a change feed.

Every `interval`:

    list documents-export: documentDate within `window` (and, after the first poll,
    statusDt since the last poll's newest minus `lookback`), page by page, sorted by id
       │   each page: normalize, diff against entity_state
       │     new invoice  ──► its traffic reports (`concurrency` in flight) ──► `created`
       │     any change to the document (`changes.NOISE` aside) ──► `updated`
       │     new or changed bizPartner ──► party `created` / `updated`
       │   commit the page's events + entity states together
       ▼
    the payment check (`payments`): one page of the open documents; when HORISEN's count
    of them is not streamd's, list gte(paymentStatusDate), then every open document and
    each one that left by its id
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
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import anyio
import httpx
from anyio.abc import TaskStatus

from ...errors import AuthFailed, PollFailed, ReportsMissing
from ...health import State
from ...model import Event
from ...model.fields import DECODE_ERRORS
from ...sources import SourceContext
from ...sources.polling import (
    ApiClient,
    Gate,
    PollHealth,
    Response,
    fan_out,
    http_client,
    poll_every,
    server_tls,
    url_path,
)
from . import wire
from .changes import renormalized
from .config import HorisenConfig
from .listing import Listing, Tally
from .normalize import traffic_rows
from .oauth import ClientToken
from .payments import PROBE_SIZE, listed, probe_covers, undated_order
from .progress import PROGRESS_KEY, STAMP_FORMAT, PollState, changed_since, full_due

log = logging.getLogger("streamd.source.horisen")

# A listing that missed documents (offset paging shifted by a change) is run again
# at once at most this often; then the cursor stays and the next poll repeats it.
RELISTS = 3
# After the credentials were refused, try again this long after (a fixed secret file
# may have been replaced; HORISEN may have had a glitch).
AUTH_RETRY = 300.0


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
                            zone=self.cfg.zone, reports=self.cfg.traffic_reports)

    # ---------------------------------------------------------------- lifecycle

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        component = self.ctx.component
        component.set(State.STARTING, "starting")
        task_status.started()
        timeout = self.cfg.timeout.seconds
        async with http_client(self._ssl, timeout) as http:
            self.http = http
            self.token = ClientToken(self.ctx, self.cfg, http)
            self.client = ApiClient(self.ctx, self._ssl, self.token, timeout=timeout, policy=self.cfg.backoff,
                                    max_tries=self.cfg.max_tries, describe=_error)
            async with self.client:
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
        full = full_due(state, now, full_every=timedelta(seconds=self.cfg.full_every.seconds),
                        payment_check=self.cfg.payment_check)
        today = now.astimezone(UTC).date()
        # +1 day: the platform's "today" may be ahead of UTC.
        low, high = today - timedelta(seconds=self.cfg.window.seconds), today + timedelta(days=1)
        base = {"between(documentDate)": f"{low},{high}", "sort": "id",
                "page_size": str(self.cfg.page_size)}
        params = dict(base)
        if self.cfg.payment_status:
            params["paymentStatus"] = self.cfg.payment_status
        if not full and state.cursor is not None:
            params["gte(statusDt)"] = changed_since(state.cursor,
                                                    timedelta(seconds=self.cfg.lookback.seconds))
        listing = Listing(self, state, now, (low.isoformat(), high.isoformat()))
        await listing.load()
        complete = await self._relist(params, listing, "listing")
        failed: PollFailed | None = None
        if complete and self.cfg.payment_check:
            try:
                if full:
                    # Every document of the window was listed: one streamd knew as open and
                    # did not see is gone from it (deleted, or filtered out by `payment_status`).
                    await self._look_up(listing.gone(listing.seen), listing)
                else:
                    await self._check_payments(base, listing)
            except PollFailed as exc:
                # What the listing saw stands (its cursor moves); the check runs again next poll.
                failed = exc
        await listing.finish(complete=complete, full=full)
        if failed is not None:
            raise PollFailed(f"the payment check failed ({failed}); it runs again at the next poll "
                             "(payment_check = false turns it off, if your HORISEN refuses it)")

    async def _relist(self, params: dict[str, str], listing: Listing, what: str,
                      tally: Tally | None = None) -> bool:
        """List every page, again while the listing saw fewer documents than the API counted
        (offset paging shifted by a change); whether it saw them all (into `tally`)."""
        tally = Tally() if tally is None else tally
        for attempt in range(1, RELISTS + 1):
            total = await self._list(params, listing, tally)
            if len(tally) >= total:
                return True
            log.info("source %s: %s saw %d of %d documents (one moved mid-listing); "
                     "listing again (%d/%d)", self.name, what, len(tally), total, attempt, RELISTS)
        return False

    async def _list(self, params: dict[str, str], listing: Listing, tally: Tally) -> int:
        """One pass over every page; returns the API's `total` on the last page fetched."""
        url = self.cfg.api_url.rstrip("/") + wire.DOCUMENTS_PATH
        first = await self._page(url, {**params, "page_number": "1"})
        await listing.take(first.data, tally)
        pages = first.meta.pagination.totalPages or 1
        totals = [first.meta.pagination.total or len(first.data)]

        async def fetch(n: int) -> None:
            page = await self._page(url, {**params, "page_number": str(n)})
            await listing.take(page.data, tally)
            if page.meta.pagination.total is not None:
                totals.append(page.meta.pagination.total)

        await fan_out(range(2, pages + 1), self.cfg.concurrency, fetch, prefer=AuthFailed)
        await listing.settle()
        return max(totals)

    # ---------------------------------------------------------------- payments

    async def _check_payments(self, base: dict[str, str], listing: Listing) -> None:
        """See every payment of this interval, whichever stamp HORISEN moved (`payments`)."""
        url = self.cfg.api_url.rstrip("/") + wire.DOCUMENTS_PATH
        window = {"between(documentDate)": base["between(documentDate)"], "paymentStatus": "open"}
        since = listing.paid_since()
        probe = await self._page(url, {**window, "sort": "-paymentStatusDate",
                                       "page_size": str(PROBE_SIZE), "page_number": "1"})
        await listing.take(probe.data)
        await listing.settle()
        counted = probe.meta.pagination.total
        stamps = [listed(bytes(raw)).paid_at for raw in probe.data]
        order = undated_order(stamps)
        if order is not None:
            listing.undated_last = order
        covered = probe_covers(stamps, full=len(probe.data) >= PROBE_SIZE, since=since,
                               undated_last=listing.undated_last)
        known = len(listing.open_now())
        if covered and counted == known:
            return
        start = since or listing.started - timedelta(seconds=self.cfg.lookback.seconds)
        # A date (or a stamp in another zone) may be a day behind: from the day before then.
        bound = start.astimezone(UTC).strftime(STAMP_FORMAT) if listing.payments_timed else \
            (start - timedelta(days=1)).date().isoformat()
        log.info("source %s: HORISEN counts %s open documents, streamd %d%s: listing payments since %s",
                 self.name, counted, known, "" if covered else " (and more moved than one page shows)", bound)
        complete = await self._relist({**base, "gte(paymentStatusDate)": bound}, listing,
                                      "the payments listing")
        known = len(listing.open_now())
        if complete and counted == known:
            return
        log.info("source %s: HORISEN counts %s open documents, streamd %d: listing every open one",
                 self.name, counted, known)
        tally = Tally()
        if await self._relist({**base, "paymentStatus": "open"}, listing, "the open listing", tally):
            await self._look_up(listing.gone(tally.keys), listing)

    async def _look_up(self, keys: set[str], listing: Listing) -> None:
        """Fetch, by id, each document streamd knew as open and did not see open again."""
        if not keys:
            return
        log.info("source %s: %d documents known as open were not listed open; fetching each by id",
                 self.name, len(keys))
        url = self.cfg.api_url.rstrip("/") + wire.DOCUMENTS_PATH

        async def fetch(key: str) -> None:
            try:
                page = await self._page(url, {"id": key, "page_size": "1", "page_number": "1"})
            except PollFailed as exc:
                # Not this poll's failure: the next full listing sees the document again.
                log.warning("source %s: document %s cannot be fetched by its id (%s); its payment "
                            "shows at the next full listing", self.name, key, exc)
                listing.open.forget(key)
                return
            found = Tally()
            await listing.take(page.data, found)
            if key not in found.keys:
                log.info("source %s: document %s is no longer listed (deleted at HORISEN?)",
                         self.name, key)
                listing.open.forget(key)

        await fan_out(sorted(keys), self.cfg.concurrency, fetch, prefer=AuthFailed)
        await listing.settle()

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

def _error(resp: Response) -> str:
    try:
        return wire.error_decoder.decode(resp.content).describe()
    except DECODE_ERRORS:
        return (resp.text[:200].strip() or resp.reason_phrase) if resp.content else resp.reason_phrase
