"""Connec! webhooks through the daemon's real listener: HTTP Basic, mixed notification
bodies, partly invalid bodies, account webhooks; and a 2xx survives a SIGKILL."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import httpx
import pytest

from streamd.configfile import parse
from streamd.providers.connec import simulator as connec_sim
from streamd.providers.connec import wire

from .conftest import InProcess, Streamd, feed_lines, until, wait_for
from .connec_samples import GROUP, INVOICE_ID, SAMPLES

pytestmark = pytest.mark.anyio
API_ID = "app-19op"
API_KEY = "connec-key-0123456789"

SOURCE = """
[sources.mno]
provider = "connec"
api_id = "app-19op"
api_key = "env:STREAMD_TEST_CONNEC_KEY"
"""


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMD_TEST_CONNEC_KEY", API_KEY)


def config(tmp_path: Path, extra: str = "") -> Any:
    return parse(f"""
[store]
path = "feed.db"
[http]
listen = "127.0.0.1:0"
{SOURCE}{extra}
""", base_dir=tmp_path)


def basic(user: str = API_ID, password: str = API_KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def rows(d: InProcess) -> list[tuple[str, str, str, str]]:
    return [tuple(r) for r in d.rows("SELECT tenant, entity, op, key FROM events ORDER BY seq")]


async def test_a_mixed_notification_is_one_event_per_entity(tmp_path: Path) -> None:
    body = {c: ([copy.deepcopy(e)] if c != "company" else copy.deepcopy(e)) for c, e in SAMPLES.items()}
    async with InProcess(config(tmp_path)) as d:
        r = await d.http.post("/maestrano/connec/notifications", json=body, headers=basic())
        assert r.status_code == 200, r.text
        assert r.json()["appended"] == len(SAMPLES) and r.json()["rejected"] == []
        got = rows(d)
        assert sorted(e for _, e, _, _ in got) == sorted(
            ["invoice", "party", "party", "transaction", "product", "account", "company", "tax_code"])
        assert {t for t, *_ in got} == {GROUP}
        assert ("invoice", INVOICE_ID) in {(e, k) for _, e, _, k in got}
        # The same notification again (Maestrano retries): nothing new.
        r = await d.http.post("/maestrano/connec/notifications", json=body, headers=basic())
        assert r.json()["appended"] == 0 and r.json()["duplicates"] == len(SAMPLES)
        assert len(rows(d)) == len(SAMPLES)


async def test_wrong_or_missing_credentials_are_401_and_store_nothing(tmp_path: Path) -> None:
    body = {"invoices": [SAMPLES["invoices"]]}
    async with InProcess(config(tmp_path)) as d:
        for headers in ({}, basic(password="wrong"), basic(user="other"), {"Authorization": "Basic !!"},
                        {"Authorization": f"Bearer {API_KEY}"}):
            r = await d.http.post("/maestrano/connec/notifications", json=body, headers=headers)
            assert r.status_code == 401 and r.json() == {"error": "Invalid credentials"}, headers
            assert r.headers["www-authenticate"].startswith("Basic")
        r = await d.http.delete(f"/maestrano/account/groups/{GROUP}")
        assert r.status_code == 401
        assert rows(d) == [] and d.rows("SELECT count(*) FROM dead_letters") == [(0,)]
        text = (await d.http.get("/metrics")).text
        assert 'streamd_webhook_requests_total{code="401",source="mno"} 6.0' in text


async def test_a_partly_invalid_body_commits_the_valid_entities(tmp_path: Path) -> None:
    bad = copy.deepcopy(SAMPLES["invoices"])
    bad["amount"]["currency"] = "EURO"
    body = {"invoices": [bad], "organizations": [SAMPLES["organizations"]], "people": [SAMPLES["people"]]}
    async with InProcess(config(tmp_path)) as d:
        r = await d.http.post("/maestrano/connec/notifications", json=body, headers=basic())
        assert r.status_code == 200 and r.json()["appended"] == 2
        assert len(r.json()["rejected"]) == 1 and "currency" in r.json()["rejected"][0]
        assert sorted(e for _, e, _, _ in rows(d)) == ["party", "party"]
        (reason, raw, context), = d.rows("SELECT reason, raw, context FROM dead_letters")
        assert "EURO" in reason and json.loads(raw) == bad  # the entity's own bytes
        assert json.loads(context)["collection"] == "invoices"
        # A body of nothing but bad entities: 400, kept in dead letters.
        r = await d.http.post("/maestrano/connec/notifications", json={"invoices": [bad, {"id": []}]},
                              headers=basic())
        assert r.status_code == 400
        assert d.rows("SELECT count(*) FROM dead_letters") == [(3,)]
        r = await d.http.post("/maestrano/connec/notifications", content=b"[1, 2]",
                              headers={**basic(), "content-type": "application/json"})
        assert r.status_code == 400 and "object" in r.json()["error"]


async def test_the_tenant_of_the_path_is_the_fallback(tmp_path: Path) -> None:
    item = copy.deepcopy(SAMPLES["items"])
    item.pop("group_id", None)
    item["id"] = [{"provider": "connec", "id": "it-1"}]  # no realm either
    async with InProcess(config(tmp_path)) as d:
        r = await d.http.post("/maestrano/connec/notifications/cld-77", json={"items": [item]},
                              headers=basic())
        assert r.status_code == 200
        (tenant, entity, _, key), = rows(d)
        assert (tenant, entity, key) == ("cld-77", "product", "it-1")


async def test_account_webhooks_delete_groups_and_users(tmp_path: Path) -> None:
    async with InProcess(config(tmp_path)) as d:
        r = await d.http.delete("/maestrano/account/groups/cld-4/users/usr-2", headers=basic())
        assert r.status_code == 200 and r.json()["appended"] == 1
        r = await d.http.delete("/maestrano/account/groups/cld-4", headers=basic())
        assert r.status_code == 200
        r = await d.http.delete("/maestrano/account/groups/cld-4", headers=basic())  # again
        assert r.json()["duplicates"] == 1
        assert rows(d) == [("cld-4", "user", "deleted", "usr-2"), ("cld-4", "group", "deleted", "cld-4")]
        r = await d.http.post("/maestrano/account/groups/cld-4", headers=basic())
        assert r.status_code == 405


async def test_configured_paths_are_the_routes(tmp_path: Path) -> None:
    extra = ('notifications_path = "/hooks/connec"\ngroups_path = "/acct/g/{id}"\n'
             'group_users_path = "/acct/g/{group_id}/u/{id}"\n')
    async with InProcess(config(tmp_path, extra)) as d:
        r = await d.http.post("/hooks/connec", json={"items": [SAMPLES["items"]]}, headers=basic())
        assert r.status_code == 200
        assert (await d.http.delete("/acct/g/cld-4/u/usr-9", headers=basic())).status_code == 200
        assert (await d.http.post("/maestrano/connec/notifications", json={},
                                  headers=basic())).status_code == 404
        assert [e for _, e, _, _ in rows(d)] == ["product", "user"]


def test_a_2xx_notification_survives_a_sigkill_right_after(streamd_proc: Callable[..., Streamd]) -> None:
    d = streamd_proc(f'[store]\npath = "feed.db"\n[http]\nlisten = "127.0.0.1:0"\n{SOURCE}',
                     env={"STREAMD_TEST_CONNEC_KEY": API_KEY})
    d.start()
    acked: list[str] = []
    with httpx.Client(base_url=d.url, timeout=10) as http:
        for i in range(20):
            item = copy.deepcopy(SAMPLES["items"])
            item["id"] = [{"provider": "connec", "id": f"item-{i}", "realm": GROUP}]
            r = http.post("/maestrano/connec/notifications", json={"items": [item]}, headers=basic())
            assert r.status_code == 200
            acked.append(f"item-{i}")
    d.kill()  # the moment after the last 2xx
    assert sorted(k for (k,) in d.query("SELECT key FROM events")) == sorted(acked)


def test_every_number_in_the_feed_is_a_decimal_string(streamd_proc: Callable[..., Streamd]) -> None:
    """What a real `streamd run` writes: a tax code's rates (`"sale_tax_rate": 10.0,
    "purchase_tax_rate": 0`), an integer past 2^53 and a negative zero all reach the feed
    as decimal strings, in a `Record`'s attributes as in an invoice."""
    d = streamd_proc(f'[store]\npath = "feed.db"\n[http]\nlisten = "127.0.0.1:0"\n{SOURCE}'
                     '[sinks.feed]\ntype = "file"\npath = "feed.jsonl"\n',
                     env={"STREAMD_TEST_CONNEC_KEY": API_KEY})
    d.start()
    tax_code = json.dumps({**SAMPLES["tax_codes"], "sale_tax_rate": 10.0, "purchase_tax_rate": 0,
                           "reporting_code": 123456789012345678901, "nested": [{"rate": 0}]})
    invoice = json.dumps({**SAMPLES["invoices"], "balance": "BALANCE"}).replace('"BALANCE"', "-0.00")
    body = f'{{"tax_codes": [{tax_code}], "invoices": [{invoice}]}}'.encode()
    with httpx.Client(base_url=d.url, timeout=10) as http:
        r = http.post("/maestrano/connec/notifications", content=body,
                      headers={**basic(), "Content-Type": "application/json"})
        assert r.status_code == 200 and r.json()["appended"] == 2, r.text
    lines = wait_for(lambda: feed_lines(d.dir / "feed.jsonl") if len(feed_lines(d.dir / "feed.jsonl")) == 2
                     else None, 10, "both events in the file sink")
    by_entity = {e["entity"]: e["data"] for e in map(json.loads, lines)}
    assert by_entity["tax_code"]["attributes"] == {
        "code": "OUTPUT", "sale_tax_rate": "10.0", "purchase_tax_rate": "0", "status": "ACTIVE",
        "reporting_code": "123456789012345678901", "nested": [{"rate": "0"}]}
    assert by_entity["invoice"]["unpaid"] == "0.00"
    assert b'"-0' not in b"".join(lines)
    assert d.terminate() == 0


# ---------------------------------------------------------------- the poller

def poll_config(tmp_path: Path, sim: Any, interval: str = "300ms") -> Any:
    src = sim.source_toml("mno", interval=f'"{interval}"', page_size="4",
                          backoff='{ min = "20ms", max = "300ms" }')
    return parse(f'[store]\npath = "feed.db"\n[http]\nlisten = "127.0.0.1:0"\n{src}', base_dir=tmp_path)


def polls(d: InProcess) -> int:
    return int(d.daemon.sources["mno"].polls)


async def rounds(d: InProcess, n: int, pairs: int) -> None:
    target = polls(d) + n * pairs
    await until(lambda: polls(d) >= target, 20, f"{n} more poll rounds")


def everything(sim: Any) -> set[tuple[str, str]]:
    return {(g, k) for g in sim.groups for c in wire.COLLECTIONS for k in sim.entities(g, c)}


async def test_the_poller_lists_what_changed_since_its_cursor(tmp_path: Path) -> None:
    async with connec_sim.simulator(tmp_path / "sim", connec_sim.Knobs(entities=6)) as sim:
        pairs = len(sim.groups) * len(wire.COLLECTIONS)
        async with InProcess(poll_config(tmp_path, sim)) as d:
            await rounds(d, 1, pairs)
            got = rows(d)
            assert {(t, k) for t, _, _, k in got} == everything(sim)
            assert len(got) == len(everything(sim))  # pages of 4 followed by pagination.next
            await rounds(d, 2, pairs)
            assert len(rows(d)) == len(got)  # the lookback overlap is absorbed
            listed = [e for e in sim.log if "/api/v2/" in e.path]
            assert any("updated_at gt" in unquote_plus(e.query) for e in listed)
            m = sim.mutate(created=3, updated=4, groups=["cld-4"], collections=["invoices", "items"])
            await rounds(d, 2, pairs)
            new = rows(d)[len(got):]
            changed = {(g, k) for g, _, k in m.created + m.updated}
            assert {(t, k) for t, _, _, k in new} == changed and len(new) == len(changed)
            (cursor,) = d.rows("SELECT value FROM source_state WHERE key = 'poll.cld-4.invoices'")[0]
            newest = max(e["updated_at"] for e in sim.entities("cld-4", "invoices").values())
            assert json.loads(cursor)["cursor"] == newest
        # A restart emits nothing again.
        async with InProcess(poll_config(tmp_path, sim)) as d:
            await rounds(d, 1, pairs)
            assert len(rows(d)) == len(got) + len(new)


async def test_an_entity_changed_mid_listing_is_listed_again_in_the_same_poll(tmp_path: Path) -> None:
    async with connec_sim.simulator(tmp_path / "sim", connec_sim.Knobs(entities=12)) as sim:
        pairs = len(sim.groups) * len(wire.COLLECTIONS)
        moved: list[str] = []

        def change_one(group: str, collection: str, skip: int, keys: list[str]) -> None:
            # Once: right after the first page of cld-4's invoices, an entity on it changes and
            # moves to the end, so the first entity of the second page moves onto the first.
            if (group, collection, skip) == ("cld-4", "invoices", 0) and not moved:
                moved.append(keys[0])
                sim.corrupt(group, collection, keys[0], {"reference": "changed mid-listing"})

        sim.after_page = change_one
        async with InProcess(poll_config(tmp_path, sim, "1h")) as d:
            await rounds(d, 1, pairs)
            assert moved, "the listing was not changed under the poller"
            got = rows(d)
            # Everything arrived in the one poll: the listing ran again, and the changed entity
            # came twice (before and after), every other one once.
            assert {(t, k) for t, _, _, k in got} == everything(sim)
            assert len(got) == len(everything(sim)) + 1
            assert await d.metric('streamd_source_polls_total{outcome="failed",source="mno"}') in (None, 0)
            assert (await d.http.get("/readyz")).status_code == 200
            (cursor,) = d.rows("SELECT value FROM source_state WHERE key = 'poll.cld-4.invoices'")[0]
            newest = max(e["updated_at"] for e in sim.entities("cld-4", "invoices").values())
            assert json.loads(cursor)["cursor"] == newest


async def test_under_constant_change_each_listing_still_moves_the_cursor(tmp_path: Path) -> None:
    async with connec_sim.simulator(tmp_path / "sim", connec_sim.Knobs(entities=12)) as sim:
        def change_every_page(group: str, collection: str, skip: int, keys: list[str]) -> None:
            if (group, collection) == ("cld-4", "invoices") and keys:
                sim.corrupt(group, collection, keys[0], {"reference": f"changed at {skip}"})

        sim.after_page = change_every_page
        src = sim.source_toml("mno", interval='"1h"', page_size="4", backoff='{ min = "1h", max = "1h" }')
        cfg = parse(f'[store]\npath = "feed.db"\n[http]\nlisten = "127.0.0.1:0"\n{src}', base_dir=tmp_path)
        async with InProcess(cfg) as d:
            async def failed_once() -> bool:
                return bool(await d.metric('streamd_source_polls_total{outcome="failed",source="mno"}'))
            await until(failed_once, 20, "the churning listing to give up for this poll")
            (value,) = d.rows("SELECT value FROM source_state WHERE key = 'poll.cld-4.invoices'")[0]
            cursor = json.loads(value)["cursor"]
            oldest = min(e["updated_at"] for e in sim.entities("cld-4", "invoices").values())
            # Three listings in the poll, each incomplete: the cursor still moved, past the
            # oldest invoice (the first poll had no cursor at all).
            assert cursor is not None and cursor > oldest
            assert "the listing moved while paged 3 times running" in (await d.http.get("/readyz")).text


async def test_what_a_webhook_and_the_poller_both_bring_is_appended_once(tmp_path: Path) -> None:
    async with connec_sim.simulator(tmp_path / "sim", connec_sim.Knobs(entities=3)) as sim:
        pairs = len(sim.groups) * len(wire.COLLECTIONS)
        async with InProcess(poll_config(tmp_path, sim, "1h")) as d:
            await rounds(d, 1, pairs)
            before = len(rows(d))
            m = sim.mutate(updated=2, groups=["cld-9"], collections=["organizations"])
            url = f"{d.url}/maestrano/connec/notifications"
            answers = await connec_sim.notify(sim, url, m)
            assert all(r.status_code == 200 and r.json()["appended"] == 2 for r in answers)
            assert len(rows(d)) == before + 2
            d.daemon.sources["mno"].polls = 0
        async with InProcess(poll_config(tmp_path, sim)) as d:  # the poller sees the same versions
            await rounds(d, 1, pairs)
            assert len(rows(d)) == before + 2
            assert await d.metric('streamd_source_events_duplicate_total{source="mno"}') >= 2
