"""The SFTP sink's documents against a real SFTP server (OpenSSH's sshd on loopback): an
invoice's life as files the ERP books, never one replaced or written twice, and the XML
an accountant needs, from a HORISEN document in the seed's field names."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from lxml import etree
from msgspec.structs import replace

from streamd.errors import Permanent
from streamd.model import Invoice, make_event
from streamd.providers.horisen.changes import invoice_event, renormalized
from streamd.providers.horisen.normalize import normalize_document
from streamd.sinks import invoice_xml
from streamd.sinks.documents import Document
from streamd.sinks.sftp import SftpSink
from streamd.store import FeedEvent

from .conftest import Streamd, streamd_cli, wait_for
from .sftp_server import SftpServer, invoice, running_sftp_server
from .test_horisen_normalize import DOCUMENT, TRAFFIC
from .test_sftp_sink import T0, feed_event

pytestmark = pytest.mark.anyio
XSD = etree.XMLSchema(etree.parse(str(Path(__file__).resolve().parents[1] / "docs" / "horisen-invoice.xsd")))
NS = "{urn:streamd:horisen-invoice:2}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SftpServer]:
    with running_sftp_server(tmp_path / "sftp") as s:
        yield s


class Store:
    """What the dispatcher does with a sink's state: commit it with the offset (here, when
    a test says so), and hand what is committed to the next run's sink."""

    def __init__(self) -> None:
        self.committed: dict[str, tuple[int, bytes]] = {}

    async def load(self, keys: Any) -> dict[str, tuple[int, bytes]]:
        return {k: self.committed[k] for k in keys if k in self.committed}

    def commit(self, sink: SftpSink) -> None:
        self.committed.update({st.key: (st.seq, st.value) for st in sink.take_state()})


@asynccontextmanager
async def run(server: SftpServer, store: Store, **kw: Any) -> AsyncIterator[SftpSink]:
    """One run of the sink: what it remembers comes from `store`."""
    sink = SftpSink("erp", server.sink_config(**kw))
    sink.attach_state(store.load)
    try:
        yield sink
    finally:
        await sink.aclose()


class Life:
    """An invoice's events, one after another."""

    def __init__(self, key: str = "inv-7", start: int = 0) -> None:
        self.key, self.seq = key, start

    def event(self, inv: Invoice, op: str = "updated") -> FeedEvent:
        self.seq += 1
        ev = make_event(provider="horisen", source="hz", tenant="acme", entity="invoice", op=op,
                        key=self.key, time=T0, data=inv, version=f"v{self.seq}")
        return feed_event(self.seq, ev)


def documents(server: SftpServer) -> dict[str, etree._Element]:
    out = {}
    for name, data in sorted(server.files().items()):
        assert not name.startswith("."), f"{name} left behind"
        root = etree.fromstring(data)
        XSD.assertValid(root)
        out[name] = root
    return out


def written(server: SftpServer) -> list[str]:
    return [n for n in server.files() if not n.startswith(".")]


def inodes(server: SftpServer) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in server.local_dir.iterdir()}


OPEN = invoice(7)
NAME = "acme-HZ-2026-0007_r{}_{}.xml"


async def test_an_invoices_life_is_one_file_per_document_none_replaced(server: SftpServer) -> None:
    life, store = Life(), Store()
    draft = replace(OPEN, status="draft", provider_status="draft/open")
    events = [life.event(draft, "created"), life.event(draft), life.event(OPEN)]
    approved = events[2]
    corrected = replace(OPEN, tax=Decimal("0"), net=OPEN.total)
    async with run(server, store) as s:
        await s.deliver(events)
        store.commit(s)
        assert sorted(documents(server)) == [NAME.format(1, "issue")], "nothing while a draft"
        seen = inodes(server)
        fix = life.event(corrected)
        archive = life.event(replace(corrected, provider_status="archived"))
        cancel = life.event(replace(corrected, status="cancelled"))
        await s.deliver([fix, archive])
        await s.deliver([cancel])
        store.commit(s)
    docs = documents(server)
    assert sorted(docs) == [NAME.format(1, "issue"), NAME.format(2, "correction"),
                            NAME.format(3, "cancellation")]
    issue, fix_doc, cancel_doc = (docs[n] for n in sorted(docs))
    assert {k: issue.get(k) for k in ("op", "revision", "documentId", "supersedes", "eventId")} == {
        "op": "issue", "revision": "1", "documentId": f"{approved.id}-issue", "supersedes": None,
        "eventId": approved.id}
    assert (fix_doc.get("revision"), fix_doc.get("supersedes"), fix_doc.get("documentId")) == \
        ("2", f"{approved.id}-issue", f"{fix.id}-correction")
    assert (cancel_doc.get("revision"), cancel_doc.get("supersedes"), cancel_doc.get("eventId")) == \
        ("3", f"{fix.id}-correction", cancel.id)
    assert fix_doc.findtext(f"{NS}Tax") == "0" and cancel_doc.findtext(f"{NS}Status") == "cancelled"
    assert {n: i for n, i in inodes(server).items() if n in seen} == seen, "the issue was never replaced"


