"""The HORISEN simulator itself, over real HTTPS on loopback: the client-credentials
token and its expiry, the documents export (paging, filters, sorting, errors), the
traffic reports and their configurable path, the knobs (500 every J-th, latency), the
generated documents and mutate()."""

from __future__ import annotations

import ssl
import time
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from streamd.providers.horisen import wire
from streamd.providers.horisen.simulator import (
    BAD_PARAM_FILTER,
    BAD_PARAM_SORT,
    NOT_FOUND,
    STAMP,
    HorisenSimulator,
    Knobs,
    Mutation,
    encode_document,
    simulator,
)

from .conftest import until

pytestmark = pytest.mark.anyio
TODAY = date(2024, 6, 30)  # in the past: every history stamp is before any mutate()
SEED_PATH = "/bulk-traffic-report/v2/customer-invoices/{invoice_id}/traffic-reports"
CENT = Decimal("0.01")


def client(sim: HorisenSimulator, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(sim.ca_path)), timeout=5, **kwargs)


async def grant(http: httpx.AsyncClient, sim: HorisenSimulator, **form: str) -> httpx.Response:
    credentials = {"client_id": sim.client_id, "client_secret": sim.client_secret}
    return await http.post(sim.token_url, data={"grant_type": "client_credentials", **credentials, **form})


async def access_token(http: httpx.AsyncClient, sim: HorisenSimulator) -> str:
    r = await grant(http, sim)
    assert r.status_code == 200, r.text
    return wire.token_decoder.decode(r.content).access_token


@asynccontextmanager
async def api(tmp_path: Path, **knobs: Any) -> AsyncIterator[tuple[HorisenSimulator, httpx.AsyncClient]]:
    """A serving simulator (history ending TODAY unless told) and a client holding a token."""
    knobs.setdefault("today", TODAY)
    async with simulator(tmp_path / "certs", Knobs(**knobs)) as sim, \
            client(sim, base_url=sim.api_url) as http:
        http.headers["Authorization"] = f"Bearer {await access_token(http, sim)}"
        yield sim, http


def error(r: httpx.Response, status: int, code: str) -> wire.ErrorBody:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = wire.error_decoder.decode(r.content)
    assert body.code == code and body.message, r.text
    return body


async def page(http: httpx.AsyncClient, **params: Any) -> wire.Page:
    r = await http.get(wire.DOCUMENTS_PATH, params=params)
    assert r.status_code == 200, r.text
    return wire.page_decoder.decode(r.content)


