"""A payment reaches the feed at the next poll, whichever stamp HORISEN moves on it: the
payment check's pure parts, then the real poller against the simulator with each of
the simulator's payment behaviours, counting what each poll asks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streamd.providers.horisen import simulator as sim_mod
from streamd.providers.horisen.payments import OpenSet, listed, probe_covers, stamp
from streamd.providers.horisen.simulator import HorisenSimulator, Knobs

from .conftest import InProcess, until
from .test_horisen import config, feed, polls, rounds

pytestmark = pytest.mark.anyio

T = datetime(2026, 3, 1, 12, tzinfo=UTC)
H = timedelta(hours=1)


# ---------------------------------------------------------------- the probe's proof

def test_a_page_that_is_not_full_holds_every_open_document() -> None:
    assert probe_covers([None, T], full=False, since=None)


@pytest.mark.parametrize("stamps, since, covers", [
    ([T, T - H, T - 3 * H], T - 2 * H, True),  # the last is older than `since`
    ([T, T - H, T - 2 * H], T - 2 * H, False),  # the next one may be as new
    ([T, T - H, None], T - 2 * H, True),  # undated come last here: every dated one is in
    ([None, None, None], T - 2 * H, False),  # undated first (or only undated): unknown
    ([None, T, T - 3 * H], T - 2 * H, True),  # undated first, then past `since`
    ([T, T - H, T - 3 * H], None, False),  # no `since`: nothing to hold against
])
def test_a_full_page_covers_only_what_it_proves(stamps: list[datetime | None], since: datetime | None,
                                               covers: bool) -> None:
    assert probe_covers(stamps, full=True, since=since) is covers


def test_what_the_check_reads_of_a_document() -> None:
    doc = listed(b'{"id": 1, "paymentStatus": " Open ", "documentDate": "2026-03-01", '
                 b'"paymentStatusDate": "2026-03-02 10:00:00"}')
    assert (doc.open, doc.day, doc.paid_at) == (True, "2026-03-01", datetime(2026, 3, 2, 10, tzinfo=UTC))
    assert listed(b'{"id": 1, "paymentStatus": 7, "documentDate": "01.03.2026"}') == \
        listed(b'{"id": 1}') == listed(b"[]")
    assert not listed(b'[]').open
    assert stamp("2026-03-02") == datetime(2026, 3, 2, tzinfo=UTC)
    assert stamp("2026-03-02T10:00:00+02:00") == datetime(2026, 3, 2, 8, tzinfo=UTC)
    known = OpenSet({"1": "2026-01-01", "2": "2026-03-01"})
    known.saw("3", doc)
    known.saw("2", listed(b'{"paymentStatus": "paid", "documentDate": "2026-03-01"}'))
    assert known.within("2026-02-01", "2026-03-02") == {"3"}
    assert known.kept("2026-02-01") == {"3": "2026-03-01"}


@pytest.mark.parametrize("edge", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00"])
def test_a_stamp_beyond_utc_is_unreadable_not_a_crash(edge: str) -> None:
    """Found by the fuzz rig: a stamp whose UTC is outside the calendar crashed the poll."""
    assert stamp(edge) is None
    doc = listed(b'{"id": 1, "paymentStatus": "open", "paymentStatusDate": "%s"}' % edge.encode())
    assert doc.open and doc.paid_at is None and not doc.timed


# ---------------------------------------------------------------- the poller

def listings(sim: HorisenSimulator, since: int) -> list[str]:
    """The documents-export queries from log entry `since` on."""
    return [e.query for e in sim.log[since:] if e.path.endswith("documents-export")]


def last_polls(sim: HorisenSimulator) -> list[list[str]]:
    """The queries of each poll after the first: each begins with its changed-since listing."""
    polled: list[list[str]] = []
    for q in listings(sim, 0):
        if "gte%28statusDt%29" in q and "page_number=1&" in q + "&":
            polled.append([])
        if polled:
            polled[-1].append(q)
    return polled[:-1]  # the last may be under way


async def paid_within_one_poll(tmp_path: Path, moves: tuple[str, ...], part_paid: int) -> list[str]:
    """Pay 3 invoices in full and `part_paid` in part after a poll, then let one poll start
    after the payments and end: each payment must be an `updated` by then. Returns the
    queries of a quiet poll before, and of that one."""
    knobs = Knobs(days=40, documents_per_day=4, payment_moves=moves, paid_ratio=0.3)
    async with sim_mod.simulator(tmp_path / "sim", knobs) as sim:
        async with InProcess(config(tmp_path, sim, extra="traffic_reports = false\n", interval="400ms")) as d:
            await rounds(d, 3)
            quiet = last_polls(sim)[-1]
            before = len(feed(d))
            m = sim.mutate(paid=3, part_paid=part_paid)
            # The poll under way may have listed before the payments: the next one starts after.
            await rounds(d, 2)
            mark = len(sim.log)
            updated = {int(k): inv for op, k, inv in feed(d)[before:] if op == "updated"}
            assert sorted(updated) == sorted(m.paid + m.part_paid), sorted(updated)
            for i in m.paid:
                assert updated[i]["status"] == "paid" and updated[i]["unpaid"] in ("0", "0.00")
            for i in m.part_paid:
                assert updated[i]["status"] == "partially_paid"
                assert updated[i]["paid_amount"] == str(sim.documents()[i]["totalPaid"])
            await rounds(d, 1)
            assert len(feed(d)) == before + len(updated), "nothing twice"
            assert not [q for q in listings(sim, mark) if "documentDate" in q and "statusDt" not in q
                        and "paymentStatus" not in q], "no listing of the whole window since the first poll"
            assert polls(d) >= 5
    return quiet


def costs_one_request(quiet: list[str]) -> None:
    """A quiet poll: its changed-since listing, then the payment check's one page."""
    *changes, probe = quiet
    assert changes and all("gte%28statusDt%29" in q for q in changes), quiet
    assert "paymentStatus=open&sort=-paymentStatusDate&page_size=25" in probe, quiet