async def test_a_batch_delivered_again_after_a_crash_writes_no_document_twice(server: SftpServer) -> None:
    """Killed after the upload, before the offset (and what the sink remembers) commit: the
    next run takes the batch again from what was committed, decides the same documents under
    the same names, finds them there, and writes none again."""
    life, store = Life(), Store()
    first = [life.event(OPEN, "created")]
    crashed = [life.event(replace(OPEN, due=date(2026, 5, 1))), life.event(replace(OPEN, status="cancelled"))]
    async with run(server, store) as s:
        await s.deliver(first)
        store.commit(s)
        await s.deliver(crashed)  # ...and the process dies: no commit
    before = inodes(server)
    async with run(server, store) as again:
        await again.deliver(crashed)
        store.commit(again)
        assert (again.files_written, again.files_skipped) == (0, 2)
        await again.deliver([life.event(OPEN)])  # bookable again
        store.commit(again)
    assert {n: i for n, i in inodes(server).items() if n in before} == before
    assert sorted(documents(server)) == [NAME.format(1, "issue"), NAME.format(2, "correction"),
                                         NAME.format(3, "cancellation"), NAME.format(4, "issue")]
    assert documents(server)[NAME.format(4, "issue")].get("supersedes") == f"{crashed[1].id}-cancellation"


async def test_payments_go_as_payment_documents_only_when_configured(server: SftpServer) -> None:
    life, store = Life(), Store()
    paid = replace(OPEN, status="paid", unpaid=Decimal("0"), paid_amount=OPEN.total, paid=date(2026, 3, 9))
    events = [life.event(OPEN, "created"), life.event(paid)]
    async with run(server, store) as s:
        await s.deliver(events)
    assert sorted(documents(server)) == [NAME.format(1, "issue")]
    server.local_dir.joinpath(NAME.format(1, "issue")).unlink()  # the ERP took it
    async with run(server, Store(), payments=True) as s:
        await s.deliver(events)
    docs = documents(server)
    assert sorted(docs) == [NAME.format(1, "issue"), NAME.format(2, "payment")]
    payment = docs[NAME.format(2, "payment")]
    assert (payment.get("op"), payment.get("supersedes")) == ("payment", None)
    assert [payment.findtext(f"{NS}Payment/{NS}{e}") for e in ("Paid", "Unpaid", "PaidOn")] == \
        [str(OPEN.total), "0", "2026-03-09"]


async def test_an_event_older_than_what_was_taken_writes_nothing(server: SftpServer) -> None:
    """A dead letter retried after later events of its invoice went (`streamd dlq retry`)."""
    life, store = Life(), Store()
    old = life.event(replace(OPEN, due=date(2026, 4, 1)), "created")
    new = life.event(OPEN)
    async with run(server, store) as s:
        await s.deliver([new])
        store.commit(s)
        await s.deliver([old])
        assert s.take_state() == []
    assert sorted(documents(server)) == [NAME.format(1, "issue")]


