"""The Asperion simulator itself, over real HTTPS on loopback: the OAuth2 flow with
rotating refresh tokens, TLS 1.3 only, the list envelope and its paging, problem
details, the knobs (429, 503, expiry), and mutate()."""

from __future__ import annotations

import base64
import ssl
import time
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import msgspec
import pytest

from streamd.providers.asperion import wire
from streamd.providers.asperion.simulator import AsperionSimulator, Knobs, Mutation, encode_record, simulator

pytestmark = pytest.mark.anyio
SECRET = "asperion-demo-secret"
REDIRECT = "http://127.0.0.1:8976/callback?from=streamd"
CENT = Decimal("0.01")


def client(sim: AsperionSimulator, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(sim.certs.ca)), timeout=5, **kwargs)


async def token(http: httpx.AsyncClient, sim: AsperionSimulator, **form: str) -> httpx.Response:
    return await http.post(sim.token_url, data={"client_id": sim.knobs.client_id, "client_secret": SECRET,
                                                **form})


async def access_token(http: httpx.AsyncClient, sim: AsperionSimulator) -> str:
    r = await token(http, sim, grant_type="refresh_token", refresh_token=sim.issue_refresh_token())
    assert r.status_code == 200, r.text
    return wire.token_decoder.decode(r.content).access_token


@asynccontextmanager
async def api(tmp_path: Path, **knobs: Any) -> AsyncIterator[tuple[AsperionSimulator, httpx.AsyncClient]]:
    """A serving simulator and a client already holding an access token, tenant 1001."""
    async with simulator(tmp_path / "certs", Knobs(**knobs)) as sim, \
            client(sim, base_url=sim.base_url) as http:
        http.headers["Authorization"] = f"Bearer {await access_token(http, sim)}"
        http.headers[wire.TENANT_HEADER] = "1001"
        yield sim, http


def problem(r: httpx.Response, status: int) -> wire.Problem:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = wire.problem_decoder.decode(r.content)
    assert body.status == status and body.title and body.traceId
    return body


# ---------------------------------------------------------------- identity server

