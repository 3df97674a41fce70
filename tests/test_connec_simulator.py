"""The Connec! simulator itself, over real HTTPS on loopback: HTTP Basic, the API v2
lists (paging, `$filter`, `$orderby`, errors), the knobs (500 every J-th, latency), the
generated entities and mutate(); and the webhook sender against a real loopback
receiver."""

from __future__ import annotations

import base64
import json
import operator
import ssl
import time
import tomllib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import msgspec
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from streamd.asgi import Server, bind
from streamd.providers.connec import wire
from streamd.providers.connec.simulator import (
    DEFAULT_TOP,
    STAMP,
    ConnecSimulator,
    Knobs,
    encode_entity,
    notification_for,
    notify,
    partly_invalid_notification,
    send_group_deleted,
    send_notification,
    send_user_removed,
    simulator,
)

pytestmark = pytest.mark.anyio
UNTIL = datetime(2024, 6, 30, 12, tzinfo=UTC)  # in the past: every history stamp is before any mutate()
UNTIL_STAMP = UNTIL.strftime(STAMP)
Entity = dict[str, Any]
REFERENCES = {"organization_id": "organizations", "person_id": "people", "item_id": "items",
              "tax_code_id": "tax_codes", "sale_tax_code_id": "tax_codes", "account_id": "accounts"}


def client(sim: ConnecSimulator, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(sim.ca_path)), timeout=5, **kwargs)


@asynccontextmanager
async def api(tmp_path: Path, **knobs: Any) -> AsyncIterator[tuple[ConnecSimulator, httpx.AsyncClient]]:
    """A serving simulator (history ending UNTIL unless told) and a client with its credentials."""
    knobs.setdefault("until", UNTIL)
    async with simulator(tmp_path / "certs", Knobs(**knobs)) as sim, \
            client(sim, base_url=sim.api_url, auth=(sim.api_id, sim.api_key)) as http:
        yield sim, http


def path(group: str, collection: str) -> str:
    return wire.API_PATH.format(group_id=group, collection=collection)


