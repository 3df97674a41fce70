"""The Connec! poller's pure half: a changed-since listing page by page, and where its
cursor moves. No I/O, no clock (invariant 4): `source` fetches the pages (`paginate`),
feeds them here, and commits the events as they come and the cursor with the last page.

The cursor is the newest `updated_at` a listing saw; the next listing asks for what
changed after it minus `lookback`. Offset paging under change skips entities: one
updated mid-listing moves to the end, and every entity after its old place moves up
one, so the first of a later page is never shown. A listing that saw fewer entities
than the API counted is incomplete: its cursor moves only to one second (the stamps'
precision) before the newest stamp of its first page, which was read whole, so whatever
was skipped is listed again. A cursor never passes the listing's start: a stamp from the
future (a bad one; a clock ahead) would hide every real change until then.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import msgspec

from ...errors import Rejected
from ...model import Event, format_time
from ...sources.changes import Refusal
from . import wire
from .normalize import entity_event

#: The precision of `updated_at`: a stamp one unit before another is strictly older.
STAMP_UNIT = timedelta(seconds=1)


def parse_stamp(stamp: str) -> datetime:
    """An `updated_at` as an instant (no offset: UTC). Raises ValueError."""
    at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)


def stamp_of(raw: bytes) -> str | None:
    """The entity's `updated_at` as sent, None when it has none that reads as a stamp."""
    try:
        stamp = wire.ids_decoder.decode(raw).updated_at
        if stamp is not None:
            parse_stamp(stamp)
        return stamp
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return None


def since_filter(cursor: str | None, lookback: timedelta) -> str | None:
    """The `$filter` of a listing from `cursor` (its `lookback` earlier, for stamps that
    arrive late); None, everything, for the first listing."""
    if cursor is None:
        return None
    since = parse_stamp(cursor) - lookback
    return f"updated_at gt '{since.strftime('%Y-%m-%dT%H:%M:%SZ')}'"


class Listing:
    """One changed-since listing of one group's collection, from `cursor`."""

    def __init__(self, *, source: str, group: str, collection: str, cursor: str | None,
                 received_at: datetime, zone: tzinfo = UTC) -> None:
        self.source = source
        self.group = group
        self.collection = collection
        self.cursor = cursor  # where it started
        self.received_at = received_at
        self.zone = zone
        self.seen: set[str] = set()  # entity keys (a refused entity: a prefix of its bytes' hex)
        self.newest = cursor  # the newest stamp seen so far
        self.first_page: str | None = None  # `newest` once the first page was read
        self.total: int | None = None  # the API's count, from the latest page that gave one
        self.pages = 0

    def page(self, items: Iterable[bytes], total: int | None) -> tuple[list[Event], list[Refusal]]:
        """One page's entities (each its raw JSON) and the API's count on it: their events,
        and the entities refused."""
        events: list[Event] = []
        refused: list[Refusal] = []
        for raw in items:
            try:
                ev = entity_event(self.collection, raw, source=self.source, tenant=self.group,
                                  received_at=self.received_at, zone=self.zone)
            except Rejected as exc:
                self.seen.add(raw.hex()[:64])
                refused.append(Refusal(exc.reason, raw, {
                    "via": "poll", "tenant": self.group, "collection": self.collection}))
                continue
            self.seen.add(ev.key)
            stamp = stamp_of(raw)
            if stamp is not None and (self.newest is None or parse_stamp(stamp) > parse_stamp(self.newest)):
                self.newest = stamp
            events.append(ev)
        if total is not None:
            self.total = total
        self.pages += 1
        if self.pages == 1:
            self.first_page = self.newest
        return events, refused

    @property
    def complete(self) -> bool:
        """Whether the listing saw every entity the API counted (or it counted none)."""
        return self.total is None or len(self.seen) >= self.total

    def next_cursor(self) -> str | None:
        """Where the next listing starts: the newest stamp seen when the listing is complete,
        else just before its first page's newest (never back past where it started); never
        past the listing's start."""
        newest = self.newest
        if not self.complete:
            first, cursor = self.first_page, self.cursor
            safe = format_time(parse_stamp(first) - STAMP_UNIT) if first else None
            newest = safe if safe and (cursor is None or parse_stamp(safe) > parse_stamp(cursor)) else cursor
        if newest is not None and parse_stamp(newest) > self.received_at:
            # A cursor past now would list no real change again. From now instead, that
            # entity comes again, unchanged: the same id, a counted duplicate.
            newest = format_time(self.received_at)
        return newest

    def progress(self) -> dict[str, Any]:
        """The progress to commit with the listing's last page."""
        return {"cursor": self.next_cursor(), "completed": format_time(self.received_at),
                "entities": len(self.seen)}