async def listing(http: httpx.AsyncClient, params: dict[str, str] | None = None, size: int = 7) -> list[int]:
    """The ids of every page, in order; checks each page's pagination."""
    params = params or {}
    first = await page(http, page_size=size, **params)
    total, pages = first.meta.pagination.total or 0, first.meta.pagination.totalPages or 0
    assert pages == max(1, -(-total // size))
    ids: list[int] = []
    for n in range(1, pages + 1):
        p = first if n == 1 else await page(http, page_size=size, page_number=n, **params)
        count = min(size, total - (n - 1) * size)
        assert p.meta.pagination == wire.Pagination(total=total, totalPages=pages, currentPage=n,
                                                    perPage=size, count=count)
        ids += [int(wire.document_id_decoder.decode(raw).id) for raw in p.data]
    return ids


# ---------------------------------------------------------------- tokens

async def test_client_credentials_grant_and_refusals(tmp_path: Path) -> None:
    async with simulator(tmp_path, Knobs(today=TODAY, days=1)) as sim, client(sim) as http:
        r = await grant(http, sim)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        tok = wire.token_decoder.decode(r.content)
        assert (tok.token_type, tok.expires_in) == ("Bearer", 3600) and set(r.json()) == {
            "access_token", "token_type", "expires_in"}
        r = await http.post(sim.token_url, data={"grant_type": "client_credentials"},
                            auth=(sim.client_id, sim.client_secret))  # client auth by HTTP Basic
        assert r.status_code == 200 and r.json()["access_token"] != tok.access_token

        for form in ({"client_secret": "wrong"}, {"client_id": "someone"}):
            r = await grant(http, sim, **form)
            assert r.status_code == 401
            refusal = wire.token_error_decoder.decode(r.content)
            assert refusal.error == "invalid_client" and refusal.error_description
        r = await grant(http, sim, grant_type="password")
        assert (r.status_code, r.json()["error"]) == (400, "unsupported_grant_type")
        assert (sim.grants, sim.refused_grants) == (2, 3)

        bearer = {"Authorization": f"Bearer {tok.access_token}"}
        r = await http.get(sim.api_url + wire.DOCUMENTS_PATH, headers=bearer)
        assert r.status_code == 200 and len(r.json()["data"]) == 3
        tls = r.extensions["network_stream"].get_extra_info("ssl_object")
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


async def test_tokens_expire_after_their_lifetime_and_on_demand(tmp_path: Path) -> None:
    async with api(tmp_path, days=1) as (sim, http):  # a token for an hour: 200, however slow
        assert (await http.get(wire.DOCUMENTS_PATH)).status_code == 200
        sim.knobs.token_ttl = 0.3
        asked = time.monotonic()
        r = await grant(http, sim)
        assert r.json()["expires_in"] == 1  # whole seconds, at least one
        http.headers["Authorization"] = f"Bearer {wire.token_decoder.decode(r.content).access_token}"
        answers: list[httpx.Response] = []

        async def refused() -> bool:
            answers.append(await http.get(wire.DOCUMENTS_PATH))
            return answers[-1].status_code != 200
        await until(refused, 10, "the token to expire")
        # Not before its lifetime: it was issued after `asked`, and refused after it ended.
        assert time.monotonic() - asked >= 0.3
        error(answers[-1], 401, wire.NOT_AUTHENTICATED)
        assert answers[-1].headers["www-authenticate"].startswith("Bearer")

        sim.knobs.token_ttl = 60.0
        http.headers["Authorization"] = f"Bearer {await access_token(http, sim)}"
        assert (await http.get(wire.DOCUMENTS_PATH)).status_code == 200
        sim.expire_tokens()
        for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"}):
            error(await http.get(wire.DOCUMENTS_PATH, headers=headers), 401, wire.NOT_AUTHENTICATED)
        del http.headers["Authorization"]
        error(await http.get(wire.TRAFFIC_REPORTS_PATH.format(invoice_id=1)), 401, wire.NOT_AUTHENTICATED)


# ---------------------------------------------------------------- the documents export

async def test_pages_cover_every_document_once(tmp_path: Path) -> None:
    async with api(tmp_path, days=23, documents_per_day=1) as (sim, http):
        assert await listing(http, size=10) == list(range(1, 24))
        past = await page(http, page_size=10, page_number=4)
        assert past.data == [] and past.meta.pagination == wire.Pagination(
            total=23, totalPages=3, currentPage=4, perPage=10, count=0)
        default = await page(http)  # 50 a page by default
        assert len(default.data) == 23 and default.meta.pagination.perPage == wire.DEFAULT_PAGE_SIZE
        docs = sim.documents()
        for raw in default.data:  # byte for byte what encode_document() writes
            assert bytes(raw) == encode_document(docs[int(wire.document_id_decoder.decode(raw).id)])
        none = await page(http, paymentStatus="no-such-status")
        assert none.data == [] and none.meta.pagination.total == 0 and none.meta.pagination.totalPages == 1


async def test_bad_page_parameters_and_filters_are_400(tmp_path: Path) -> None:
    async with api(tmp_path, days=2) as (_, http):
        for value in ("0", "-1", "abc", "1.5", ""):
            error(await http.get(wire.DOCUMENTS_PATH, params={"page_number": value}), 400,
                  wire.BAD_PARAM_PAGE_NUMBER)
        for value in ("0", str(wire.MAX_PAGE_SIZE + 1), "x"):
            error(await http.get(wire.DOCUMENTS_PATH, params={"page_size": value}), 400,
                  wire.BAD_PARAM_PAGE_SIZE)
        assert len((await page(http, page_size=wire.MAX_PAGE_SIZE)).data) == 6
        for name, value in (("foo(documentDate)", "2024-06-01"), ("between(documentDate)", "2024-06-01"),
                            ("gte(nosuch)", "1"), ("nosuch", "1"), ("gte(documentDate)", "yesterday"),
                            ("gte(statusDt)", "soon"), ("gt(total)", "abc"), ("items", "1")):
            error(await http.get(wire.DOCUMENTS_PATH, params={name: value}), 400, BAD_PARAM_FILTER)
        error(await http.get(wire.DOCUMENTS_PATH, params={"sort": "-colour"}), 400, BAD_PARAM_SORT)
        error(await http.get("/finance/sit/v1/other"), 404, NOT_FOUND)


async def test_filters_match_a_brute_force_filter(tmp_path: Path) -> None:
    async with api(tmp_path, days=20, documents_per_day=4) as (sim, http):
        docs = sim.documents()
        stamps = sorted(d["statusDt"] for d in docs.values())
        middle, early = stamps[len(stamps) // 2], (TODAY - timedelta(days=12)).isoformat()
        june = ("2024-06-10", "2024-06-20")

        def brute(keep: Any) -> list[int]:
            return [i for i, d in sorted(docs.items()) if keep(d)]

        cases: list[tuple[dict[str, str], list[int]]] = [
            ({"paymentStatus": "open"}, brute(lambda d: d["paymentStatus"] == "open")),
            ({"paymentStatus": "open,paid"}, brute(lambda d: d["paymentStatus"] in ("open", "paid"))),
            ({"between(documentDate)": ",".join(june)},
             brute(lambda d: june[0] <= d["documentDate"] <= june[1])),
            ({"gte(statusDt)": middle}, brute(lambda d: d["statusDt"] >= middle)),
            ({"lt(statusDt)": middle.replace(" ", "T") + "Z"}, brute(lambda d: d["statusDt"] < middle)),
            ({"between(statusDt)": f"{early},{TODAY}"},  # a date bound of a stamp is midnight
             brute(lambda d: f"{early} 00:00:00" <= d["statusDt"] <= f"{TODAY} 00:00:00")),
            ({"paymentStatus": "open", "between(documentDate)": ",".join(june), "gt(total)": "1000"},
             brute(lambda d: d["paymentStatus"] == "open" and june[0] <= d["documentDate"] <= june[1]
                   and d["total"] > 1000)),
            ({"status": "draft,canceled"}, brute(lambda d: d["status"] != "approved")),
        ]
        for params, expected in cases:
            assert expected, params  # each case selects something...
            assert await listing(http, params) == expected, params
        assert len(cases[0][1]) < len(docs) and cases[3][1] != list(docs)  # ...and not everything


async def test_sorting(tmp_path: Path) -> None:
    async with api(tmp_path, days=10, documents_per_day=3) as (sim, http):
        docs = sim.documents()
        ids = await listing(http, {"sort": "-documentDate"})
        keys = [(docs[i]["documentDate"], -i) for i in ids]
        assert keys == sorted(keys, reverse=True) and len(ids) == 30  # newest first; ties by id
        ids = await listing(http, {"sort": "total"}, size=4)
        assert [docs[i]["total"] for i in ids] == sorted(d["total"] for d in docs.values())
        assert await listing(http, {"sort": "-id", "paymentStatus": "open"}) == sorted(
            (i for i, d in docs.items() if d["paymentStatus"] == "open"), reverse=True)


async def test_mutate_shows_in_a_changed_since_listing(tmp_path: Path) -> None:
    async with api(tmp_path, days=10, documents_per_day=3) as (sim, http):
        before = sim.documents()
        cursor = f"{TODAY + timedelta(days=1)} 00:00:00"  # after every history stamp
        assert await listing(http, {"gte(statusDt)": cursor}) == []
        started = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        m = sim.mutate(new=3, paid=4)
        assert isinstance(m, Mutation) and m.created == [31, 32, 33] and len(set(m.paid)) == 4
        for i in m.paid:
            assert (before[i]["status"], before[i]["paymentStatus"]) == ("approved", "open")
        assert await listing(http, {"gte(statusDt)": cursor}) == sorted(m.paid + m.created)

        r = await http.get(wire.DOCUMENTS_PATH, params={"gte(statusDt)": cursor, "page_size": 10})
        served = {int(d.id): d for d in (wire.document_decoder.decode(raw) for raw in
                                         wire.page_decoder.decode(r.content).data)}
        for i in m.paid:
            d = served[i]
            assert (d.paymentStatus, d.totalPaid, d.totalUnpaid) == ("paid", d.total, Decimal(0))
            assert d.statusDt and d.statusDt == d.paymentStatusDate and d.statusDt >= started.strftime(STAMP)
            assert d.insertDt == before[i]["insertDt"] and d.total == before[i]["total"]
            assert before[i]["paymentStatus"] == "open"  # a snapshot keeps the old state
        for i in m.created:
            d = served[i]
            assert (d.status, d.paymentStatus, d.documentDate) == ("approved", "open", TODAY.isoformat())
            assert d.insertDt == d.statusDt and d.statusDt and d.statusDt >= started.strftime(STAMP)
            assert d.amountNoVat == sum(item.totalNoVat or 0 for item in d.items)
            assert d.total == (d.amountNoVat or 0) + (d.amountVat or 0) == d.totalUnpaid and d.totalPaid == 0
            assert len(sim.reports(i)) >= 1

        # The next mutation pays other documents; asking for more than are open changes nothing.
        again = sim.mutate(paid=1)
        assert again.created == [] and not set(again.paid) & set(m.paid)
        now = sim.documents()
        with pytest.raises(ValueError):
            sim.mutate(new=1, paid=len(now))
        assert sim.documents() == now


# ---------------------------------------------------------------- traffic reports

async def test_traffic_reports(tmp_path: Path) -> None:
    async with api(tmp_path, days=4) as (sim, http):
        docs = sim.documents()
        for i, doc in docs.items():
            r = await http.get(wire.TRAFFIC_REPORTS_PATH.format(invoice_id=i))
            assert r.status_code == 200, r.text
            rows = [msgspec.json.decode(raw, type=wire.TrafficReport)
                    for raw in wire.traffic_reports_decoder.decode(r.content).data]
            assert 1 <= len(rows) <= 6 and rows == [wire.TrafficReport(**row) for row in sim.reports(i)]
            assert all(set(row) == set(wire.TrafficReport.__struct_fields__) for row in r.json()["data"])
            by_country: dict[str, Decimal] = {}
            for row in rows:
                assert row.messageCount and row.pricePerMessage and row.totalAmount is not None
                assert row.totalAmount == row.messageCount * row.pricePerMessage
                assert row.pricePerMessage.as_tuple().exponent == -5
                assert isinstance(row.mcc, str) and len(row.mcc) == 3 and row.mcc.isdigit()
                assert isinstance(row.mnc, str) and len(row.mnc) in (2, 3) and row.mnc.isdigit()
                assert row.sellCurrencyCode == doc["currencyCode"] and row.countryName and row.operatorName
                assert row.pricingConditionName
                by_country[f"SMS traffic {row.countryName}"] = (
                    by_country.get(f"SMS traffic {row.countryName}", Decimal(0)) + row.totalAmount)
            # The report splits each item over operators: the amounts add up to the item's.
            assert {k: v.quantize(CENT, ROUND_HALF_UP) for k, v in by_country.items()} == {
                item["name"]: item["totalNoVat"] for item in doc["items"]}

        sim.missing_reports.add(2)
        for invoice_id in ("2", "9999", "abc"):
            error(await http.get(wire.TRAFFIC_REPORTS_PATH.format(invoice_id=invoice_id)), 404,
                  wire.INVOICE_NOTFOUND)
        error(await http.get(SEED_PATH.format(invoice_id=1)), 404, NOT_FOUND)  # not the default path


async def test_the_traffic_report_path_is_configurable(tmp_path: Path) -> None:
    sim = simulator(tmp_path / "certs", Knobs(today=TODAY, days=1), traffic_reports_path=SEED_PATH)
    async with sim, client(sim, base_url=sim.api_url) as http:
        http.headers["Authorization"] = f"Bearer {await access_token(http, sim)}"
        assert (await http.get(SEED_PATH.format(invoice_id=1))).status_code == 200
        error(await http.get(wire.TRAFFIC_REPORTS_PATH.format(invoice_id=1)), 404, NOT_FOUND)
        sim.knobs.traffic_reports_path = "/reports/{invoice_id}"  # while serving
        assert len((await http.get("/reports/3")).json()["data"]) == len(sim.reports(3))
        error(await http.get("/reports/4"), 404, wire.INVOICE_NOTFOUND)
    with pytest.raises(ValueError):
        simulator(tmp_path / "bad", Knobs(traffic_reports_path="/reports/all"))


# ---------------------------------------------------------------- knobs and the log

async def test_fail_every_and_latency_count_api_requests_only(tmp_path: Path) -> None:
    async with api(tmp_path, days=1, fail_every=3) as (sim, http):
        reports = wire.TRAFFIC_REPORTS_PATH.format(invoice_id=1)
        statuses = [(await http.get(wire.DOCUMENTS_PATH)).status_code, (await http.get(reports)).status_code]
        r = await http.get(wire.DOCUMENTS_PATH, params={"page_size": "2"})
        assert error(r, 500, wire.INT_APP_ERROR).message == "internal application error"
        statuses += [(await http.get(wire.DOCUMENTS_PATH)).status_code,
                     (await http.get(wire.DOCUMENTS_PATH, headers={"Authorization": ""})).status_code]
        error(await http.get(reports), 500, wire.INT_APP_ERROR)
        assert statuses == [200, 200, 200, 401] and sim.api_requests == 6
        await grant(http, sim)  # the token endpoint is not an API request
        assert (await http.get(wire.DOCUMENTS_PATH)).status_code == 200
        assert [(e.method, e.path, e.query, e.status) for e in sim.log[2:4]] == [
            ("GET", reports, "", 200), ("GET", wire.DOCUMENTS_PATH, "page_size=2", 500)]
        assert sim.log[0].path == wire.TOKEN_PATH and sim.log[-2].path == wire.TOKEN_PATH
        assert all(a.at <= b.at for a, b in zip(sim.log, sim.log[1:], strict=False))

        sim.knobs.fail_every, sim.knobs.latency = 0, 0.1
        started = time.monotonic()
        assert (await http.get(wire.DOCUMENTS_PATH)).status_code == 200
        assert (await grant(http, sim)).status_code == 200
        assert time.monotonic() - started >= 0.2  # both waited


# ---------------------------------------------------------------- the documents

def test_documents_are_deterministic_consistent_and_decode(tmp_path: Path) -> None:
    a = simulator(tmp_path / "a", Knobs(seed=7, today=TODAY))
    b = simulator(tmp_path / "b", Knobs(seed=7, today=TODAY))
    docs = a.documents()
    assert docs == b.documents()
    assert docs != simulator(tmp_path / "c", Knobs(seed=8, today=TODAY)).documents()
    assert list(docs) == list(range(1, 94))  # 31 days x 3
    days = [d["documentDate"] for d in docs.values()]
    assert days == sorted(days) and days[0] == str(TODAY - timedelta(days=30))
    assert days[-4:] == [str(TODAY - timedelta(days=1))] + [str(TODAY)] * 3
    partners: dict[int, tuple[str, dict[str, Any]]] = {}
    for d in docs.values():
        assert set(d) == set(wire.Document.__struct_fields__)
        assert set(d["bizPartner"]) == set(wire.BizPartner.__struct_fields__)
        assert wire.document_decoder.decode(encode_document(d)).total == d["total"]
        day = date.fromisoformat(d["documentDate"])
        assert d["dueDate"] == str(day + timedelta(days=30))
        assert d["periodEnd"] == str(day.replace(day=1) - timedelta(days=1))
        assert d["periodStart"] == d["periodEnd"][:8] + "01"
        assert 1 <= len(d["items"]) <= 3 and d["documentNumber"] == f"INV-{day.year}-{d['id']:06d}"
        assert d["amountNoVat"] == sum(item["totalNoVat"] for item in d["items"])
        assert d["amountVat"] == sum(item["totalVat"] for item in d["items"])
        assert d["total"] == d["amountNoVat"] + d["amountVat"] == d["totalPaid"] + d["totalUnpaid"]
        assert d["domesticTotal"] == (d["total"] * d["domesticCurrencyRate"]).quantize(CENT, ROUND_HALF_UP)
        for item in d["items"]:
            assert item["totalNoVat"] == (item["quantity"] * item["price"]).quantize(CENT, ROUND_HALF_UP)
        assert d["insertDt"].startswith(d["documentDate"]) and d["statusDt"] >= d["insertDt"]
        assert datetime.strptime(d["statusDt"], STAMP) <= datetime(2024, 6, 30, 23, 59, 59)
        if d["paymentStatus"] == "paid":
            assert d["status"] == "approved" and d["totalUnpaid"] == 0
            assert d["paymentStatusDate"] == d["statusDt"]
        elif d["totalPaid"]:  # part paid
            assert d["status"] == "approved" and 0 < d["totalPaid"] < d["total"]
            assert d["paymentStatusDate"] == d["statusDt"] > d["insertDt"]
        else:
            assert d["paymentStatusDate"] is None and d["statusDt"] == d["insertDt"]
        partner = (d["bizPartnerExternalRefId"], d["bizPartner"])
        assert partners.setdefault(d["bizPartnerId"], partner) == partner and 1 <= d["bizPartnerId"] <= 20
    assert b'"totalPaid":0.00' in b"".join(map(encode_document, docs.values()))  # 2 decimals, as numbers
    assert {d["currencyCode"] for d in docs.values()} >= {"EUR"}
    assert {d["paymentStatus"] for d in docs.values()} == {"open", "paid"}
    assert len({ref for ref, _ in partners.values()}) == len(partners)

    unpaid = simulator(tmp_path / "d", Knobs(today=TODAY, paid_ratio=0.0, partners=2)).documents()
    assert {d["paymentStatus"] for d in unpaid.values()} == {"open"}
    assert {d["bizPartnerId"] for d in unpaid.values()} == {1, 2}
    paid = simulator(tmp_path / "e", Knobs(today=TODAY, paid_ratio=1.0, days=60)).documents()
    # Paid once the moment drawn for it (up to 40 days after it was issued) has come.
    approved = [d for d in paid.values() if d["status"] == "approved"]
    due = [d for d in approved if d["documentDate"] < str(TODAY - timedelta(days=40))]
    assert due and all(d["paymentStatus"] == "paid" for d in due)
    assert any(d["paymentStatus"] == "paid" for d in approved)


async def test_ten_thousand_documents_by_default_up_to_now(tmp_path: Path) -> None:
    # CPU time of this process (simulator included): a busy machine does not slow it down.
    started, day = time.process_time(), datetime.now(UTC).date()
    sim = simulator(tmp_path, Knobs(days=100, documents_per_day=100))
    docs = sim.documents()
    assert len(docs) == 10_000 and time.process_time() - started < 3  # well under in practice
    now = datetime.now(UTC).replace(tzinfo=None).strftime(STAMP)
    assert sim.today in (day, datetime.now(UTC).date())  # today by default, even at midnight
    assert max(d["documentDate"] for d in docs.values()) == sim.today.isoformat()
    assert max(d["statusDt"] for d in docs.values()) <= now  # nothing in the future
    async with sim, client(sim, base_url=sim.api_url) as http:
        http.headers["Authorization"] = f"Bearer {await access_token(http, sim)}"
        started = time.process_time()
        for _ in range(3):  # encoded documents and the sorted order are kept between requests
            p = await page(http, page_size=wire.MAX_PAGE_SIZE, sort="-total", paymentStatus="open")
            assert p.meta.pagination.count == wire.MAX_PAGE_SIZE
        assert time.process_time() - started < 3


def test_source_toml_points_at_the_simulator(tmp_path: Path) -> None:
    sim = simulator(tmp_path, Knobs(days=1))
    sim.url = "https://127.0.0.1:4443"
    table = tomllib.loads(sim.source_toml("sms", interval='"5s"'))["sources"]["sms"]
    secret = tmp_path / "horisen-client-secret"
    assert table == {"provider": "horisen", "token_url": "https://127.0.0.1:4443/oauth2/access-token",
                     "api_url": "https://127.0.0.1:4443", "client_id": "streamd-demo",
                     "client_secret": f"file:{secret}", "ca": str(sim.ca_path),
                     "traffic_reports_path": wire.TRAFFIC_REPORTS_PATH, "interval": "5s"}
    assert secret.read_text() == "horisen-demo-secret\n" and secret.stat().st_mode & 0o777 == 0o600
