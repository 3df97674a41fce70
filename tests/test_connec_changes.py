"""The Connec! poller's pure half (`changes`), tested by data: a cursor and the pages of a
changed-since listing in, the events, refusals and the next cursor out. No server, no
store, no clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from streamd.providers.connec.changes import Listing, since_filter, stamp_of

NOW = datetime(2026, 6, 1, tzinfo=UTC)
BAD = b'{"id": [{"provider": "connec", "id": "x9"}], "updated_at": "yesterday"}'


def e(key: str, updated: str) -> bytes:
    """An account, as the API lists it."""
    return json.dumps({"id": [{"provider": "connec", "id": key, "realm": "g"}], "group_id": "g",
                       "created_at": "2026-01-01T00:00:00Z", "updated_at": updated,
                       "name": f"Account {key}"}).encode()


def listing(cursor: str | None) -> Listing:
    return Listing(source="mno", group="g", collection="accounts", cursor=cursor, received_at=NOW)


T = "2026-02-01T{}Z".format

# cursor | pages (entities, the API's count) | complete | the next cursor
CASES = {
    "the first listing moves the cursor to the newest stamp seen": (
        None, [([e("a", T("10:00:00")), e("b", T("09:00:00"))], 2)], True, T("10:00:00")),
    "stamps compare as instants, whatever their offset": (
        None, [([e("a", T("10:00:00")), e("b", "2026-02-01T11:30:00+02:00")], 2)], True, T("10:00:00")),
    "a listing that finds nothing leaves the cursor": (
        T("08:00:00"), [([], 0)], True, T("08:00:00")),
    "an older stamp (the lookback's overlap) never moves the cursor back": (
        T("12:00:00"), [([e("a", T("11:00:00"))], 1)], True, T("12:00:00")),
    "pages after the first move it on": (
        T("08:00:00"), [([e("a", T("09:00:00"))], 2), ([e("b", T("11:00:00"))], 2)], True, T("11:00:00")),
    "an incomplete listing moves it to a second before the first page's newest": (
        T("08:00:00"), [([e("a", T("09:00:00")), e("b", T("10:00:00"))], 5), ([e("c", T("11:00:00"))], 5)],
        False, "2026-02-01T09:59:59.000Z"),
    "an incomplete first listing too": (
        None, [([e("a", T("09:00:00"))], 2)], False, "2026-02-01T08:59:59.000Z"),
    "an incomplete listing never moves it back": (
        T("12:00:00"), [([e("a", T("11:00:00"))], 3)], False, T("12:00:00")),
    "an incomplete listing whose first page was empty leaves it": (
        None, [([], 3), ([e("a", T("09:00:00"))], 3)], False, None),
    "an entity on two pages is seen once": (
        None, [([e("a", T("09:00:00"))], 2), ([e("a", T("09:00:01"))], 2)], False,
        "2026-02-01T08:59:59.000Z"),
    "the latest count is the one that holds": (
        None, [([e("a", T("09:00:00"))], 5), ([e("b", T("10:00:00"))], 2)], True, T("10:00:00")),
    "no count at all: complete": (
        None, [([e("a", T("09:00:00"))], None)], True, T("09:00:00")),
    "a refused entity counts as seen and moves nothing": (
        None, [([BAD, e("a", T("10:00:00"))], 2)], True, T("10:00:00")),
    "a stamp from the future stops the cursor at the listing's start": (
        T("08:00:00"), [([e("a", "2099-01-01T00:00:00Z")], 1)], True, "2026-06-01T00:00:00.000Z"),
}


@pytest.mark.parametrize(("cursor", "pages", "complete", "after"), list(CASES.values()), ids=list(CASES))
def test_a_listing_and_its_cursor(cursor: str | None, pages: list[tuple[list[bytes], int | None]],
                                  complete: bool, after: str | None) -> None:
    diff = listing(cursor)
    for items, total in pages:
        events, refused = diff.page(items, total)
        assert len(events) + len(refused) == len(items), "every entity is an event or refused"
    assert diff.complete is complete
    assert diff.next_cursor() == after
    assert diff.progress() == {"cursor": after, "completed": "2026-06-01T00:00:00.000Z",
                               "entities": len(diff.seen)}


def test_a_page_is_its_entities_events_and_its_refusals() -> None:
    events, refused = listing(None).page([e("a", T("10:00:00")), BAD, e("b", T("10:00:01"))], 3)
    assert [(ev.key, ev.tenant, ev.entity, ev.source) for ev in events] == [
        ("a", "g", "account", "mno"), ("b", "g", "account", "mno")]
    assert [(r.raw, r.context) for r in refused] == [
        (BAD, {"via": "poll", "tenant": "g", "collection": "accounts"})]
    assert "updated_at" in refused[0].reason


@pytest.mark.parametrize(("cursor", "lookback", "query"), [
    (None, 60, None),
    (T("10:00:00"), 60, "updated_at gt '2026-02-01T09:59:00Z'"),
    (T("10:00:00"), 0, "updated_at gt '2026-02-01T10:00:00Z'"),
    ("2026-02-01T12:00:00+02:00", 0, "updated_at gt '2026-02-01T10:00:00Z'"),
    ("2026-02-01T10:00:00", 3600, "updated_at gt '2026-02-01T09:00:00Z'"),  # no offset: UTC
    ("2026-02-01T10:00:00.999Z", 0, "updated_at gt '2026-02-01T10:00:00Z'"),  # to the second
])
def test_the_filter_asks_for_what_changed_since_the_cursor_minus_the_lookback(
        cursor: str | None, lookback: float, query: str | None) -> None:
    assert since_filter(cursor, timedelta(seconds=lookback)) == query


@pytest.mark.parametrize(("raw", "stamp"), [
    (e("a", T("10:00:00")), T("10:00:00")),
    (e("a", "2026-02-01T12:00:00+02:00"), "2026-02-01T12:00:00+02:00"),  # as sent
    (BAD, None), (b'{"id": "a"}', None), (b"{", None), (b'{"updated_at": 5}', None),
])
def test_an_entitys_stamp_is_read_alone(raw: bytes, stamp: str | None) -> None:
    assert stamp_of(raw) == stamp