async def test_authorize_redirects_with_a_code_that_is_exchanged_once(tmp_path: Path) -> None:
    async with simulator(tmp_path, Knobs()) as sim, client(sim) as http:
        params = {"client_id": "streamd", "scope": "asperion-api offline_access", "response_type": "code",
                  "redirect_uri": REDIRECT, "state": "s-42"}
        r = await http.get(sim.authorize_url, params=params)
        assert r.status_code == 302
        location = urlsplit(r.headers["location"])
        assert (location.scheme, location.netloc, location.path) == ("http", "127.0.0.1:8976", "/callback")
        query = parse_qs(location.query)
        assert query["from"] == ["streamd"] and query["state"] == ["s-42"]
        code = query["code"][0]

        r = await token(http, sim, grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/json")
        tok = wire.token_decoder.decode(r.content)
        assert tok.expires_in == 3600 and tok.token_type == "Bearer"
        assert tok.scope == "asperion-api offline_access" and tok.refresh_token
        assert sim.refresh_token_valid(tok.refresh_token)
        r = await token(http, sim, grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
        assert (r.status_code, r.json()["error"]) == (400, "invalid_grant")

        bearer = {"Authorization": f"Bearer {tok.access_token}"}
        r = await http.get(sim.base_url + "/administrations", headers=bearer)
        admins = wire.administrations_decoder.decode(r.content)
        assert [a.id for a in admins.data] == [1001, 1002] and all(a.name for a in admins.data)

        # A code is bound to its redirect_uri; a wrong client or response type gets no code.
        location = urlsplit((await http.get(sim.authorize_url, params=params)).headers["location"])
        again = parse_qs(location.query)["code"][0]
        r = await token(http, sim, grant_type="authorization_code", code=again,
                        redirect_uri="http://127.0.0.1:8976/other")
        assert (r.status_code, r.json()["error"]) == (400, "invalid_grant")
        r = await http.get(sim.authorize_url, params={**params, "client_id": "someone"})
        assert (r.status_code, r.json()) == (400, {"error": "invalid_client"})
        r = await http.get(sim.authorize_url, params={**params, "response_type": "token"})
        assert r.status_code == 400
        r = await http.get(sim.authorize_url, params={**params, "redirect_uri": "myapp:/callback"})
        assert r.status_code == 400


async def test_refresh_tokens_rotate_and_a_used_one_is_refused(tmp_path: Path) -> None:
    async with simulator(tmp_path, Knobs()) as sim, client(sim) as http:
        first = sim.issue_refresh_token()
        basic = base64.b64encode(f"streamd:{SECRET}".encode()).decode()
        r = await http.post(sim.token_url, data={"grant_type": "refresh_token", "refresh_token": first},
                            headers={"Authorization": f"Basic {basic}"})  # client auth by HTTP Basic
        assert r.status_code == 200, r.text
        second = r.json()["refresh_token"]
        assert second != first and not sim.refresh_token_valid(first) and sim.refresh_token_valid(second)

        r = await token(http, sim, grant_type="refresh_token", refresh_token=first)
        assert r.status_code == 400
        assert r.json() == {"error": "invalid_grant", "error_description": "refresh token already used"}
        r = await token(http, sim, grant_type="refresh_token", refresh_token="never-issued")
        assert (r.status_code, r.json()["error"]) == (400, "invalid_grant")
        r = await token(http, sim, grant_type="refresh_token", refresh_token=second)
        assert r.status_code == 200 and r.json()["refresh_token"] not in (first, second)
        assert (sim.refreshes, sim.refused_refreshes) == (2, 2)


async def test_client_authentication_and_grant_types(tmp_path: Path) -> None:
    async with simulator(tmp_path, Knobs(token_ttl=0.5)) as sim, client(sim) as http:
        refresh = sim.issue_refresh_token()
        r = await http.post(sim.token_url, data={"client_id": "streamd", "client_secret": "wrong",
                                                 "grant_type": "refresh_token", "refresh_token": refresh})
        assert (r.status_code, r.json()) == (401, {"error": "invalid_client"})
        assert sim.refresh_token_valid(refresh)  # an unauthenticated request spends nothing
        r = await token(http, sim, grant_type="password")
        assert (r.status_code, r.json()["error"]) == (400, "unsupported_grant_type")
        r = await token(http, sim, grant_type="refresh_token", refresh_token=refresh)
        assert r.json()["expires_in"] == 1  # whole seconds, at least one


async def test_tls_1_2_is_refused(tmp_path: Path) -> None:
    async with simulator(tmp_path, Knobs()) as sim:
        old = ssl.create_default_context(cafile=str(sim.certs.ca))
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        async with httpx.AsyncClient(verify=old, timeout=5) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(sim.base_url + "/administrations")
        async with client(sim) as http:
            r = await http.get(sim.base_url + "/administrations")
            assert r.status_code == 401
            tls = r.extensions["network_stream"].get_extra_info("ssl_object")
            assert tls.version() == "TLSv1.3"
        assert [e.status for e in sim.log] == [401]  # the refused handshake never became a request


# ---------------------------------------------------------------- lists and items

async def test_pages_link_absolutely_and_cover_every_record_once(tmp_path: Path) -> None:
    async with api(tmp_path, records=23) as (sim, http):
        r = await http.get("/debtors", params={"pageSize": 10})
        first = wire.page_decoder.decode(r.content)
        assert first.meta.totalCount == 23 and first.meta.pageCount == 3 and first.meta.previousPage is None
        assert first.meta.nextPage == f"{sim.base_url}/debtors?pageSize=10&page=2"
        assert first.meta.self == f"{sim.base_url}/debtors?pageSize=10&page=1"
        assert (first.meta.administrationId, first.meta.profileName) == (1001, "Demo Gebruiker")
        ids: list[int | str] = []
        url: str | None = sim.base_url + "/debtors?pageSize=10"
        while url:
            page = wire.page_decoder.decode((await http.get(url)).content)
            for raw in page.data:
                debtor = msgspec.json.decode(raw, type=wire.Debtor)
                ids.append(debtor.id)
                assert msgspec.json.decode(raw)["_meta"]["self"] == f"{sim.base_url}/debtors/{debtor.id}"
            last, url = page, page.meta.nextPage
        assert sorted(ids, key=int) == list(range(1, 24))
        assert last.meta.previousPage == f"{sim.base_url}/debtors?pageSize=10&page=2" and len(last.data) == 3

        past = wire.page_decoder.decode((await http.get("/debtors?page=9&pageSize=10")).content)
        assert past.data == [] and past.meta.nextPage is None and past.meta.totalCount == 23
        default = (await http.get("/debtors")).json()
        assert len(default["_data"]) == 23 and default["_meta"]["nextPage"] is None  # 25 a page by default

        for query, field in (("pageSize=101", "PageSize"), ("pagesize=0", "PageSize"),
                             ("pageSize=ten", "PageSize"), ("page=0", "Page")):
            errors = problem(await http.get(f"/debtors?{query}"), 400).errors
            assert errors and list(errors) == [field] and errors[field], query


async def test_orderby_metaonly_and_filters(tmp_path: Path) -> None:
    async with api(tmp_path, records=12) as (sim, http):
        r = (await http.get("/salesinvoices", params={"orderby": "-id", "pageSize": 5})).json()
        assert [d["id"] for d in r["_data"]] == [12, 11, 10, 9, 8]
        assert r["_meta"]["nextPage"] == f"{sim.base_url}/salesinvoices?pageSize=5&page=2&orderby=-id"
        r = (await http.get("/salesinvoices", params={"orderby": "amountInclVat"})).json()
        amounts = [Decimal(str(d["amountInclVat"])) for d in r["_data"]]
        assert amounts == sorted(amounts)
        assert "OrderBy" in (problem(await http.get("/articles?orderby=colour"), 400).errors or {})

        r = await http.get("/articles", params={"MetaOnly": "true", "pageSize": 5})
        assert set(r.json()) == {"_meta"} and r.json()["_meta"]["totalCount"] == 12
        assert r.json()["_meta"]["pageCount"] == 3

        r = (await http.get("/articles?Id=3&Id=7")).json()  # repeated = OR
        assert [d["id"] for d in r["_data"]] == [3, 7] and r["_meta"]["totalCount"] == 2


async def test_items_tenants_and_not_found(tmp_path: Path) -> None:
    async with api(tmp_path, records=5) as (sim, http):
        r = await http.get("/salesinvoices/3")
        invoice = msgspec.json.decode(r.content, type=wire.SalesInvoice)
        assert invoice.id == 3
        rec = sim.records("1001", "salesinvoices")["3"]
        assert invoice.amountInclVat == rec["amountInclVat"]
        plain = {k: v for k, v in rec.items() if k != "lines"}  # lines: the with-lines path only
        assert r.content.startswith(encode_record(plain)[:-1] + b',"_meta":')  # byte for byte
        with_lines = await http.get("/salesinvoiceswithlines/3")
        assert with_lines.content.startswith(encode_record(rec)[:-1] + b',"_meta":')
        assert with_lines.json()["lines"]["_data"][0]["amount"] == float(rec["amountExclVat"])
        assert r.json()["_meta"] == {"self": f"{sim.base_url}/salesinvoices/3", "administrationId": 1001,
                                     "administrationName": r.json()["_meta"]["administrationName"],
                                     "profileName": "Demo Gebruiker"}
        problem(await http.get("/salesinvoices/99"), 404)
        problem(await http.get("/salesinvoices/abc"), 404)
        problem(await http.get("/vatcodes"), 404)

        other = (await http.get("/debtors/1", headers={wire.TENANT_HEADER: "1002"})).json()
        del http.headers[wire.TENANT_HEADER]
        problem(await http.get("/debtors"), 400)
        problem(await http.get("/debtors", headers={wire.TENANT_HEADER: "4711"}), 403)
        alt = await http.get("/debtors/1", headers={wire.TENANT_HEADER_ALT: "1001"})
        assert alt.status_code == 200 and alt.json()["name"] != other["name"]  # tenants hold other data
        assert (await http.get("/administrations")).status_code == 200  # no tenant needed
        assert [(e.path, e.tenant, e.status) for e in sim.log[-3:]] == [
            ("/v1/debtors", "4711", 403), ("/v1/debtors/1", "1001", 200), ("/v1/administrations", None, 200)]
        r = await http.get("/administrations/1002")
        admin = msgspec.json.decode(r.content, type=wire.Administration)
        assert admin.id == 1002 and admin.name
        problem(await http.get("/administrations/4711"), 404)


async def test_a_missing_or_expired_bearer_token_is_401(tmp_path: Path) -> None:
    async with api(tmp_path, records=2) as (sim, http):
        assert (await http.get("/debtors")).status_code == 200
        sim.expire_access_tokens()
        for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"}):
            r = await http.get("/debtors", headers=headers)
            problem(r, 401)
            assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        r = await http.get("/debtors", headers={"Authorization": ""})
        assert r.status_code == 401

        sim.knobs.token_ttl = 0.02
        http.headers["Authorization"] = f"Bearer {await access_token(http, sim)}"
        await anyio.sleep(0.05)  # outlive the tiny lifetime
        problem(await http.get("/debtors"), 401)


async def test_latency_throttling_and_failures_count_every_api_request(tmp_path: Path) -> None:
    async with api(tmp_path, records=2, throttle_every=3, retry_after=2.5) as (sim, http):
        statuses = [(await http.get("/debtors")).status_code for _ in range(6)]
        assert statuses == [200, 200, 429, 200, 200, 429]
        r = await http.get("/administrations")  # request 7
        r = await http.get("/administrations")  # request 8
        r = await http.get("/administrations")  # request 9
        problem(r, 429)
        assert r.headers["retry-after"] == "3"

        sim.knobs.throttle_every, sim.knobs.fail_every, sim.knobs.latency = 0, 2, 0.05
        started = time.monotonic()
        statuses = [(await http.get("/debtors")).status_code for _ in range(2)]
        assert statuses == [503, 200] and time.monotonic() - started >= 0.1  # requests 10 and 11
        sim.knobs.throttle_every = 4  # both hit request 12: the 429 wins
        r = await http.get("/debtors")
        problem(r, 429)
        token_calls = [e for e in sim.log if e.path == "/connect/token"]
        assert len(token_calls) == 1 and token_calls[0].status == 200  # identity endpoints: no knobs


# ---------------------------------------------------------------- records and mutate()

def test_records_are_deterministic_and_decode_with_the_wire_structs(tmp_path: Path) -> None:
    a = simulator(tmp_path / "a", Knobs(records=40, seed=7))
    b = simulator(tmp_path / "b", Knobs(records=40, seed=7))
    assert a.records("1002", "salesinvoices") == b.records("1002", "salesinvoices")
    assert a.records("1001", "debtors") != a.records("1002", "debtors")
    for resource, struct in wire.RECORD_TYPES.items():
        recs = a.records("1001", resource)
        assert sorted(recs, key=int) == [str(i) for i in range(1, 41)]
        for rec in recs.values():
            assert set(rec) == set(struct.__struct_fields__)
            msgspec.json.decode(encode_record(rec), type=struct)
    statuses = set()
    for inv in a.records("1001", "salesinvoices").values():
        assert inv["vatAmount"] == (inv["amountExclVat"] * Decimal("0.21")).quantize(CENT, ROUND_HALF_UP)
        assert inv["amountInclVat"] == inv["amountExclVat"] + inv["vatAmount"]
        assert inv["amountOpen"] == (0 if inv["status"] == 7 else inv["amountInclVat"])
        assert inv["date"].endswith("T00:00:00") and len(inv["date"]) == 19
        statuses.add(inv["status"])
    assert {6, 7} <= statuses
    for debtor in a.records("1001", "debtors").values():
        iban = debtor["iban"]
        assert iban.startswith("NL") and int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1
        assert len(debtor["dateLastChange"]) == 19 and debtor["dateLastChange"] >= debtor["dateAdded"]


async def test_mutate_creates_updates_and_deletes_visibly(tmp_path: Path) -> None:
    async with api(tmp_path, records=5) as (sim, http):
        before = {(t, r): sim.records(t, r) for t in sim.knobs.tenants for r in sim.knobs.resources}
        m = sim.mutate(7, 6, 6)
        assert (len(m.created), len(m.updated), len(m.deleted)) == (7, 6, 6)
        assert len({(t, r) for t, r, _ in m.updated}) == 6  # one of each of the six (tenant, resource) pairs
        assert not set(m.updated) & set(m.deleted)
        assert all(int(i) > 5 for _, _, i in m.created)
        for t, r, i in m.deleted:
            assert i not in sim.records(t, r)
            problem(await http.get(f"/{r}/{i}", headers={wire.TENANT_HEADER: t}), 404)
        for t, r, i in m.created:
            rec = await http.get(f"/{r}/{i}", headers={wire.TENANT_HEADER: t})
            msgspec.json.decode(rec.content, type=wire.RECORD_TYPES[r])
        for t, r, i in m.updated:
            old = before[(t, r)][i]
            new = msgspec.json.decode((await http.get(f"/{r}/{i}", headers={
                wire.TENANT_HEADER: t})).content, type=wire.RECORD_TYPES[r])
            if isinstance(new, wire.Debtor):
                assert new.emailAddress != old["emailAddress"] and new.dateLastChange > old["dateLastChange"]
            elif isinstance(new, wire.SalesInvoice) and old["status"] == 6:
                assert new.status == 7 and new.amountOpen == 0
            elif isinstance(new, wire.SalesInvoice):
                assert new.description != old["description"] and new.paymentDueDate != old["paymentDueDate"]
            else:
                assert isinstance(new, wire.Article)
                assert new.salesPrice == old["salesPrice"] + 1 and new.dateLastChange > old["dateLastChange"]

        # Ids are never reused (id 6 was created above); a mutation can be confined to some
        # pairs; asking for more than there is is refused as a whole.
        m2 = sim.mutate(0, 0, 1, tenants=["1002"], resources=["articles"])
        m2 = sim.mutate(1, 0, 0, tenants=["1002"], resources=["articles"])
        assert m2 == Mutation(created=[("1002", "articles", "7")], updated=[], deleted=[])
        now = sim.records("1001", "debtors")
        with pytest.raises(ValueError):
            sim.mutate(0, 4, 3, tenants=["1001"], resources=["debtors"])
        assert sim.records("1001", "debtors") == now and len(now) == 6


def test_source_toml_points_at_the_simulator(tmp_path: Path) -> None:
    sim = simulator(tmp_path, Knobs(client_id="streamd-test"))
    sim.url = "https://127.0.0.1:4443"
    table = tomllib.loads(sim.source_toml("books", interval='"5s"'))["sources"]["books"]
    secret = tmp_path / "asperion-client-secret"
    assert table == {"provider": "asperion", "base_url": "https://127.0.0.1:4443/v1",
                     "authorize_url": "https://127.0.0.1:4443/connect/authorize",
                     "token_url": "https://127.0.0.1:4443/connect/token", "client_id": "streamd-test",
                     "client_secret": f"file:{secret}", "ca": str(sim.certs.ca), "interval": "5s"}
    assert secret.read_text() == SECRET + "\n" and secret.stat().st_mode & 0o777 == 0o600
