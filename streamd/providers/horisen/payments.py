"""Seeing a payment within one poll, whichever stamp HORISEN moves: the pure parts of the
poller's payment check (no sockets, no clock).

A payment may move `statusDt` (then the changed-since listing shows it), only
`paymentStatusDate`, or neither; nothing public says which. After the changed-since
listing, each poll asks for one page (`PROBE_SIZE`) of the open documents
(`paymentStatus=open`, documented) in the window, newest `paymentStatusDate` first:

- its `total` is how many documents HORISEN counts as open. streamd keeps the same
  count (`OpenSet`: every document it saw, and whether it was open then). A payment in
  full makes the document leave HORISEN's count whichever stamp moved: the counts
  differ.
- the page itself holds the open documents whose `paymentStatusDate` moved most
  recently: a part payment that moves that stamp is in it, when `probe_covers` can
  prove that no such document lies past the page.

When the counts agree and the page covers, nothing more is asked: two requests a poll.
Otherwise the poller lists `gte(paymentStatusDate)` (a payment that moved that stamp;
from the same moment as the probe's proof, or the day before it while HORISEN has only
shown that field as a date),
and if the counts still differ, every open document, then fetches each document it
knew as open and did not see again by its id (a payment that moved neither stamp).
A part payment that moves neither stamp and leaves the document open changes no count:
the daily full listing (`full_every`) shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from ...model.fields import DECODE_ERRORS
from . import wire

#: Open documents the probe asks for, newest `paymentStatusDate` first.
PROBE_SIZE = 25


@dataclass(frozen=True)
class Listed:
    """What the payment check reads of one listed document."""

    open: bool  # HORISEN counts it among `paymentStatus=open`
    day: str | None  # documentDate, YYYY-MM-DD; None when it cannot be read
    paid_at: datetime | None  # paymentStatusDate, UTC (a date is its midnight)
    timed: bool = False  # paymentStatusDate carries a time of day (a stamp, not a date)


def listed(raw: bytes) -> Listed:
    """The payment check's view of a document; a field it cannot read counts as absent."""
    try:
        doc = wire.listed_decoder.decode(raw)
    except DECODE_ERRORS:
        return Listed(False, None, None)
    status, paid = doc.paymentStatus, doc.paymentStatusDate
    at = stamp(paid)
    timed = at is not None and isinstance(paid, str) and len(paid.strip()) > len("YYYY-MM-DD")
    return Listed(isinstance(status, str) and status.strip().lower() == "open",
                  _day(doc.documentDate), at, timed)


def _day(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value.strip()[:10]).isoformat()
    except ValueError:
        return None


def stamp(value: object) -> datetime | None:
    """A date or a stamp (`YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS`, RFC 3339) as UTC; a date is
    its midnight, a stamp without a zone is UTC."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        at = datetime.fromisoformat(value.strip())
        # A stamp near the calendar's ends has no UTC (9999-12-31T23:59:59-05:00).
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def probe_covers(stamps: Sequence[datetime | None], *, full: bool, since: datetime | None,
                 undated_last: bool | None = None) -> bool:
    """Whether a page of open documents sorted by `paymentStatusDate`, newest first (`stamps`,
    in the page's order), holds every open document whose stamp is `since` or later.

    A page that is not full holds every open document. A full one proves it when its last
    stamp is older than `since`. Where an API puts documents without a stamp is not known
    (SQL puts NULLs first or last): a page ending in one proves it when a dated document
    came before it, or when the API is known to put the undated last (`undated_last`,
    from `undated_order`): then there is no dated one at all."""
    if not full:
        return True
    if not stamps or since is None:
        return False
    last = stamps[-1]
    if last is not None:
        return last < since
    return undated_last is True or any(s is not None for s in stamps)


def undated_order(stamps: Sequence[datetime | None]) -> bool | None:
    """What a page sorted newest first says of where the API puts undated documents: True
    (last), False (first), or None (the page does not show both)."""
    kinds = [s is None for s in stamps]
    if True in kinds and False in kinds:
        return kinds.index(True) > kinds.index(False)
    return None


class OpenSet:
    """The documents HORISEN counts as open, as far as streamd has seen them: id → documentDate."""

    def __init__(self, known: dict[str, str] | None) -> None:
        self.known: dict[str, str] = dict(known or {})

    def saw(self, key: str, doc: Listed) -> None:
        if doc.open and doc.day is not None:
            self.known[key] = doc.day
        else:
            self.known.pop(key, None)

    def forget(self, key: str) -> None:
        self.known.pop(key, None)

    def within(self, low: str, high: str) -> set[str]:
        """The open documents dated from `low` to `high` (YYYY-MM-DD), as the listing's
        `between(documentDate)` takes them."""
        return {k for k, day in self.known.items() if low <= day <= high}

    def kept(self, low: str) -> dict[str, str]:
        """What to remember: the documents not dated before the window (no listing shows
        those again, and none is counted)."""
        return {k: v for k, v in self.known.items() if v >= low}