def error(r: httpx.Response, status: int) -> str | None:
    """The detail of an error answer (checking its shape)."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    (entry,) = r.json()["errors"]
    assert entry["code"] == status and entry["title"] and set(entry) <= {"code", "title", "detail"}
    detail: str | None = entry.get("detail")
    return detail


async def page(http: httpx.AsyncClient, url: str, **params: Any) -> tuple[list[Entity], dict[str, Any]]:
    r = await http.get(url, params=params or None)  # {} would replace the query of a `next` URL
    assert r.status_code == 200, r.text
    body = r.json()
    collection = urlsplit(url).path.rsplit("/", 1)[1]
    assert set(body) == {collection, "pagination"}
    return body[collection], body["pagination"]


async def listing(http: httpx.AsyncClient, group: str, collection: str, params: dict[str, str] | None = None,
                  top: int = 4) -> list[Entity]:
    """Every page, following `pagination.next`; checks `total` and that the last page has no next."""
    url = path(group, collection)
    entities, pagination = await page(http, url, **{"$top": top, **(params or {})})
    total, out = pagination["total"], list(entities)
    while "next" in pagination:
        nxt = urlsplit(pagination["next"])
        assert f"{nxt.scheme}://{nxt.netloc}" == str(http.base_url).rstrip("/")  # absolute, same host
        entities, pagination = await page(http, pagination["next"])
        assert pagination["total"] == total and len(entities) <= top
        out += entities
    assert len(out) == total
    return out


def key(e: Entity) -> str:
    return str(e["id"][0]["id"])


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# ---------------------------------------------------------------- HTTP Basic and routes

async def test_http_basic_is_required(tmp_path: Path) -> None:
    async with api(tmp_path, entities=2) as (sim, http):
        url = path("cld-4", "invoices")
        r = await http.get(url)
        assert r.status_code == 200 and len(r.json()["invoices"]) == 2
        assert r.extensions["network_stream"].get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        for auth in (None, (sim.api_id, "wrong"), ("someone", sim.api_key), (sim.api_id + ":", sim.api_key)):
            r = await http.get(url, auth=auth)  # None: no credentials
            assert error(r, 401) is None and r.json() == {"errors": [{"code": 401, "title": "Unauthorized"}]}
            assert r.headers["www-authenticate"].startswith("Basic")
        no_colon = "Basic " + base64.b64encode(b"no-colon").decode()
        for header in ("Bearer " + sim.api_key, "Basic !!!", no_colon, ""):
            error(await http.get(url, headers={"Authorization": header}, auth=None), 401)
        error(await http.get(path("cld-0", "invoices"), auth=None), 401)  # before the route

        sim.knobs.api_key = "rotated"
        error(await http.get(url), 401)
        assert (await http.get(url, auth=(sim.api_id, "rotated"))).status_code == 200


async def test_unknown_groups_collections_and_paths_are_404(tmp_path: Path) -> None:
    async with api(tmp_path, entities=1) as (_, http):
        assert "cld-0" in (error(await http.get(path("cld-0", "invoices")), 404) or "")
        assert "journals" in (error(await http.get(path("cld-9", "journals")), 404) or "")
        for other in ("/api/v2/cld-4", "/api/v1/cld-4/invoices", "/api/v2/cld-4/invoices/x", "/"):
            error(await http.get(other), 404)
        assert (await http.get(path("cld-9", "tax_codes") + "/")).status_code == 200


# ---------------------------------------------------------------- paging, filters, order

async def test_pages_cover_every_entity_once(tmp_path: Path) -> None:
    async with api(tmp_path, entities=23) as (sim, http):
        for group in sim.groups:
            for collection in wire.COLLECTIONS:
                got = await listing(http, group, collection, top=5)
                assert sorted(map(key, got)) == sorted(sim.entities(group, collection))
                stamps = [e["updated_at"] for e in got]
                assert stamps == sorted(stamps)  # updated_at asc by default
        got = await listing(http, "cld-4", "invoices", top=wire.MAX_TOP)
        entities, pagination = await page(http, path("cld-4", "invoices"))  # $top 100 by default
        assert got == entities and pagination == {"total": 23} and DEFAULT_TOP >= 23
        entities, pagination = await page(http, path("cld-4", "invoices"), **{"$top": 20})
        assert len(entities) == 20 and pagination["next"].endswith("$top=20&$skip=20")
        entities, pagination = await page(http, path("cld-4", "invoices"), **{"$skip": 20, "$top": 3})
        assert [key(e) for e in entities] == [key(e) for e in got[20:]] and "next" not in pagination
        assert await page(http, path("cld-4", "invoices"), **{"$skip": 99}) == ([], {"total": 23})


async def test_filter_matches_a_brute_force_filter(tmp_path: Path) -> None:
    async with api(tmp_path, entities=30) as (sim, http):
        for group, collection in (("cld-4", "invoices"), ("cld-9", "people")):
            everything = sim.entities(group, collection)
            stamps = sorted(e["updated_at"] for e in everything.values())
            created = sorted(e["created_at"] for e in everything.values())
            bounds = [stamps[0], stamps[len(stamps) // 2], stamps[-1], "2000-01-01T00:00:00Z",
                      stamps[7].replace("Z", ".5Z"), at(stamps[12]).astimezone(
                          datetime.now().astimezone().tzinfo).isoformat()]
            ops: dict[str, Callable[[datetime, datetime], bool]] = {
                "gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le, "eq": operator.eq}
            for bound in bounds:
                for op, test in ops.items():
                    want = sorted(k for k, e in everything.items() if test(at(e["updated_at"]), at(bound)))
                    got = await listing(http, group, collection, {"$filter": f"updated_at {op} '{bound}'"},
                                        top=7)
                    assert sorted(map(key, got)) == want, (op, bound)
            low, high = created[5], stamps[-5]
            both = f"created_at ge '{low}' AND updated_at lt '{high}'"
            got = await listing(http, group, collection, {"$filter": both, "$orderby": "created_at desc"})
            want = [k for k, e in everything.items() if e["created_at"] >= low and e["updated_at"] < high]
            assert sorted(map(key, got)) == sorted(want) and len(want) > 5
            assert [e["created_at"] for e in got] == sorted((e["created_at"] for e in got), reverse=True)


async def test_orderby(tmp_path: Path) -> None:
    async with api(tmp_path, entities=12) as (sim, http):
        invoices = sim.entities("cld-4", "invoices")
        desc = await listing(http, "cld-4", "invoices", {"$orderby": "updated_at DESC"})
        assert [e["updated_at"] for e in desc] == sorted((e["updated_at"] for e in desc), reverse=True)
        by_total = await listing(http, "cld-4", "invoices", {"$orderby": "amount.total_amount"})
        totals = [Decimal(str(e["amount"]["total_amount"])) for e in by_total]
        assert totals == sorted(totals) and len(set(totals)) > 1  # as numbers, not as text
        numbers = await listing(http, "cld-4", "invoices", {"$orderby": " transaction_number desc "})
        assert [e["transaction_number"] for e in numbers] == sorted(
            (e["transaction_number"] for e in invoices.values()), reverse=True)
        names = await listing(http, "cld-9", "organizations", {"$orderby": "name asc"})
        assert [e["name"] for e in names] == sorted(
            e["name"] for e in sim.entities("cld-9", "organizations").values())
        nowhere = await listing(http, "cld-4", "invoices", {"$orderby": "no_such_field desc"})
        assert [key(e) for e in nowhere] == list(invoices)  # all null: creation order


async def test_bad_parameters_are_400(tmp_path: Path) -> None:
    async with api(tmp_path, entities=1) as (_, http):
        url = path("cld-4", "invoices")
        bad: list[dict[str, str]] = [
            {"$top": "0"}, {"$top": str(wire.MAX_TOP + 1)}, {"$top": "ten"}, {"$top": ""}, {"$skip": "-1"},
            {"$skip": "1.5"}, {"$orderby": "updated_at sideways"}, {"$orderby": ""},
            {"$filter": "updated_at gt 2024-01-01T00:00:00Z"}, {"$filter": "status eq 'PAID'"},
            {"$filter": "updated_at after '2024-01-01T00:00:00Z'"}, {"$filter": "updated_at gt 'yesterday'"},
            {"$filter": "updated_at gt '2024-01-01T00:00:00Z' or created_at gt '2024-01-01T00:00:00Z'"},
            {"$filter": "updated_at gt '2024-01-01T00:00:00Z' and"}, {"$filter": ""}, {"$format": "json"}]
        for params in bad:
            assert error(await http.get(url, params=params), 400), params
        ok = await http.get(url, params={"$top": wire.MAX_TOP, "$skip": 0, "other": "ignored"})
        assert ok.status_code == 200


# ---------------------------------------------------------------- mutate()

async def test_mutations_show_up_in_changed_since_listings(tmp_path: Path) -> None:
    async with api(tmp_path) as (sim, http):
        before = {(g, c): sim.entities(g, c) for g in sim.groups for c in wire.COLLECTIONS}
        newest = max(e["updated_at"] for snapshot in before.values() for e in snapshot.values())
        assert newest <= UNTIL_STAMP
        since = {"$filter": f"updated_at gt '{newest}'"}
        for group in sim.groups:
            assert (await page(http, path(group, "invoices"), **since))[1] == {"total": 0}

        m = sim.mutate(created=6, updated=8)
        assert len(m.created) == 6 and len(m.updated) >= 8 and not set(m.created) & set(m.updated)
        changed: dict[tuple[str, str], set[str]] = {}
        for group, collection, k in m.created + m.updated:
            changed.setdefault((group, collection), set()).add(k)
        for group in sim.groups:
            for collection in wire.COLLECTIONS:
                got = await listing(http, group, collection, since)
                assert set(map(key, got)) == changed.get((group, collection), set())
                for e in got:
                    old = before[group, collection].get(key(e))
                    if old is None:  # created
                        assert e["created_at"] == e["updated_at"] > newest
                        assert (group, collection, key(e)) in m.created
                    else:  # changed: a later stamp and another value
                        assert at(e["updated_at"]) >= at(old["updated_at"]) + timedelta(seconds=1)
                        assert e != json.loads(encode_entity(old))
        assert sim.mutate(updated=1) != sim.mutate(updated=1)  # a function of the calls so far
        with pytest.raises(ValueError):
            sim.mutate(updated=10_000)
        with pytest.raises(ValueError):
            sim.mutate(created=1, collections=["company"])


async def test_each_change_moves_updated_at_and_invoices_get_paid(tmp_path: Path) -> None:
    sim = simulator(tmp_path, Knobs(until=UNTIL, entities=10, groups=("cld-1",)))
    invoices = sim.entities("cld-1", "invoices")
    sim.mutate(updated=10, collections=["invoices"])
    for k, old in invoices.items():
        new = sim.entity("cld-1", "invoices", k)
        assert new["updated_at"] > old["updated_at"] and new["created_at"] == old["created_at"]
        if old["status"] == "AUTHORISED":
            assert (new["status"], new["balance"]) == ("PAID", 0)
        elif old["status"] == "DRAFT":
            assert new["status"] == "AUTHORISED" and new["balance"] == old["balance"]
        else:
            assert new["title"] == old["title"] + " (rev 1)"
    stamps = []
    for _ in range(3):  # within one second: still a second apart each
        sim.mutate(updated=1, collections=["company"])
        (company,) = sim.entities("cld-1", "company").values()
        stamps.append(at(company["updated_at"]))
    assert stamps[1] - stamps[0] >= timedelta(seconds=1) and stamps[2] - stamps[1] >= timedelta(seconds=1)

    sim.mutate(created=3, collections=["invoices"])  # open ones, to pay
    created = sim.mutate(created=20, collections=["payments"])
    assert created.updated and {c for _, c, _ in created.updated} == {"invoices"}
    for group, collection, k in created.created:
        payment = sim.entity(group, collection, k)
        for line in payment["payment_lines"]:
            for link in line["linked_transactions"]:
                assert link["class"] == "Invoice"
                invoice = sim.entity(group, "invoices", link["id"][0]["id"])
                assert invoice["status"] == "PAID" and invoice["balance"] == 0
                assert (group, "invoices", key(invoice)) in created.updated


async def test_corrupted_entities_are_served_as_changes(tmp_path: Path) -> None:
    async with api(tmp_path, entities=4, groups=("cld-2",)) as (sim, http):
        first, second, third = list(sim.entities("cld-2", "invoices"))[:3]
        untouched = sim.entities("cld-2", "invoices")
        sim.corrupt("cld-2", "invoices", first, {"amount.currency": "EURO", "extra.field": 1})
        sim.corrupt("cld-2", "invoices", second, {"id": None, "balance": "lots"})
        bad_stamp = sim.corrupt("cld-2", "invoices", third, {"transaction_date": None})
        assert untouched[first]["amount"]["currency"] != "EURO"  # a snapshot keeps the old state
        sim.corrupt("cld-2", "invoices", third, {"updated_at": "yesterday"})
        got = await listing(http, "cld-2", "invoices", {"$filter": f"updated_at gt '{UNTIL_STAMP}'"})
        assert len(got) == 2 and "transaction_date" not in bad_stamp  # a bad stamp matches no filter
        by_currency = {e["amount"]["currency"]: e for e in got}
        assert by_currency["EURO"]["extra"] == {"field": 1} and key(by_currency["EURO"]) == first
        (no_id,) = [e for e in got if "id" not in e]
        assert no_id["balance"] == "lots"
        everything = await listing(http, "cld-2", "invoices", {"$orderby": "balance desc"})
        assert len(everything) == 4 and everything[0] is not None


# ---------------------------------------------------------------- knobs and the log

async def test_fail_every_and_latency(tmp_path: Path) -> None:
    async with api(tmp_path, entities=1, fail_every=3) as (sim, http):
        url = path("cld-4", "items")
        statuses = [(await http.get(url)).status_code for _ in range(2)]
        assert error(await http.get(url, params={"$top": "2"}), 500) is None
        statuses += [(await http.get(url)).status_code, (await http.get(url, auth=("x", "y"))).status_code]
        error(await http.get("/nowhere"), 500)
        assert statuses == [200, 200, 200, 401] and sim.api_requests == 6
        assert [(e.method, e.path, e.query, e.status) for e in sim.log[1:3]] == [
            ("GET", url, "", 200), ("GET", url, "%24top=2", 500)]
        assert all(a.at <= b.at for a, b in zip(sim.log, sim.log[1:], strict=False))

        sim.knobs.fail_every, sim.knobs.latency = 0, 0.1
        started = time.monotonic()
        assert (await http.get(url)).status_code == 200
        assert time.monotonic() - started >= 0.1


# ---------------------------------------------------------------- the entities

def test_entities_decode_add_up_and_are_deterministic(tmp_path: Path) -> None:
    sim = simulator(tmp_path / "a", Knobs(seed=7, until=UNTIL, entities=25))
    same = simulator(tmp_path / "b", Knobs(seed=7, until=UNTIL, entities=25))
    other = simulator(tmp_path / "c", Knobs(seed=8, until=UNTIL, entities=25))
    providers: set[str] = set()
    for group in sim.groups:
        every = {c: sim.entities(group, c) for c in wire.COLLECTIONS}
        assert every == {c: same.entities(group, c) for c in wire.COLLECTIONS}
        assert every != {c: other.entities(group, c) for c in wire.COLLECTIONS}
        assert len(every["company"]) == 1 and all(len(v) == 25 for c, v in every.items() if c != "company")
        currency = next(iter(every["company"].values()))["currency"]
        for collection, entities in every.items():
            for k, e in entities.items():
                raw = encode_entity(e)
                if collection in wire.RECORD_TYPES:
                    decoded = msgspec.json.decode(raw, type=wire.RECORD_TYPES[collection])
                    assert decoded.updated_at == e["updated_at"]
                ids = wire.ids_decoder.decode(raw)
                assert isinstance(ids.id, list)
                assert ids.id[0] == wire.IdRef(provider="connec", id=k, realm=group)
                providers.update(str(i.provider) for i in ids.id)
                assert e["group_id"] == group and e["created_at"] <= e["updated_at"] <= UNTIL_STAMP
                assert datetime.strptime(e["updated_at"], STAMP)
                for name, table in REFERENCES.items():
                    for target in e.get(name) or ():
                        assert target["id"] in every[table]
        paid: dict[str, Decimal] = {}
        for payment in every["payments"].values():
            lines = payment["payment_lines"]
            assert payment["amount"]["total_amount"] == sum(line["amount"] for line in lines)
            for line in lines:
                for link in line["linked_transactions"]:
                    invoice = every["invoices"][link["id"][0]["id"]]
                    assert link["class"] == "Invoice" and invoice["created_at"] <= payment["created_at"]
                    paid[key(invoice)] = paid.get(key(invoice), Decimal(0)) + link["applied_amount"]
        statuses = set()
        for k, inv in every["invoices"].items():
            amount, lines = inv["amount"], inv["lines"]
            statuses.add(inv["status"])
            assert amount["currency"] == currency and inv["type"] in wire.INVOICE_TYPE
            assert amount["net_amount"] == sum(line["total_price"]["net_amount"] for line in lines)
            assert amount["total_amount"] == amount["net_amount"] + amount["tax_amount"]
            for line in lines:
                total, unit = line["total_price"]["net_amount"], line["unit_price"]["net_amount"]
                assert total == line["quantity"] * unit
            if inv["status"] in ("PAID", "AUTHORISED"):
                assert inv["balance"] == amount["total_amount"] - paid.get(k, 0)
            else:
                assert k not in paid
                assert inv["balance"] == (0 if inv["status"] == "VOIDED" else amount["total_amount"])
            assert (inv["status"] == "PAID") == (inv["balance"] == 0 and inv["status"] != "VOIDED")
        assert statuses == set(wire.INVOICE_STATUS) and paid
    assert "connec" in providers and len(providers) > 1  # sometimes a second id, from another app
    raw = b"".join(encode_entity(e) for e in sim.entities("cld-4", "invoices").values())
    assert b'"tax_amount":' in raw and b".00," in raw  # amounts: numbers with two decimals


def test_defaults_and_bad_knobs(tmp_path: Path) -> None:
    started = time.process_time()  # this process's CPU: other processes' load does not count
    sim = simulator(tmp_path / "a")
    assert sim.groups == ("cld-4", "cld-9") and time.process_time() - started < 2
    assert all(len(sim.entities(g, "invoices")) == 10 for g in sim.groups)
    assert sim.until <= datetime.now(UTC) and sim.until.microsecond == 0
    newest = max(e["updated_at"] for e in sim.entities("cld-9", "invoices").values())
    assert newest <= sim.until.strftime(STAMP)
    for knobs in (Knobs(groups=()), Knobs(groups=("a", "a")), Knobs(groups=("a/b",)), Knobs(entities=-1)):
        with pytest.raises(ValueError):
            simulator(tmp_path / "b", knobs)


def test_source_toml_points_at_the_simulator(tmp_path: Path) -> None:
    sim = simulator(tmp_path, Knobs(entities=1))
    sim.url = "https://127.0.0.1:4443"
    table = tomllib.loads(sim.source_toml("books", interval='"5s"'))["sources"]["books"]
    secret = tmp_path / "connec-api-key"
    assert table == {"provider": "connec", "api_url": "https://127.0.0.1:4443", "api_id": "streamd-demo",
                     "api_key": f"file:{secret}", "poll": True, "groups": ["cld-4", "cld-9"],
                     "ca": str(sim.ca_path), "interval": "5s"}
    assert secret.read_text() == "connec-demo-key\n" and secret.stat().st_mode & 0o777 == 0o600
    assert tomllib.loads(sim.source_toml("b", poll=False))["sources"]["b"]["poll"] is False


# ---------------------------------------------------------------- the webhook sender

Received = tuple[str, str, str | None, str | None, bytes]  # method, path, authorization, content-type, body


@asynccontextmanager
async def receiver() -> AsyncIterator[tuple[str, list[Received]]]:
    """A plain-HTTP loopback server that records every request and answers 200 (204 for DELETE)."""
    got: list[Received] = []

    async def record(request: Request) -> Response:
        got.append((request.method, request.url.path, request.headers.get("authorization"),
                    request.headers.get("content-type"), await request.body()))
        return Response(status_code=204 if request.method == "DELETE" else 200)

    app = Starlette(routes=[Route("/{path:path}", record, methods=["POST", "DELETE"])])
    server = Server(uvicorn.Config(app, lifespan="off", log_config=None, access_log=False))
    sock = bind("127.0.0.1", 0)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            with anyio.fail_after(5):
                while not server.started:  # noqa: ASYNC110 - uvicorn's flag, no event to wait on
                    await anyio.sleep(0.005)
            try:
                yield f"http://127.0.0.1:{sock.getsockname()[1]}", got
            finally:
                server.should_exit = True
    finally:
        sock.close()


async def test_sender_posts_notifications_and_account_webhooks(tmp_path: Path) -> None:
    sim = simulator(tmp_path, Knobs(until=UNTIL, entities=3))
    basic = "Basic " + base64.b64encode(f"{sim.api_id}:{sim.api_key}".encode()).decode()
    m = sim.mutate(created=4, updated=3)
    bodies = notification_for(sim, m)
    assert set(bodies) == {g for g, _, _ in m.created + m.updated}
    for group, notification in bodies.items():
        refs = {(c, k) for g, c, k in m.created + m.updated if g == group}
        assert {(c, key(e)) for c, entities in notification.items() for e in entities} == refs
        assert all(e["group_id"] == group for entities in notification.values() for e in entities)
    assert notification_for(sim, [("cld-4", "company", k) for k in sim.entities("cld-4", "company")] * 2) == {
        "cld-4": {"company": list(sim.entities("cld-4", "company").values())}}  # each once
    broken = partly_invalid_notification(sim, "cld-9")
    assert broken["invoices"][1]["amount"]["currency"] == "EURO" and "id" not in broken["invoices"][2]
    assert sim.entity("cld-9", "invoices", key(broken["invoices"][1]))["amount"]["currency"] != "EURO"

    async with receiver() as (base, got), httpx.AsyncClient(timeout=5) as http:
        url = base + wire.NOTIFICATIONS_PATH
        responses = await notify(sim, url, m)
        assert [r.status_code for r in responses] == [200] * len(bodies)
        r = await send_notification(url + "/tenant-a", broken, api_id=sim.api_id, api_key=sim.api_key)
        assert r.status_code == 200
        r = await send_notification(url, b"{not json", api_id=sim.api_id, api_key="wrong", client=http)
        assert r.status_code == 200 and not http.is_closed
        r = await send_group_deleted(base, "cld-4", api_id=sim.api_id, api_key=sim.api_key, client=http)
        assert r.status_code == 204
        await send_user_removed(base + "/", "cld-9", "usr-2", api_id=sim.api_id, api_key=sim.api_key)
        await send_group_deleted(base, "cld 1", api_id=sim.api_id, api_key=sim.api_key, path="/g/{id}/gone")

    posts = got[:len(bodies)]
    for (method, where, auth, kind, body), expected in zip(posts, bodies.values(), strict=True):
        assert (method, where, auth, kind) == ("POST", wire.NOTIFICATIONS_PATH, basic, "application/json")
        assert json.loads(body) == json.loads(encode_entity(expected))  # amounts as JSON numbers
        decoded = wire.body_decoder.decode(body)
        for collection, raw in decoded.items():
            for entity in wire.list_decoder.decode(raw):
                if collection in wire.RECORD_TYPES:
                    msgspec.json.decode(entity, type=wire.RECORD_TYPES[collection])
    rest = [(method, where, auth) for method, where, auth, _, _ in got[len(bodies):]]
    wrong = "Basic " + base64.b64encode(f"{sim.api_id}:wrong".encode()).decode()
    assert rest == [("POST", wire.NOTIFICATIONS_PATH + "/tenant-a", basic),
                    ("POST", wire.NOTIFICATIONS_PATH, wrong),
                    ("DELETE", "/maestrano/account/groups/cld-4", basic),
                    ("DELETE", "/maestrano/account/groups/cld-9/users/usr-2", basic),
                    ("DELETE", "/g/cld 1/gone", basic)]
    assert json.loads(got[len(bodies)][4])["invoices"][1]["amount"]["currency"] == "EURO"
    assert got[len(bodies) + 1][4] == b"{not json"

