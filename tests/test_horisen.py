"""HORISEN end to end over real HTTPS on loopback: the simulated token endpoint and API,
the daemon's poller, the store (a real SQLite file), change detection, traffic reports."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from streamd.configfile import parse
from streamd.providers.horisen import simulator as sim_mod
from streamd.providers.horisen.simulator import HorisenSimulator, Knobs
from streamd.secrets import Secret
from streamd.sources import polling

from .conftest import InProcess, until

pytestmark = pytest.mark.anyio


def config(tmp_path: Path, sim: HorisenSimulator, extra: str = "", other: str = "",
           interval: str = "300ms") -> Any:
    src = sim.source_toml("hz", backoff='{ min = "20ms", max = "300ms" }', interval=f'"{interval}"',
                          **({} if "page_size" in extra else {"page_size": "7"}))
    return parse(f"""
[store]
path = "feed.db"
[http]
listen = "127.0.0.1:0"
{src}{extra}
{other}
""", base_dir=tmp_path)


def feed(d: InProcess, entity: str = "invoice") -> list[tuple[str, str, dict[str, Any]]]:
    return [(op, key, json.loads(data)) for op, key, data in d.rows(
        "SELECT op, key, data FROM events WHERE source = 'hz' AND entity = ? ORDER BY seq", (entity,))]


def polls(d: InProcess) -> int:
    return int(d.daemon.sources["hz"].polls)


async def rounds(d: InProcess, n: int = 1, seconds: float = 20.0) -> None:
    target = polls(d) + n
    await until(lambda: polls(d) >= target, seconds, f"{n} more polls")


def traffic_of(sim: HorisenSimulator, key: str) -> list[tuple[str, str, int]]:
    return sorted((r["countryName"], r["operatorName"], r["messageCount"]) for r in sim.reports(int(key)))


async def test_first_poll_creates_every_invoice_with_its_traffic_then_only_changes(tmp_path: Path) -> None:
    async with sim_mod.simulator(tmp_path / "sim", Knobs(days=10, documents_per_day=3, partners=6)) as sim:
        async with InProcess(config(tmp_path, sim)) as d:
            await rounds(d, 1)
            docs = sim.documents()
            rows = feed(d)
            assert Counter(op for op, _, _ in rows) == {"created": len(docs)} and len(docs) == 30
            assert sorted(int(k) for _, k, _ in rows) == sorted(docs)
            for _, key, inv in rows:
                doc = docs[int(key)]
                assert inv["number"] == doc["documentNumber"]
                assert inv["total"] == f"{doc['total']:.2f}" or inv["total"] == str(doc["total"])
                assert sorted((t["country"], t["operator"], t["messages"]) for t in inv["traffic"]) \
                    == traffic_of(sim, key)
            parties = feed(d, "party")
            assert Counter(op for op, _, _ in parties) == {"created": len({x["bizPartnerId"]
                                                                            for x in docs.values()})}

            await rounds(d, 2)
            assert len(feed(d)) == 30 and len(feed(d, "party")) == len(parties)  # nothing changed

            m = sim.mutate(new=4, paid=5)
            await rounds(d, 2)
            new = feed(d)[30:]
            assert sorted((op, int(k)) for op, k, _ in new) == sorted(
                [("created", i) for i in m.created] + [("updated", i) for i in m.paid])
            for op, key, inv in new:
                if op == "updated":
                    assert inv["status"] == "paid" and inv["unpaid"] in ("0", "0.00")
                    # The update carries the traffic its `created` had.
                    assert sorted((t["country"], t["operator"], t["messages"]) for t in inv["traffic"]) \
                        == traffic_of(sim, key)
                else:
                    assert inv["traffic"], key
            # After the first poll, only what changed is listed (gte(statusDt)), then one
            # page of the open documents (the payment check).
            listings = [e for e in sim.log if e.path.endswith("documents-export")]
            assert "statusDt" in listings[-2].query and "paymentStatus=open" in listings[-1].query
            await rounds(d, 1)
            assert len(feed(d)) == 30 + 9


async def test_an_invoice_without_traffic_reports_is_held_then_emitted_whole(tmp_path: Path) -> None:
    async with sim_mod.simulator(tmp_path / "sim", Knobs(days=3, documents_per_day=3)) as sim:
        missing = sorted(sim.documents())[4]
        sim.missing_reports.add(missing)
        async with InProcess(config(tmp_path, sim, extra="report_tries = 50\n")) as d:
            await rounds(d, 2)
            assert sorted(int(k) for _, k, _ in feed(d)) == sorted(set(sim.documents()) - {missing})
            assert await d.metric('streamd_source_held_records{source="hz"}') == 1
            assert await d.metric('streamd_source_requests_total{code="404",source="hz"}') >= 2
            sim.missing_reports.discard(missing)
            await until(lambda: any(int(k) == missing for _, k, _ in feed(d)), 10, "the held invoice")
            (op, _, inv), = [r for r in feed(d) if int(r[1]) == missing]
            assert op == "created" and sorted((t["country"], t["operator"], t["messages"])
                                              for t in inv["traffic"]) == traffic_of(sim, str(missing))
            await rounds(d, 1)
            assert await d.metric('streamd_source_held_records{source="hz"}') == 0
            assert len(feed(d)) == 9


async def test_a_traffic_report_larger_than_the_answer_limit_is_refused_and_its_invoice_held(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """An answer beyond the pollers' bound is not taken (nor held in memory): the invoice
    waits, with the reason in the log, and is emitted whole once its reports fit."""
    monkeypatch.setattr(polling, "ANSWER_LIMIT", 64 * 1024)
    async with sim_mod.simulator(tmp_path / "sim", Knobs(days=3, documents_per_day=3)) as sim:
        huge = sorted(sim.documents())[4]
        sim.raw_reports[str(huge)] = b"[" + b" " * 100_000 + b"]"
        async with InProcess(config(tmp_path, sim, extra="report_tries = 50\n")) as d:
            await rounds(d, 2)
            assert sorted(int(k) for _, k, _ in feed(d)) == sorted(set(sim.documents()) - {huge})
            assert await d.metric('streamd_source_held_records{source="hz"}') == 1
            assert await d.metric('streamd_source_requests_total{code="error",source="hz"}') >= 2
            assert f"invoice {huge} held until the next poll: traffic reports: " in caplog.text
            assert f"/{huge}/traffic-reports: the answer's body is 100,002 bytes (Content-Length), more " \
                   "than the 65,536 bytes taken; refused" in caplog.text
            del sim.raw_reports[str(huge)]
            await until(lambda: any(int(k) == huge for _, k, _ in feed(d)), 10, "the held invoice")
            (_, _, inv), = [r for r in feed(d) if int(r[1]) == huge]
            assert sorted((t["country"], t["operator"], t["messages"]) for t in inv["traffic"]) \
                == traffic_of(sim, str(huge))


async def test_an_invoice_never_reported_on_goes_to_dead_letters(tmp_path: Path) -> None:
    async with sim_mod.simulator(tmp_path / "sim", Knobs(days=2, documents_per_day=2)) as sim:
        missing = sorted(sim.documents())[0]
        sim.missing_reports.add(missing)
        async with InProcess(config(tmp_path, sim, extra="report_tries = 3\n")) as d:
            await until(lambda: d.rows("SELECT count(*) FROM dead_letters")[0][0] == 1, 15, "a dead letter")
            (reason, raw), = d.rows("SELECT reason, raw FROM dead_letters")
            assert "INVOICE_NOTFOUND" in reason and "3 polls" in reason
            assert json.loads(raw)["id"] == missing  # the document's own bytes
            await rounds(d, 2)
            assert len(feed(d)) == 3  # the others, once; the dead one is not retried each poll
            assert await d.metric('streamd_source_held_records{source="hz"}') == 0


async def test_bad_documents_go_to_dead_letters_and_the_rest_commits(tmp_path: Path) -> None:
    async with sim_mod.simulator(tmp_path / "sim", Knobs(days=3, documents_per_day=3)) as sim:
        ids = sorted(sim.documents())
        sim.corrupt(ids[1], currencyCode="EURO")
        sim.corrupt(ids[2], id="")  # no usable id: cannot even be tracked
        async with InProcess(config(tmp_path, sim)) as d:
            await rounds(d, 3)
            assert sorted(int(k) for _, k, _ in feed(d)) == sorted(set(ids) - {ids[1], ids[2]})
            reasons = [r for (r,) in d.rows("SELECT reason FROM dead_letters ORDER BY id")]
            # The bad currency is dead-lettered once, not at every poll.
            assert sum("currencyCode" in r for r in reasons) == 1
            assert any("id" in r for r in reasons if "currencyCode" not in r)
            # The listing counted the id-less document too: polls complete, the cursor moves.
            assert await d.metric('streamd_source_polls_total{outcome="failed",source="hz"}') == 0
            sim.corrupt(ids[1], currencyCode="EUR")  # fixed at the provider: emitted now
            await until(lambda: any(int(k) == ids[1] for _, k, _ in feed(d)), 10, "the fixed document")


async def test_token_expiry_mid_poll_fetches_one_new_token_and_loses_no_page(tmp_path: Path) -> None:
    async with sim_mod.simulator(tmp_path / "sim", Knobs(days=6, documents_per_day=5, latency=0.03,
                                                         token_ttl=0.3)) as sim:
        async with InProcess(config(tmp_path, sim, extra="refresh_before = \"10ms\"\nconcurrency = 2\n",
                                    interval="30s")) as d:
            await rounds(d, 1, seconds=30)
            assert len(feed(d)) == 30 and len({k for _, k, _ in feed(d)}) == 30
            assert sim.grants >= 2  # the token expired during the poll and was replaced
            assert any(e.status == 401 for e in sim.log)
            assert await d.metric('streamd_source_token_grants_total{outcome="ok",source="hz"}') == sim.grants
            assert await d.metric('streamd_component_healthy{component="source",name="hz"}') == 1


async def test_a_5xx_storm_is_retried_to_a_complete_poll(tmp_path: Path) -> None:
    async with sim_mod.simulator(tmp_path / "sim", Knobs(days=4, documents_per_day=4, fail_every=2)) as sim:
        async with InProcess(config(tmp_path, sim, extra="max_tries = 10\n")) as d:
            await rounds(d, 1, seconds=30)
            assert len(feed(d)) == 16 and len({k for _, k, _ in feed(d)}) == 16
            assert all(inv["traffic"] for _, _, inv in feed(d))
            assert await d.metric('streamd_source_requests_total{code="500",source="hz"}') >= 10
            assert await d.metric('streamd_retries_total{component="source",name="hz"}') >= 10


async def test_wrong_client_secret_fails_this_source_only(tmp_path: Path) -> None:
    async with sim_mod.simulator(tmp_path / "sim", Knobs(days=1, documents_per_day=1)) as sim:
        (tmp_path / "wrong").write_text("not-the-secret\n")
        cfg = config(tmp_path, sim, other=SYNTHETIC)
        cfg = msgspec.structs.replace(cfg, sources={**cfg.sources, "hz": msgspec.structs.replace(
            cfg.sources["hz"], client_secret=Secret.resolve(f"file:{tmp_path / 'wrong'}"))})
        async with InProcess(cfg) as d:
            async def failed() -> bool:
                r = await d.http.get("/readyz")
                return r.status_code == 503 and "source hz: failed" in r.text
            await until(failed, 15, "/readyz to name the failed source")
            text = (await d.http.get("/readyz")).text
            assert "invalid_client" in text and "client_secret" in text and "not-the-secret" not in text
            assert await d.metric('streamd_component_healthy{component="source",name="hz"}') == 0
            assert await d.metric('streamd_source_token_grants_total{outcome="refused",source="hz"}') >= 1
            await until(lambda: d.rows("SELECT count(*) FROM events WHERE source = 'gen'")[0][0] > 20,
                        10, "the other source carrying on")
            assert sim.refused_grants >= 1 and feed(d) == []


async def test_a_401_after_a_new_token_is_fatal_for_this_source(tmp_path: Path) -> None:
    async with sim_mod.simulator(tmp_path / "sim", Knobs(days=1, documents_per_day=1)) as sim:
        sim.knobs.token_ttl = 0.0  # every access token is dead on arrival
        async with InProcess(config(tmp_path, sim, other=SYNTHETIC)) as d:
            async def failed() -> bool:
                r = await d.http.get("/readyz")
                return r.status_code == 503 and "source hz: failed" in r.text
            await until(failed, 15, "/readyz to name the failed source")
            assert "HTTP 401 twice" in (await d.http.get("/readyz")).text
            assert sim.grants == 2  # the first token, and one new one after the 401
            await until(lambda: d.rows("SELECT count(*) FROM events WHERE source = 'gen'")[0][0] > 20,
                        10, "the other source carrying on")


async def test_a_token_revoked_again_after_a_retry_is_renewed_not_fatal(tmp_path: Path) -> None:
    # Requests 2 and 4 find their token revoked, 3 is a 500: request 2's 401 gets a new
    # token, request 3 fails, and request 4 (its retry) is refused a token that was fine
    # when it was got. That is a third token, not "refused twice".
    async with sim_mod.simulator(tmp_path / "sim", Knobs(days=1, documents_per_day=1,
                                                          fail_every=3, revoke_every=2)) as sim:
        async with InProcess(config(tmp_path, sim, extra="traffic_reports = false\n")) as d:
            await until(lambda: sim.api_requests >= 6, 15, "a few polls")
            assert (await d.http.get("/readyz")).status_code == 200
            assert await d.metric('streamd_component_healthy{component="source",name="hz"}') == 1
            assert sim.grants >= 3
            assert len(feed(d)) == 1


SYNTHETIC = """
[sources.gen]
provider = "synthetic"
rate = 200
"""


async def test_an_upgrade_leaves_unchanged_parties_unchanged(tmp_path: Path) -> None:
    """Parties stored by a streamd whose versions digest the feed's bytes: documents listed
    again after the upgrade (paid meanwhile) emit their invoices' updates and nothing for
    their parties, which did not change at HORISEN."""
    async with sim_mod.simulator(tmp_path / "sim", Knobs(days=6, documents_per_day=3, partners=4)) as sim:
        cfg = config(tmp_path, sim)
        async with InProcess(cfg) as d:
            await rounds(d, 1)
            parties = feed(d, "party")
            assert parties
        # What a streamd whose Party had no `currency` yet stored: the JSON it
        # wrote, and versions digesting those bytes.
        with sqlite3.connect(tmp_path / "feed.db") as db:
            for key, version, data in db.execute(
                    "SELECT key, version, data FROM entity_state WHERE entity = 'party'").fetchall():
                older = bytes(data).replace(b'"currency":null,', b"")
                assert older != bytes(data)
                old = version.rpartition("#")[0] + "#" + hashlib.sha256(older).hexdigest()[:16]
                db.execute("UPDATE entity_state SET version = ?, data = ? WHERE entity = 'party'"
                           " AND key = ?", (old, older, key))
        m = sim.mutate(new=0, paid=6)
        async with InProcess(cfg) as d:
            await rounds(d, 2)
            assert sorted(int(k) for op, k, _ in feed(d) if op == "updated") == sorted(m.paid)
            assert feed(d, "party") == parties
async def test_every_correction_is_one_updated_and_noise_none(tmp_path: Path) -> None:
    """Corrections HORISEN users make (each moving statusDt, as every change does), through
    the real poller: one `updated` each, nothing for a re-poll or for what is no change."""
    async with sim_mod.simulator(tmp_path / "sim", Knobs(days=10, documents_per_day=3)) as sim:
        async with InProcess(config(tmp_path, sim, extra="traffic_reports = false\n")) as d:
            await rounds(d, 1)
            docs = sim.documents()
            paid = next(i for i, x in docs.items() if x["paymentStatus"] == "paid")
            ids = iter(i for i, x in sorted(docs.items()) if x["status"] == "approved" and i != paid)
            first = docs[next(ids)]["items"][0]
            corrections: dict[int, dict[str, Any]] = {
                next(ids): {"dueDate": "2030-01-31"},
                next(ids): {"currencyCode": "USD"},
                next(ids): {"documentNumber": "INV-RENUMBERED-1"},
                next(ids): {"domesticTotal": Decimal("1.23")},
                next(ids): {"domesticCurrencyRate": Decimal("1.5")},
                next(ids): {"items": [{**first, "quantity": first["quantity"] + 1}]},
                paid: {"amountVat": Decimal("0.00"), "amountNoVat": docs[paid]["total"]},
            }
            noise = {next(ids): {"syncStatus": "pending"},
                     next(ids): {"bizPartnerExternalRefId": "moved-in-the-erp"}}
            before = len(feed(d))
            for i, fields in {**corrections, **noise}.items():
                sim.change(i, **fields)
            await rounds(d, 2)
            new = feed(d)[before:]
            assert sorted(int(k) for op, k, _ in new if op == "updated") == sorted(corrections)
            by_key = {int(k): inv for _, k, inv in new}
            assert by_key[paid]["tax"] in ("0", "0.00") and by_key[paid]["status"] == "paid"
            assert by_key[next(iter(corrections))]["due"] == "2030-01-31"
            await rounds(d, 2)
            assert len(feed(d)) == before + len(corrections), "a re-poll emits nothing"