async def test_an_invoice_whose_document_cannot_be_written_goes_no_further(server: SftpServer) -> None:
    """A file at the issue's name holds something else: neither the issue nor its correction
    is written, the other invoice of the batch is, and nothing is remembered."""
    life, other, store = Life(), Life("inv-8", start=10), Store()
    server.local_dir.mkdir()
    (server.local_dir / NAME.format(1, "issue")).write_bytes(b"<order>the ERP's own</order>\n")
    batch = [life.event(OPEN, "created"), life.event(replace(OPEN, due=date(2026, 5, 1))),
             other.event(invoice(8), "created")]
    async with run(server, store) as s:
        with pytest.raises(Permanent, match="_r1_issue.xml already holds a file streamd did not write"):
            await s.deliver(batch)
        assert s.take_state() == []
    assert sorted(server.files()) == [NAME.format(1, "issue"), "acme-HZ-2026-0008_r1_issue.xml"]


# ---------------------------------------------------------------- the XML an accountant needs

def rendered(inv: Invoice) -> etree._Element:
    ev = Life().event(inv, "created")
    root = etree.fromstring(invoice_xml.render(ev, inv, Document(ev.seq, 1, "issue", f"{ev.id}-issue", None,
                                                                 "c", "-")))
    XSD.assertValid(root)
    return root


def test_every_field_an_accountant_needs_from_the_seeds_document() -> None:
    n = normalize_document(DOCUMENT, TRAFFIC, received_at=T0)
    root = rendered(n.invoice)

    def text(path: str) -> str | None:
        return root.findtext("/".join(f"{NS}{p}" for p in path.split("/")))

    doc = json.loads(DOCUMENT)
    assert text("Kind") == "invoice"
    assert text("Uuid") == doc["documentUuid"]
    assert (text("ServicePeriod/Start"), text("ServicePeriod/End")) == (doc["periodStart"], doc["periodEnd"])
    assert text("Party/VatNumber") == doc["bizPartner"]["vatNumber"]
    assert [text(f"Party/Address/{e}") for e in ("Line1", "PostalCode", "City", "Country")] == \
        ["Bahnhofstrasse 1", "8001", "Zurich", "CH"]
    assert (text("Payment/Paid"), text("Payment/Unpaid")) == ("1000.00", "487.50")
    rate = root.find(f"{NS}VatRate")
    assert (rate.text, rate.get("derived")) == ("19", "true"), "237.50 on 1250.00"
    assert root.find(f"{NS}Lines/{NS}Line/{NS}VatRate").text == "19"
    # 1487.50 x 0.9712 = 1444.66: the rate multiplies; VAT 237.50 x 0.9712 = 230.66.
    domestic = root.find(f"{NS}Domestic")
    assert (domestic.get("currency"), domestic.get("rate"), domestic.get("direction")) == \
        ("CHF", "0.9712", "multiply")
    assert [(domestic.find(f"{NS}{e}").text, domestic.find(f"{NS}{e}").get("derived"))
            for e in ("Net", "Tax", "Total")] == [("1214.00", "true"), ("230.66", "true"), ("1444.66", None)]
    assert root.find(f"{NS}TrafficReports").get("missing") is None
    paid = rendered(replace(n.invoice, status="paid", paid=date(2023, 7, 20)))
    assert paid.findtext(f"{NS}Payment/{NS}PaidOn") == "2023-07-20"


def test_a_credit_note_says_so_and_a_rate_that_divides_is_read_that_way() -> None:
    credit = normalize_document(
        b'{"id": 9, "currencyCode": "EUR", "total": -119.00, "amountNoVat": -100.00, "amountVat": -19.00,'
        b' "domesticCurrencyCode": "CHF", "domesticCurrencyRate": 0.9, "domesticTotal": -132.22}',
        None, received_at=T0).invoice
    root = rendered(credit)
    assert (root.findtext(f"{NS}Kind"), root.findtext(f"{NS}Total"), root.findtext(f"{NS}VatRate")) == \
        ("credit_note", "-119.00", "19")
    domestic = root.find(f"{NS}Domestic")
    assert domestic.get("direction") == "divide"  # -119.00 / 0.9 = -132.22
    assert domestic.findtext(f"{NS}Tax") == "-21.11" and domestic.findtext(f"{NS}Net") == "-111.11"