async def test_a_payment_that_moves_both_stamps_is_seen_at_the_next_poll(tmp_path: Path) -> None:
    costs_one_request(await paid_within_one_poll(tmp_path, ("statusDt", "paymentStatusDate"), part_paid=2))


async def test_a_payment_that_moves_only_the_payment_status_date_is_seen_at_the_next_poll(
        tmp_path: Path) -> None:
    costs_one_request(await paid_within_one_poll(tmp_path, ("paymentStatusDate",), part_paid=2))


async def test_a_payment_in_full_that_moves_no_stamp_is_seen_at_the_next_poll(tmp_path: Path) -> None:
    """A part payment that moves no stamp changes no count: the daily full listing finds it
    (docs/providers/horisen.md); one in full leaves HORISEN's count of open documents."""
    costs_one_request(await paid_within_one_poll(tmp_path, (), part_paid=0))


async def test_a_horisen_that_refuses_the_payment_check_still_moves_the_listing_on(tmp_path: Path) -> None:
    """A platform that cannot sort by paymentStatusDate: the poll fails, saying so and what to
    do, but what its changed-since listing saw is in the feed and its cursor moves."""
    knobs = Knobs(days=5, documents_per_day=3, unsupported=("paymentStatusDate",))
    async with sim_mod.simulator(tmp_path / "sim", knobs) as sim:
        async with InProcess(config(tmp_path, sim, extra="traffic_reports = false\n", interval="200ms")) as d:
            async def refused() -> bool:
                r = await d.http.get("/readyz")
                return r.status_code == 503 and "the payment check failed" in r.text
            await until(refused, 15, "/readyz to say why")
            assert "BAD_PARAM_SORT" in (await d.http.get("/readyz")).text
            assert "payment_check = false" in (await d.http.get("/readyz")).text
            m = sim.mutate(new=2)
            await until(lambda: {int(k) for _, k, _ in feed(d)} >= set(m.created), 15, "the new invoices")
            def cursor() -> str:
                (progress,) = [json.loads(v) for (v,) in d.rows(
                    "SELECT value FROM source_state WHERE source = 'hz' AND key = 'poll'")]
                return str(progress["cursor"]).replace("T", " ").removesuffix("Z")
            # Not "the next poll's cursor": a document stamped after that poll began is listed
            # by it but moves the cursor only to when it began (a stamp from the future is
            # never trusted); the poll after that moves it on (found on a busy machine).
            newest = max(d["statusDt"] for d in sim.documents().values())
            await until(lambda: cursor() >= newest, 15, "failed polls' listings to move the cursor on")
            assert not (await d.http.get("/readyz")).status_code == 200, "the check still fails"
