"""The HORISEN poller's cursor arithmetic (`progress`), tested by data: the state a poll
started from and what it saw in, the state the next poll starts from out. No server, no
store, no clock."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streamd.providers.horisen.progress import Held, PollState, advance, changed_since, full_due

STARTED = datetime(2026, 3, 1, 12, tzinfo=UTC)


def at(hh_mm: str) -> datetime:
    h, m = hh_mm.split(":")
    return STARTED.replace(hour=int(h), minute=int(m))


def z(hh_mm: str) -> str:
    return f"2026-03-01T{hh_mm}:00.000Z"


def after(state: PollState, *, complete: bool = True, full: bool = False,
          newest: datetime | None = None, seen: frozenset[str] = frozenset(),
          held: Mapping[str, Held] | None = None, open_kept: dict[str, str] | None = None,
          paid_at: datetime | None = None) -> PollState:
    return advance(state, started=STARTED, complete=complete, full=full, newest=newest, seen=seen,
                   held=held or {}, open_kept=open_kept or {}, paid_at=paid_at,
                   undated_last=None, payments_timed=False)


# the cursor before | what the poll settled, complete | held before, held now | the cursor after
CURSORS: dict[str, tuple[str | None, datetime | None, bool, dict[str, Held], dict[str, Held], str | None]] = {
    "the first complete listing moves it to the newest statusDt settled": (
        None, at("10:00"), True, {}, {}, z("10:00")),
    "a newer one moves it on": (z("09:00"), at("10:00"), True, {}, {}, z("10:00")),
    "an older one (the lookback's overlap) never moves it back": (
        z("11:00"), at("10:00"), True, {}, {}, z("11:00")),
    "a listing that settled nothing leaves it": (z("09:00"), None, True, {}, {}, z("09:00")),
    "an incomplete listing leaves it, whatever it saw": (
        z("09:00"), at("11:00"), False, {}, {}, z("09:00")),
    "an incomplete first listing leaves none": (None, at("11:00"), False, {}, {}, None),
    "a statusDt from the future moves it to the poll's start, no further": (
        z("09:00"), STARTED + timedelta(days=2), True, {}, {}, z("12:00")),
    "a cursor already past the start (an older streamd's) comes back to it": (
        "2026-03-05T00:00:00.000Z", None, True, {}, {}, z("12:00")),
    "an invoice held now keeps it at that invoice's statusDt": (
        z("09:00"), at("11:00"), True, {}, {"7": Held(1, z("10:00"))}, z("10:00")),
    "an invoice held before and not listed again keeps it there too": (
        z("09:00"), at("11:00"), True, {"7": Held(1, z("08:30"))}, {}, z("08:30")),
    "a held invoice without a statusDt does not hold it": (
        z("09:00"), at("11:00"), True, {}, {"7": Held(1, None)}, z("11:00")),
}


@pytest.mark.parametrize(("cursor", "newest", "complete", "held_before", "held_now", "expected"),
                         list(CURSORS.values()), ids=list(CURSORS))
def test_where_the_cursor_moves(cursor: str | None, newest: datetime | None, complete: bool,
                                held_before: dict[str, Held], held_now: dict[str, Held],
                                expected: str | None) -> None:
    state = PollState(cursor=cursor, held=held_before)
    assert after(state, complete=complete, newest=newest, held=held_now).cursor == expected


def test_a_held_invoice_is_released_only_by_a_complete_listing_that_settled_it() -> None:
    before = {"settled": Held(1, z("08:00")), "gone": Held(2, z("08:10")), "again": Held(1, z("08:20"))}
    state = PollState(cursor=z("09:00"), held=before)
    now = {"again": Held(2, z("08:20"))}  # listed again and still without reports
    complete = after(state, newest=at("10:00"), seen=frozenset({"settled", "again"}), held=now)
    assert complete.held == {"gone": before["gone"], "again": now["again"]}
    incomplete = after(state, complete=False, newest=at("10:00"), seen=frozenset({"settled", "again"}),
                       held=now)
    assert incomplete.held == {**before, "again": now["again"]}


def test_what_only_a_complete_listing_can_say_is_taken_only_from_one() -> None:
    state = PollState(cursor=z("09:00"), full_at=z("06:00"), open={"1": "2026-02-01"}, paid_at=z("07:00"))
    seen: dict[str, Any] = {"full": True, "open_kept": {"2": "2026-02-20"}, "paid_at": at("10:30")}
    complete = after(state, **seen)
    assert (complete.full_at, complete.open, complete.paid_at) == (z("12:00"), {"2": "2026-02-20"},
                                                                   z("10:30"))
    incomplete = after(state, complete=False, **seen)
    assert (incomplete.full_at, incomplete.open, incomplete.paid_at) == (z("06:00"), {"1": "2026-02-01"},
                                                                         z("07:00"))
    changed_only = after(state, **{**seen, "full": False})
    assert changed_only.full_at == z("06:00"), "a changed-since listing is no full one"


DAY = timedelta(days=1)
FULL: dict[str, tuple[PollState, bool, bool]] = {
    "no cursor yet": (PollState(full_at=z("11:00"), open={}), True, True),
    "never listed in full": (PollState(cursor=z("11:00"), open={}), True, True),
    "no count of open documents while the payment check is on": (
        PollState(cursor=z("11:00"), full_at=z("11:00")), True, True),
    "no count of open documents, the payment check off": (
        PollState(cursor=z("11:00"), full_at=z("11:00")), False, False),
    "listed in full within full_every": (
        PollState(cursor=z("11:00"), full_at="2026-02-28T12:00:01.000Z", open={}), True, False),
    "listed in full full_every ago": (
        PollState(cursor=z("11:00"), full_at="2026-02-28T12:00:00.000Z", open={}), True, True),
}


@pytest.mark.parametrize(("state", "payment_check", "expected"), list(FULL.values()), ids=list(FULL))
def test_when_a_poll_lists_the_whole_window(state: PollState, payment_check: bool, expected: bool) -> None:
    assert full_due(state, STARTED, full_every=DAY, payment_check=payment_check) is expected


@pytest.mark.parametrize(("cursor", "expected"), [
    (z("12:00"), "2026-03-01 11:50:00"),
    ("2026-03-01T00:05:00+02:00", "2026-02-28 21:55:00"),  # in the filter's UTC, across midnight
    ("2026-03-01T12:00:00", "2026-03-01 11:50:00"),  # no offset: UTC
])
def test_a_changed_since_listing_starts_lookback_before_the_cursor(cursor: str, expected: str) -> None:
    assert changed_since(cursor, timedelta(minutes=10)) == expected
