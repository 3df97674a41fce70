"""The Asperion listing's pure half (`changes.Listing`), tested by data as websockets tests
its protocol: what the last listing left and the pages of this one in, the events, states,
refusals and missing records out. No server, no store, no clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streamd.providers.asperion.changes import Listing, PageChanges, record_event

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
SRC, TENANT = "ap", "1"

D7 = b'{"id": 7, "name": "Bakker"}'
D7_RENAMED = b'{"id": 7, "name": "Bakker & Zn"}'
D8 = b'{"id": 8, "name": "Slager"}'
D9 = b'{"id": 9, "name": "Visboer"}'
BAD9 = b'{"id": 9, "countryCode": "Nederland"}'
NO_ID = b'{"name": "no id"}'


def v(raw: bytes, previous: str = "") -> str:
    """The version a listing emits for `raw` after `previous`."""
    return record_event("debtors", raw, source=SRC, tenant=TENANT, previous=previous, received_at=NOW).version


def listing(known: dict[str, str]) -> Listing:
    return Listing(source=SRC, tenant=TENANT, resource="debtors", known=dict(known), received_at=NOW)


def run(known: dict[str, str], pages: list[list[bytes]]) -> tuple[Listing, PageChanges]:
    """Every page through one listing; their changes together."""
    diff = listing(known)
    out = PageChanges()
    for page in pages:
        got = diff.page(page)
        out.events += got.events
        out.states += got.states
        out.refused += got.refused
        out.differing += got.differing
    return diff, out


def context(previous: str) -> dict[str, str]:
    return {"via": "poll", "tenant": TENANT, "resource": "debtors", "previous": previous}


GONE7 = "deleted:" + v(D7)

# known before the listing | its pages | events (op, key) | refused (reason, previous) |
# differing keys | missing keys
CASES = {
    "a first listing creates every record": (
        {}, [[D7, D8]], [("created", "7"), ("created", "8")], [], [], []),
    "an unchanged record emits nothing": (
        {"7": v(D7)}, [[D7]], [], [], [], []),
    "a changed record is left to its stored state to decide": (
        {"7": v(D7)}, [[D7_RENAMED]], [], [], ["7"], []),
    "a record no longer listed is missing, to be confirmed gone": (
        {"7": v(D7), "8": v(D8)}, [[D7]], [], [], [], ["8"]),
    "a record already deleted is not missing again": (
        {"7": GONE7}, [[]], [], [], [], []),
    "a record deleted and listed again is created anew": (
        {"7": GONE7}, [[D7]], [("created", "7")], [], [], []),
    "a record that does not normalize is refused once, not at every page": (
        {}, [[BAD9], [BAD9]], [], [("debtors 9: countryCode", "")], [], []),
    "a refused record once emitted is refused with its last version": (
        {"9": v(D9)}, [[BAD9]], [], [("debtors 9: countryCode", v(D9))], [], []),
    "a record without an id is refused and not tracked": (
        {}, [[NO_ID]], [], [("no usable id", "")], [], []),
    "pages come in any order; a record on two of them changes once": (
        {}, [[D8], [D7, D8]], [("created", "8"), ("created", "7")], [], [], []),
}


@pytest.mark.parametrize(("known", "pages", "events", "refused", "differing", "missing"),
                         list(CASES.values()), ids=list(CASES))
def test_a_listing(known: dict[str, str], pages: list[list[bytes]], events: list[tuple[str, str]],
                   refused: list[tuple[str, str]], differing: list[str], missing: list[str]) -> None:
    diff, out = run(known, pages)
    assert [(ev.op, ev.key) for ev in out.events] == events
    assert len(out.refused) == len(refused)
    for r, (reason, previous) in zip(out.refused, refused, strict=True):
        assert reason in r.reason and r.context == context(previous), r
    assert [ev.key for ev in out.differing] == differing
    assert diff.missing() == missing
    for ev in out.events:  # every event's version is stored beside it, and known from now on
        assert diff.known[ev.key] == ev.version
    emitted = [(st.key, st.version, st.data) for st in out.states
               if not (st.version or "").startswith("rejected:")]
    assert emitted == [(ev.key, ev.version, ev.data) for ev in out.events]


def test_versions_chain_so_a_record_deleted_and_created_again_gets_new_ids() -> None:
    _, first = run({}, [[D7]])
    _, again = run({"7": GONE7}, [[D7]])
    assert again.events[0].version == v(D7, GONE7) != first.events[0].version
    assert again.events[0].id != first.events[0].id


def test_a_refused_record_is_remembered_by_a_marker_that_says_whether_it_was_emitted() -> None:
    diff, new = run({}, [[BAD9]])
    assert [(st.key, st.version) for st in new.states] == [("9", diff.known["9"])]
    assert diff.known["9"].startswith("rejected:") and diff.known["9"].endswith(":c")
    # Fixed at the provider: a record never emitted is created...
    assert [(ev.op, ev.key) for ev in listing(diff.known).page([D9]).events] == [("created", "9")]
    # ...one emitted before, refused since, is updated.
    once, _ = run({"9": v(D9)}, [[BAD9]])
    assert once.known["9"].endswith(":u")
    assert [(ev.op, ev.key) for ev in listing(once.known).page([D9]).events] == [("updated", "9")]


def test_live_records_are_counted_before_the_listing() -> None:
    """The bound on deletions is a share of the records live before the listing: a
    tombstone is not one, a record refused last time is."""
    diff, _ = run({"7": v(D7), "8": GONE7, "9": "rejected:abc:c"}, [[D8, D9]])
    assert diff.known_live == 2
    assert diff.missing() == ["7"]


def test_deletions_in_id_order_with_their_last_state_and_tombstones() -> None:
    known = {"10": v(D7), "9": v(D8), "a": v(D9)}
    events, states = listing(known).deleted(["a", "10", "9"], {"9": b'{"name":"Slager"}'}, NOW)
    assert [ev.key for ev in events] == ["9", "10", "a"], "numbers as numbers, then the rest"
    assert [ev.op for ev in events] == ["deleted"] * 3
    assert [ev.version for ev in events] == [f"deleted:{known[k]}" for k in ("9", "10", "a")]
    assert [bytes(ev.data) for ev in events] == [b'{"name":"Slager"}', b"null", b"null"]
    assert [(st.key, st.version, st.data) for st in states] == [(ev.key, ev.version, None) for ev in events]


def test_nothing_deleted_is_nothing() -> None:
    assert listing({"7": v(D7)}).deleted([], {}, NOW) == ([], [])
