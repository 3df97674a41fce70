"""Asperion deletions: a record is deleted only when its own URL says 404 (an offset shift
mid-listing skips records that still exist), and never more than the mass_delete bound
at once (an administration whose access was revoked lists nothing and 404s every id)
without the operator's word or listings agreeing for mass_delete_confirm_after.
Against the simulated API over real HTTPS, a real SQLite file, and a real `streamd run`."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from streamd.config import StoreConfig
from streamd.configfile import parse
from streamd.providers.asperion import simulator as sim_mod
from streamd.providers.asperion.changes import mass_delete
from streamd.providers.asperion.oauth import TokenState, save
from streamd.providers.asperion.simulator import AsperionSimulator, Knobs
from streamd.store import write_state

from .conftest import Background, InProcess, Streamd, streamd_cli, until, wait_for

BACKOFF = '{ min = "20ms", max = "300ms" }'


@pytest.mark.parametrize("gone, known, held", [
    (10, 10, True),  # everything, every id 404: a revoked administration, or an emptied one
    (6, 10, True),  # more than half, and more than a handful
    (5, 10, False),  # half is not more than half
    (5, 5, False),  # a handful is not more than a handful: a small administration emptied
    (6, 6, True),
    (49, 100, False), (51, 100, True),
    (0, 0, False),
])
def test_the_mass_delete_rule(gone: int, known: int, held: bool) -> None:
    assert mass_delete(gone, known, share=0.5, minimum=5) is held


# ---------------------------------------------------------------- offset shift


@pytest.mark.anyio
async def test_a_record_an_offset_shift_skipped_is_not_deleted(tmp_path: Path) -> None:
    """A record deleted after page 1 was cut moves the first record of page 2 onto page 1,
    which this listing has already read: that record is missing from the listing, but its
    GET answers 200, so it is kept (and emits nothing), and only the deleted one goes."""
    async with sim_mod.simulator(tmp_path / "sim", Knobs(records=20)) as sim:
        cfg = parse(f"""
