"""One HORISEN poll's documents, diffed page by page against what the last poll left. The
source (`source`) fetches; this decides what each document is, commits page by page, and
at the end commits the progress `progress.advance` computes from what the poll saw (the
cursor moves only after a complete listing)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import msgspec

from ...errors import AuthFailed, PollFailed, Rejected, ReportsMissing
from ...model import Event, Invoice, TrafficLine, format_time
from ...model.fields import DECODE_ERRORS
from ...sources import SourceContext
from ...sources.changes import rejected_marker, same_content
from ...sources.polling import changed_values, fan_out
from ...sources.window import CommitWindow
from ...store import Batch, DeadLetter, EntityState
from .changes import invoice_event, party_event, restamped, same_document, unchanged
from .config import HorisenConfig
from .normalize import NormalizedDocument, document_key, normalize_document, normalize_traffic
from .payments import OpenSet, listed
from .progress import PROGRESS_KEY, Held, PollState, advance, parse_stamp

log = logging.getLogger("streamd.source.horisen")

# Pages whose commits are not yet confirmed, before the listing waits for the oldest.
INFLIGHT = 4


@dataclass
class Tally:
    """The distinct documents one listing saw, to hold against the API's `total`."""

    keys: set[str] = field(default_factory=set)
    unkeyed: set[bytes] = field(default_factory=set)  # without a usable id (dead-lettered)

    def __len__(self) -> int:
        return len(self.keys) + len(self.unkeyed)


class Poller(Protocol):
    """What a listing reads of the source that runs it (`source.HorisenSource`), named
    here so that this module does not import the source, which imports it."""

    name: str
    tenant: str
    ctx: SourceContext
    cfg: HorisenConfig

    async def traffic(self, key: str) -> list[bytes]:
        """An invoice's traffic reports, one raw row each; raises ReportsMissing on 404."""
        ...


