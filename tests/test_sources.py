"""What the sources share, without a peer: `paginate`'s guards fed tables of pages, and the
commit window against a real writer on a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from streamd.config import StoreConfig
from streamd.errors import PollFailed
from streamd.health import Health
from streamd.metrics import Metrics
from streamd.sources.polling import paginate
from streamd.sources.window import CommitWindow
from streamd.store import Batch, Writer, connect
from streamd.units import Duration

from .test_store import ev

pytestmark = pytest.mark.anyio
API = "https://api.example.com/v2"


async def walk(pages: dict[str, str | None], first: str | None, *, limit: int | None = None,
               params: dict[str, str] | None = None) -> list[tuple[str, dict[str, str] | None]]:
    """Follow `pages` (URL -> the next URL it names) from `first`; the requests made."""
    fetched: list[tuple[str, dict[str, str] | None]] = []
    taken: list[str] = []

    async def fetch(url: str, query: dict[str, str] | None) -> str:
        fetched.append((url, query))
        return url

    async def take(page: str) -> None:
        taken.append(page)

    await paginate(first, fetch, pages.__getitem__, take, base=API, params=params, limit=limit,
                   what="next")
    assert taken == [url for url, _ in fetched], "every page fetched is taken, in order"
    return fetched


@pytest.mark.parametrize(("pages", "first", "followed"), [
    ({}, None, []),
    ({f"{API}/a": None}, f"{API}/a", [f"{API}/a"]),
    ({f"{API}/a": f"{API}/a?p=2", f"{API}/a?p=2": f"{API}/a?p=3", f"{API}/a?p=3": None},
     f"{API}/a", [f"{API}/a", f"{API}/a?p=2", f"{API}/a?p=3"]),
    # Another path, or the default port written out, is the same origin.
    ({f"{API}/a": "https://API.example.com:443/other?p=2", "https://API.example.com:443/other?p=2": None},
     f"{API}/a", [f"{API}/a", "https://API.example.com:443/other?p=2"]),
])
async def test_next_pages_are_followed_to_the_end(pages: dict[str, str | None], first: str | None,
                                                  followed: list[str]) -> None:
    assert [url for url, _ in await walk(pages, first)] == followed


async def test_the_query_goes_with_the_first_request_only() -> None:
    pages: dict[str, str | None] = {f"{API}/a": f"{API}/a?page=2", f"{API}/a?page=2": None}
    assert await walk(pages, f"{API}/a", params={"$top": "4"}) == [
        (f"{API}/a", {"$top": "4"}), (f"{API}/a?page=2", None)]


@pytest.mark.parametrize(("pages", "limit", "error", "fetched"), [
    # Another host, scheme or port: the credentials would go with the request.
    ({f"{API}/a": "https://evil.example.net/a?p=2"}, None,
     "next https://evil.example.net/a?p=2 leaves https://api.example.com:443; not followed", 1),
    ({f"{API}/a": "http://api.example.com/a?p=2"}, None, "leaves https://api.example.com:443", 1),
    ({f"{API}/a": "https://api.example.com:8443/a?p=2"}, None, "leaves", 1),
    # A page naming itself, or an earlier one.
    ({f"{API}/a": f"{API}/a"}, None, f"pagination loops: next {API}/a was already fetched", 1),
    ({f"{API}/a": f"{API}/b", f"{API}/b": f"{API}/c", f"{API}/c": f"{API}/b"}, None,
     f"pagination loops: next {API}/b was already fetched", 3),
    # Ever new pages: at most `limit` + 1 are fetched.
    ({f"{API}/{n}": f"{API}/{n + 1}" for n in range(100)}, 5,
     f"pagination does not end: next {API}/6 after 6 pages (at most 5 expected)", 6),
])
async def test_a_next_page_off_the_origin_in_a_loop_or_past_the_limit_fails_the_poll(
        pages: dict[str, str | None], limit: int | None, error: str, fetched: int) -> None:
    requests: list[str] = []

    async def fetch(url: str, query: dict[str, str] | None) -> str:
        requests.append(url)
        return url

    async def take(page: str) -> None:
        pass

    with pytest.raises(PollFailed) as caught:
        await paginate(f"{API}/a" if f"{API}/a" in pages else f"{API}/0", fetch, pages.__getitem__, take,
                       base=API, limit=limit, what="next")
    assert error in str(caught.value)
    assert len(requests) == fetched, "nothing is fetched past the refusal"


async def test_a_first_url_off_the_origin_is_not_fetched_either() -> None:
    with pytest.raises(PollFailed, match="leaves"):
        await walk({}, "https://elsewhere.example.com/a")


# ---------------------------------------------------------------- the commit window

async def test_the_commit_window_waits_for_the_oldest_commit_past_its_size(tmp_path: Path) -> None:
    cfg = StoreConfig(path=str(tmp_path / "feed.db"), commit_linger=Duration(0.005))
    db = await connect(cfg)
    try:
        writer = Writer(db, cfg, Metrics(), Health().add("store", "writer"))  # not started yet
        window = CommitWindow(writer.enqueue, 2)
        await window.add(Batch(source="s", events=[ev("a")]))
        await window.add(Batch(source="s", events=[ev("b")]))
        assert len(window) == 2
        third = anyio.Event()

        async def add_third() -> None:
            await window.add(Batch(source="s", events=[ev("c")]))
            third.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(add_third)
            with anyio.move_on_after(0.2):
                await third.wait()
            assert not third.is_set(), "a third uncommitted batch must wait for the oldest's commit"
            await tg.start(writer.run)
            with anyio.fail_after(10):
                await third.wait()
            assert len(window) <= 2
            await window.settle()
            assert len(window) == 0
            keys = sqlite3.connect(cfg.path).execute("SELECT key FROM events ORDER BY seq").fetchall()
            assert keys == [("a",), ("b",), ("c",)], "settled: every batch added is committed"
            writer.close()
    finally:
        await db.close()


async def test_the_commit_window_lets_go_of_what_is_committed_without_waiting(tmp_path: Path) -> None:
    cfg = StoreConfig(path=str(tmp_path / "feed.db"), commit_linger=Duration(0.005))
    db = await connect(cfg)
    try:
        writer = Writer(db, cfg, Metrics(), Health().add("store", "writer"))
        async with anyio.create_task_group() as tg:
            await tg.start(writer.run)
            window = CommitWindow(writer.enqueue, 8)
            await window.add(Batch(source="s", events=[ev("a")]))
            await writer.submit(Batch())  # committed after the first: the first is done too
            await window.add(Batch(source="s", events=[ev("b")]))
            assert len(window) <= 1, "the committed batch was let go when the next came"
            await window.settle()
            writer.close()
    finally:
        await db.close()