def test_rates_are_the_simplest_that_give_the_amounts() -> None:
    assert invoice_xml.vat_rate(Decimal("1234.56"), Decimal("234.57")) == Decimal("19")
    assert invoice_xml.vat_rate(Decimal("1000.00"), Decimal("81.00")) == Decimal("8.1")
    assert invoice_xml.vat_rate(Decimal("33293.44"), Decimal("0.00")) == Decimal("0")
    assert invoice_xml.vat_rate(Decimal("0"), Decimal("0")) is None
    assert invoice_xml.vat_rate(Decimal("3"), Decimal("1.00")) == Decimal("33.3"), "0.999 is 1.00"
    assert invoice_xml.vat_rate(Decimal("1234567.89"), Decimal("0.01")) is None, "no rate of 3 decimals"
    assert invoice_xml.rate_direction(Decimal("100"), Decimal("1.5"), Decimal("7")) is None


def test_an_invoice_taken_again_from_dead_letters_says_its_traffic_reports_are_missing() -> None:
    (ev,) = renormalized(DOCUMENT, source="hz", tenant="acme", previous="", received_at=T0)
    reports = rendered(msgspec.json.decode(ev.data, type=Invoice)).find(f"{NS}TrafficReports")
    assert reports.get("missing") == "true" and len(reports) == 0
    whole = invoice_event(normalize_document(DOCUMENT, TRAFFIC, received_at=T0), source="hz", tenant="acme",
                          previous="")
    reports = rendered(msgspec.json.decode(whole.data, type=Invoice)).find(f"{NS}TrafficReports")
    assert reports.get("missing") is None and len(reports) == 2


# ---------------------------------------------------------------- through `streamd run`

def test_sink_reset_delivers_again_the_documents_after_the_seq(
        streamd_proc: Callable[..., Streamd], tmp_path: Path) -> None:
    """What the sink remembers commits with its offset in the feed, and `streamd sink reset`
    takes back what came after the seq: the documents after it are decided again as they
    were, under the same names and ids."""
    with running_sftp_server(tmp_path / "sftp") as server:
        sink = server.sink_toml("erp", match={"provider": ["synthetic"]},
                                backoff={"min": "10ms", "max": "50ms"})
        d = streamd_proc(f'[store]\npath = "feed.db"\n[http]\nlisten = "127.0.0.1:0"\n[sources.hz]\n'
                         f'provider = "synthetic"\ngenerate = false\nwebhook = true\n'
                         f'token = "file:hook.token"\n{sink}')
        (d.dir / "hook.token").write_text("lifecycle-hook-token")
        d.start()
        states = [OPEN, replace(OPEN, due=date(2026, 5, 1)), replace(OPEN, status="cancelled")]
        for i, inv in enumerate(states):
            r = httpx.post(f"{d.url}/webhooks/hz", timeout=10,
                           headers={"authorization": "Bearer lifecycle-hook-token"}, json=[{
                               "tenant": "acme", "entity": "invoice", "op": "updated" if i else "created",
                               "key": "inv-7", "version": f"2026-03-01T00:00:0{i}.000Z",
                               "data": msgspec.to_builtins(inv)}])
            assert r.status_code == 200 and r.json()["appended"] == 1
        wait_for(lambda: len(written(server)) == 3, 20, "three documents")
        wait_for(lambda: d.query("SELECT seq FROM sink_offsets") == [(3,)], 20, "the offset")
        assert d.query("SELECT seq, json_array_length(value) FROM sink_state") == [(3, 3)]
        first = documents(server)
        assert d.terminate() == 0
        for name in sorted(first)[1:]:
            (server.local_dir / name).unlink()  # the ERP took the correction and the cancellation

        r = streamd_cli("sink", "reset", "erp", "--to-seq", "1", "-c", str(d.config))
        assert r.returncode == 0, r.stderr
        assert "forgot what it delivered after seq 1 for 1 keys" in r.stdout
        assert d.query("SELECT seq, json_array_length(value) FROM sink_state") == [(1, 1)]
        d.start()
        wait_for(lambda: len(written(server)) == 3, 20, "the two documents again")
        again = documents(server)
        assert sorted(again) == sorted(first)
        for name in first:
            assert again[name].attrib == first[name].attrib, name
        assert d.terminate() == 0