class Listing:
    """One poll's documents, whichever listings of the poll they came from."""

    def __init__(self, src: Poller, state: PollState, now: datetime,
                 window: tuple[str, str]) -> None:
        self.src = src
        self.ctx = src.ctx
        self.state = state
        self.started = now
        self.received_at = now
        self.window = window  # documentDate from, to (YYYY-MM-DD)
        self.invoices: dict[str, str] = {}
        self.parties: dict[str, str] = {}
        self.seen: set[str] = set()
        self.taken: dict[str, bytes] = {}  # id -> a digest of the bytes this poll took
        self.unkeyed: set[bytes] = set()
        self.newest: datetime | None = None  # newest statusDt among documents settled
        self.paid_at = parse_stamp(state.paid_at) if state.paid_at else None
        self.open = OpenSet(state.open)
        self.undated_last = state.undated_last
        self.payments_timed = state.payments_timed
        self.held: dict[str, Held] = {}
        self.commits = CommitWindow(self.ctx.enqueue, INFLIGHT)

    async def load(self) -> None:
        self.invoices = await self.ctx.entity_versions(self.src.tenant, "invoice")
        self.parties = await self.ctx.entity_versions(self.src.tenant, "party")

    def _context(self, previous: str) -> dict[str, str]:
        return {"via": "poll", "tenant": self.src.tenant, "previous": previous}

    # ------------------------------------------------------------ payments

    def open_now(self) -> set[str]:
        """The documents of the window streamd counts as open."""
        return self.open.within(*self.window)

    def gone(self, listed_keys: set[str]) -> set[str]:
        """Documents streamd counts as open that a listing of every open one did not show."""
        return self.open_now() - listed_keys

    def paid_since(self) -> datetime | None:
        """From when a payment may be new to streamd: the newest stamp the last polls saw
        (HORISEN's clock, whichever it is), less `lookback`."""
        stamps = [parse_stamp(s) for s in (self.state.cursor, self.state.paid_at) if s]
        if not stamps:
            return None
        return max(stamps) - timedelta(seconds=self.src.cfg.lookback.seconds)

    # ------------------------------------------------------------ one page

    async def take(self, records: list[msgspec.Raw], tally: Tally | None = None) -> None:
        self.ctx.received(len(records))
        src, tenant = self.src, self.src.tenant
        tally = Tally() if tally is None else tally
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
                if raw not in self.unkeyed:  # once a poll, whichever listings show it
                    dls.append(self.ctx.dead_letter(exc.reason, raw, self._context("")))
                    self.unkeyed.add(raw)
                tally.unkeyed.add(raw)
                continue
            tally.keys.add(key)
            self.seen.add(key)
            digest = hashlib.blake2b(raw, digest_size=16).digest()
            if self.taken.get(key) == digest:
                continue  # listed again this poll (by another listing), as it was
            self.taken[key] = digest
            self._payment(key, raw)
            previous = self.invoices.get(key, "")
            if _dead_lettered(previous, raw):
                continue  # these very bytes are in dead letters already
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
            await self._updated(updated, events, states)
        if new:
            await self._with_reports(new, events, states, dls)
        if events or states or dls:
            await self.commits.add(Batch(events=events, entity_states=states, dead_letters=dls))

    def _payment(self, key: str, raw: bytes) -> None:
        doc = listed(raw)
        self.open.saw(key, doc)
        self.payments_timed = self.payments_timed or doc.timed
        # A stamp from the future (a bad one, a clock ahead) would let the probe take
        # payments for old: never past when this poll began.
        if doc.paid_at is not None and (self.paid_at is None or doc.paid_at > self.paid_at):
            self.paid_at = min(doc.paid_at, self.started)

    async def _updated(self, updated: list[tuple[NormalizedDocument, str]], events: list[Event],
                       states: list[EntityState]) -> None:
        """Documents whose compared hash is not the stored one's: an `updated`, unless the
        stored invoice is the same (a version an older streamd wrote): then only the
        version is brought up to date."""
        src, tenant = self.src, self.src.tenant
        stored = await self.ctx.reader.entity_data(src.name, tenant, "invoice", [n.key for n, _ in updated])
        for n, previous in updated:
            data = stored.get(n.key)
            if same_document(data, n.invoice):
                version = restamped(previous, n)
                states.append(EntityState(tenant, "invoice", n.key, version, data))
                self.invoices[n.key] = version
                self._settled(n)
                continue
            traffic, missing = _traffic_of(data)
            self._emit(invoice_event(n, source=src.name, tenant=tenant, previous=previous,
                                     traffic=traffic, traffic_missing=missing), n, events, states)

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
        """Wait until every page taken so far is committed."""
        await self.commits.settle()

    # ------------------------------------------------------------ the end

    async def finish(self, *, complete: bool, full: bool) -> None:
        await self.settle()
        progress = advance(self.state, started=self.started, complete=complete, full=full,
                           newest=self.newest, seen=self.seen, held=self.held,
                           open_kept=self.open.kept(self.window[0]), paid_at=self.paid_at,
                           undated_last=self.undated_last, payments_timed=self.payments_timed)
        self.ctx.metrics.source_held.labels(self.src.name).set(len(progress.held))
        await self.ctx.submit(Batch(progress={PROGRESS_KEY: msgspec.to_builtins(progress) | {
            "completed": format_time(self.ctx.now()), "documents": len(self.seen)}}))
        if not complete:
            raise PollFailed(f"the listing kept moving: saw {len(self.seen)} documents, fewer than "
                             "the API counted; the cursor stays")


def _traffic_of(data: bytes | None) -> tuple[list[TrafficLine] | None, bool]:
    """The traffic lines a stored invoice carries, and whether they were missing."""
    if not data:
        return None, False
    try:
        invoice = msgspec.json.decode(data, type=Invoice)
    except DECODE_ERRORS:
        return None, False
    return invoice.traffic, invoice.traffic_missing is True


def _dead_lettered(previous: str, raw: bytes) -> bool:
    """Whether `previous` is the marker of these bytes (`sources.changes.rejected_marker`): a
    listing that shows a document whatever its stamp (the payment check's) must not take
    it again."""
    return previous.startswith("rejected:") and \
        previous.split(":")[1] == hashlib.sha256(raw).hexdigest()[:16]