[store]
path = "feed.db"
[http]
listen = "127.0.0.1:0"
{sim.source_toml("ap", interval='"300ms"', page_size="7", concurrency="1", backoff=BACKOFF)}
tenants = ["1001"]
resources = ["debtors"]
""", base_dir=tmp_path)
        await save(cfg.store, "ap", TokenState(refresh_token=sim.issue_refresh_token()))
        async with InProcess(cfg) as d:
            await until(lambda: d.daemon.sources["ap"].polls >= 1, 20, "the first listing")
            assert len(d.rows("SELECT key FROM events")) == 20
            shifted: list[str] = []

            def delete_after_page_one(tenant: str, resource: str, page: int) -> None:
                if page == 1 and not shifted:
                    shifted.append("8")  # ids 1-7 are page 1; 8 was first on page 2
                    sim.remove(tenant, resource, "3")

            sim.after_page = delete_after_page_one
            polls = d.daemon.sources["ap"].polls
            await until(lambda: d.daemon.sources["ap"].polls >= polls + 2, 20, "two more listings")
            ops = d.rows("SELECT op, key FROM events WHERE seq > 20")
            assert ops == [("deleted", "3")]
            # Record 8 was not in the listing that deleted 3, and was fetched on its own.
            assert shifted == ["8"]
            assert any(e.path == "/v1/debtors/8" and e.status == 200 for e in sim.log)
            (version,), = d.rows("SELECT version FROM entity_state WHERE key = '8'")
            assert version.startswith("poll:")


# ---------------------------------------------------------------- the bound, in a real process


def _readyz(d: Streamd) -> httpx.Response:
    return httpx.get(f"{d.url}/readyz", timeout=10)


def _metric(d: Streamd, name: str) -> float | None:
    text = httpx.get(f"{d.url}/metrics", timeout=10).text
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def _polls(d: Streamd) -> float:
    return _metric(d, 'streamd_source_polls_total{outcome="complete",source="ap"}') or 0.0


def _ops(d: Streamd, tenant: str) -> Counter[str]:
    return Counter(op for (op,) in d.query("SELECT op FROM events WHERE tenant = ?", (tenant,)))


def _more_polls(d: Streamd, n: int) -> None:
    target = _polls(d) + n
    wait_for(lambda: _polls(d) >= target, 30, f"{n} more complete listings")


def test_an_empty_listing_holds_its_deletions_for_the_operator(
        streamd_proc: Callable[..., Streamd], background: Background, tmp_path: Path) -> None:
    sim = sim_mod.simulator(tmp_path / "sim", Knobs(records=10))
    background.start(sim.serve)
    wait_for(lambda: getattr(sim, "url", ""), 10, "the simulator to listen")
    # One page per listing: access is revoked (or comes back) between two listings, never
    # inside one (a listing that saw some pages before the revocation deletes what the rest
    # 404s, up to the bound: at most a handful, the bound's own allowance).
    src = sim.source_toml("ap", interval='"200ms"', page_size="10", backoff=BACKOFF)
    d = streamd_proc(f'[store]\npath = "feed.db"\n[http]\nlisten = "127.0.0.1:0"\n{src}')
    anyio.run(save, StoreConfig(path=str(d.db)), "ap", TokenState(refresh_token=sim.issue_refresh_token()))
    d.start()
    wait_for(lambda: d.query("SELECT count(*) FROM events")[0][0] == 60, 30, "the first listing")

    # Access to administration 1001 is revoked: its lists are empty, every id answers 404.
    sim.knobs.revoked.add("1001")
    wait_for(lambda: _metric(d, 'streamd_source_deletions_held{source="ap"}') == 30, 30,
             "30 deletions held")
    r = _readyz(d)
    assert r.status_code == 503
    for resource in ("debtors", "salesinvoices", "articles"):
        assert (f"1001/{resource}: 10 of 10 known records vanished in one listing" in r.text
                and f"streamd deletions confirm ap --tenant 1001 --resource {resource}" in r.text), r.text
    assert "source ap: held for" in r.text
    assert _metric(d, 'streamd_component_healthy{component="source",name="ap"}') == 0
    assert "deletions held" in d.log()
    _more_polls(d, 12)  # every listing still finds them gone: still held, nothing deleted
    assert _ops(d, "1001") == {"created": 30}
    status = streamd_cli("status", "-c", str(d.config), cwd=d.dir)
    assert status.returncode == 0 and "held for" in status.stdout, status.stdout + status.stderr
    listed = streamd_cli("deletions", "list", "-c", str(d.config), cwd=d.dir)
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.splitlines()) == sorted(
        f"ap 1001/{r}: 10 of 10 records held since {_since(d, r)} (waiting)"
        for r in ("articles", "debtors", "salesinvoices"))

    # Access comes back: the hold is dropped, nothing is deleted, the source is healthy.
    sim.knobs.revoked.clear()
    wait_for(lambda: _readyz(d).status_code == 200, 30, "/readyz to recover")
    wait_for(lambda: not d.query("SELECT key FROM source_state WHERE key LIKE 'deletions.%'"
                                 " AND CAST(value AS TEXT) != 'null'"), 10, "the dropped holds, committed")
    assert _metric(d, 'streamd_source_deletions_held{source="ap"}') == 0
    assert _ops(d, "1001") == {"created": 30}
    listed = streamd_cli("deletions", "list", "ap", "-c", str(d.config), cwd=d.dir)
    assert listed.stdout == "no deletions held\n"

    # Revoked again (or emptied: the API cannot tell): held again, as a new hold. A
    # confirmation of another hold lets nothing go.
    sim.knobs.revoked.add("1001")
    wait_for(lambda: _metric(d, 'streamd_source_deletions_held{source="ap"}') == 30, 30,
             "30 deletions held again")
    anyio.run(write_state, StoreConfig(path=str(d.db)), "ap", {
        "deletions.1001.debtors.confirmed": {"hold": "0123456789abcdef", "at": "2026-01-01T00:00:00.000Z"}})
    _more_polls(d, 6)
    assert _ops(d, "1001") == {"created": 30}
    # The operator says they are gone: `streamd deletions confirm` for debtors only.
    done = streamd_cli("deletions", "confirm", "ap", "--tenant", "1001", "--resource", "debtors",
                       "-c", str(d.config), cwd=d.dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ap 1001/debtors: 10 deletions confirmed")
    wait_for(lambda: _ops(d, "1001")["deleted"] == 10, 30, "the confirmed deletions")
    deleted = d.query("SELECT entity, data FROM events WHERE tenant = '1001' AND op = 'deleted'")
    assert {e for e, _ in deleted} == {"party"} and all(json.loads(data)["name"] for _, data in deleted)
    assert _metric(d, 'streamd_source_deletions_held{source="ap"}') == 20
    assert "1001/debtors" not in _readyz(d).text and "1001/articles" in _readyz(d).text
    nothing = streamd_cli("deletions", "confirm", "ap", "--resource", "debtors", "-c", str(d.config),
                          cwd=d.dir)
    assert nothing.returncode == 1 and "holds no deletions" in nothing.stderr
    assert _ops(d, "1002") == {"created": 30}
    assert d.terminate() == 0


def _since(d: Streamd, resource: str) -> str:
    (value,), = d.query("SELECT value FROM source_state WHERE key = ?",
                        (f"deletions.1001.{resource}.held",))
    since: str = json.loads(value)["since"]
    return since


@pytest.mark.anyio
async def test_listings_agreeing_for_confirm_after_let_the_deletions_go(tmp_path: Path) -> None:
    async with sim_mod.simulator(tmp_path / "sim", Knobs(records=8)) as sim:
        cfg = _config(tmp_path, sim, 'mass_delete_confirm_after = "2s"\nresources = ["articles"]\n')
        await save(cfg.store, "ap", TokenState(refresh_token=sim.issue_refresh_token()))
        async with InProcess(cfg) as d:
            await until(lambda: len(d.rows("SELECT key FROM events")) == 16, 20, "the first listings")
            sim.knobs.revoked.add("1002")

            def held() -> list[Any]:  # committed with the listing that held them
                return d.rows("SELECT value FROM source_state WHERE key = 'deletions.1002.articles.held'"
                              " AND CAST(value AS TEXT) != 'null'")
            await until(held, 10, "the deletions to be held")
            r = await d.http.get("/readyz")
            assert "1002/articles: 8 of 8 known records vanished" in r.text, r.text
            assert "they go ahead on their own once listings have agreed for 2s" in r.text
            (value,), = held()
            since = datetime.fromisoformat(json.loads(value)["since"]).timestamp() * 1000
            await until(lambda: len(d.rows("SELECT key FROM events WHERE op = 'deleted'")) == 8, 20,
                        "the deletions, once listings agreed for 2s")
            assert d.rows("SELECT DISTINCT tenant FROM events WHERE op = 'deleted'") == [("1002",)]
            received = d.rows("SELECT min(received) FROM events WHERE op = 'deleted'")[0][0]
            assert received >= since + 2000 - 1  # not one listing earlier
            r = await d.http.get("/readyz")
            assert r.status_code == 200, r.text
            assert await d.metric('streamd_source_deletions_held{source="ap"}') == 0


def _config(tmp_path: Path, sim: AsperionSimulator, extra: str = "") -> Any:
    return parse(f"""
[store]
path = "feed.db"
[http]
listen = "127.0.0.1:0"
{sim.source_toml("ap", interval='"200ms"', page_size="5", backoff=BACKOFF)}{extra}
""", base_dir=tmp_path)


def test_the_bound_is_checked_with_the_config(tmp_path: Path) -> None:
    share = "mass_delete_share: must be more than 0 and at most 1"
    for value, problem in (("mass_delete_share = 0", share), ("mass_delete_share = 1.5", share),
                           ("mass_delete_min = -1", "mass_delete_min: must be 0 or more")):
        cfg = tmp_path / "c.toml"
        cfg.write_text('[sources.ap]\nprovider = "asperion"\nclient_id = "x"\nclient_secret = "env:X"\n'
                       + value + "\n")
        r = streamd_cli("check", "-c", str(cfg), env={"X": "s"})
        assert r.returncode == 78 and f"sources.ap.{problem}" in r.stderr, r.stderr
