"""What one HORISEN poll leaves for the next (`PollState`), and how a listing moves it:
the poller's cursor arithmetic, pure (invariant 4: no sockets, no clock; `now` comes in),
tested by data (tests/test_horisen_progress.py). `listing` feeds it what a poll saw;
`source` asks it which listing to run.

- A poll lists every document of the window (a *full* listing) when it has no cursor,
  has never listed in full, has no count of open documents yet while the payment check
  is on, or listed in full longer than `full_every` ago; otherwise only what changed
  since its cursor, `lookback` earlier (`changed_since`).
- The cursor is the newest `statusDt` among the documents a *complete* listing settled
  (`advance`); an incomplete one leaves it. It never passes the poll's start (a stamp
  from the future would hide every real change until then), and never passes an invoice
  held for its traffic reports, so the next listing shows that invoice again.
- A held invoice stays held until a listing settles it; one a complete listing did not
  show again (out of the window now) stays held, and so does every one after an
  incomplete listing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from ...model import format_time

log = logging.getLogger("streamd.source.horisen")

PROGRESS_KEY = "poll"
#: The format of `statusDt` in a filter [I] (UTC).
STAMP_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass
class Held:
    tries: int  # polls that answered 404 for its traffic reports
    since: str | None  # its statusDt (UTC, RFC 3339): the cursor does not pass it


@dataclass
class PollState:
    cursor: str | None = None  # newest statusDt a complete listing saw (UTC, RFC 3339)
    full_at: str | None = None  # when the last listing without the statusDt filter began
    held: dict[str, Held] = field(default_factory=dict)
    # The documents HORISEN counts as paymentStatus=open (id -> documentDate), as streamd
    # saw them; None before a full listing made it (`payments`).
    open: dict[str, str] | None = None
    paid_at: str | None = None  # newest paymentStatusDate seen (UTC, RFC 3339)
    # Whether the API sorts documents without a paymentStatusDate last (`payments`); None
    # until a page showed it.
    undated_last: bool | None = None
    # Whether paymentStatusDate has been seen with a time of day (a stamp, not a date).
    payments_timed: bool = False

    @classmethod
    def load(cls, value: Any) -> PollState:
        try:
            return msgspec.convert(value, cls) if value else cls()
        except msgspec.ValidationError:
            log.warning("horisen: unreadable poll progress %r; listing the whole window", value)
            return cls()


def parse_stamp(stamp: str) -> datetime:
    """A stamp this module wrote (RFC 3339; without an offset: UTC). Raises ValueError."""
    at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def full_due(state: PollState, now: datetime, *, full_every: timedelta, payment_check: bool) -> bool:
    """Whether this poll lists every document of the window, not only what changed."""
    return (state.cursor is None or state.full_at is None
            or (state.open is None and payment_check)
            or now - parse_stamp(state.full_at) >= full_every)


def changed_since(cursor: str, lookback: timedelta) -> str:
    """The `gte(statusDt)` of a listing from `cursor`: `lookback` earlier, for stamps that
    arrive late, in the filter's format (UTC)."""
    return (parse_stamp(cursor) - lookback).astimezone(UTC).strftime(STAMP_FORMAT)


def advance(state: PollState, *, started: datetime, complete: bool, full: bool,
            newest: datetime | None, seen: Set[str], held: Mapping[str, Held],
            open_kept: dict[str, str], paid_at: datetime | None, undated_last: bool | None,
            payments_timed: bool) -> PollState:
    """The state the next poll starts from, after a poll that began at `started`.

    `newest` is the newest `statusDt` among the documents this poll settled, `seen` every
    document it listed, `held` the invoices it held (their traffic reports did not come),
    `open_kept` its open documents still in the window, `paid_at` the newest payment it
    saw. What only a complete listing can say (the cursor, the open count, the newest
    payment, a full listing's time) is taken only from a complete one."""
    cursor = state.cursor
    if complete and newest is not None and (cursor is None or newest > parse_stamp(cursor)):
        cursor = format_time(newest)
    if cursor is not None and parse_stamp(cursor) > started:
        # A statusDt from the future (a bad stamp; a clock ahead): a cursor past now would
        # hide every real change until the next full listing. Listing from now instead
        # shows that document again, unchanged: nothing is emitted twice.
        cursor = format_time(started)
    # Held invoices this listing did not show again (out of the window now) stay held.
    kept = {k: v for k, v in state.held.items() if k not in seen} if complete else dict(state.held)
    kept.update(held)
    oldest = min((parse_stamp(h.since) for h in kept.values() if h.since), default=None)
    if oldest is not None and cursor is not None and oldest < parse_stamp(cursor):
        cursor = format_time(oldest)  # the next listing must show them again
    return PollState(
        cursor=cursor, held=kept,
        full_at=format_time(started) if full and complete else state.full_at,
        open=open_kept if complete else state.open,
        paid_at=format_time(paid_at) if complete and paid_at else state.paid_at,
        undated_last=undated_last, payments_timed=payments_timed)
