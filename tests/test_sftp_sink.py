"""The SFTP sink against a real SFTP server (OpenSSH's sshd on loopback), and its XML."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from msgspec.structs import replace
from prometheus_client import CollectorRegistry

from streamd.config import Match
from streamd.configfile import parse
from streamd.configfile import render as render_config
from streamd.errors import ConfigError, Permanent, Retryable
from streamd.health import State
from streamd.metrics import Metrics
from streamd.model import (
    Event,
    Invoice,
    InvoiceLine,
    Party,
    PartyRef,
    cloudevent,
    make_event,
    render_line,
)
from streamd.sinks import invoice_xml
from streamd.sinks.documents import Document
from streamd.sinks.filenames import MAX_NAME, Template, is_own_part, part_name
from streamd.sinks.invoice_files import FIELDS, FILENAME, file_name, template_problem
from streamd.sinks.sftp import SftpSink, SftpSinkConfig, _validate
from streamd.store import FeedEvent
from streamd.units import Duration

from .conftest import InProcess, Streamd, until, wait_for
from .sftp_server import PASSPHRASE, SSHD, SftpServer, invoice, invoice_records, running_sftp_server

pytestmark = pytest.mark.anyio
XSD = Path(__file__).resolve().parents[1] / "docs" / "horisen-invoice.xsd"
NS = "{urn:streamd:horisen-invoice:2}"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD)))


@pytest.fixture(params=["sshd", "asyncssh"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SftpServer]:
    """Each sink test against OpenSSH's sshd and against the fallback server."""
    required = os.environ.get("STREAMD_REQUIRE_TOOLS") == "1"
    if request.param == "sshd" and not os.path.exists(SSHD) and not required:
        pytest.skip(f"{SSHD} is not installed")
    with running_sftp_server(tmp_path / "sftp", use_sshd=request.param == "sshd") as s:
        yield s


def feed_event(seq: int, ev: Event) -> FeedEvent:
    line = render_line(cloudevent(seq=seq, id=ev.id, source=ev.source, provider=ev.provider,
                                  tenant=ev.tenant, entity=ev.entity, op=ev.op, key=ev.key,
                                  time=ev.time, data=ev.data))
    return FeedEvent(seq, ev.id, ev.source, ev.provider, ev.tenant, ev.entity, ev.op, ev.key, ev.time,
                     0, ev.data, line)


def invoice_events(n: int, start: int = 0, version: str = "v1", tenant: str = "acme") -> list[FeedEvent]:
    return [feed_event(i + 1, make_event(provider="horisen", source="hz", tenant=tenant, entity="invoice",
                                         op="created", key=f"inv-{i}", time=T0, data=invoice(i),
                                         version=version))
            for i in range(start, start + n)]


def issue(ev: FeedEvent) -> Document:
    """The document an invoice's first event makes."""
    return Document(ev.seq, 1, "issue", f"{ev.id}-issue", None, "c", "-")


def name(i: int, revision: int = 1, op: str = "issue", tenant: str = "acme") -> str:
    """The default file name of document `revision` of invoice `i` (`invoice(i)`)."""
    return f"{tenant}-HZ-2026-{i:04d}_r{revision}_{op}.xml"


@asynccontextmanager
async def opened(server: SftpServer, **kw: Any) -> AsyncIterator[SftpSink]:
    s = SftpSink("erp", server.sink_config(**kw))
    try:
        yield s
    finally:
        await s.aclose()


def xml_files(server: SftpServer) -> dict[str, bytes]:
    return {k: v for k, v in server.files().items() if not k.startswith(".")}


def mtimes(server: SftpServer) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in server.local_dir.iterdir()}


# ---------------------------------------------------------------- delivery

async def test_each_invoice_becomes_one_valid_xml_file(server: SftpServer, schema: etree.XMLSchema) -> None:
    events = invoice_events(20)
    async with opened(server) as s:
        assert await s.recover() == 0
        await s.deliver(events)
    files = server.files()
    assert sorted(files) == sorted(name(i) for i in range(20)), "no .part left"
    assert s.files_written == 20 and s.files_skipped == 0
    for i, e in enumerate(events):
        inv = json.loads(e.data)
        doc = etree.fromstring(files[name(i)])
        schema.assertValid(doc)
        assert doc.tag == f"{NS}Invoice"
        assert (doc.get("schemaVersion"), doc.get("documentId"), doc.get("op"), doc.get("revision"),
                doc.get("supersedes")) == ("2", f"{e.id}-issue", "issue", "1", None)
        assert (doc.get("eventId"), doc.get("seq"), doc.get("tenant"), doc.get("key")) == \
            (e.id, str(e.seq), "acme", e.key)
        assert doc.findtext(f"{NS}Number") == inv["number"]
        assert Decimal(doc.findtext(f"{NS}Total") or "") == Decimal(inv["total"])
        assert doc.find(f"{NS}Party/{NS}Name").text == "Acme & Söhne <AG>"
        rows = doc.findall(f"{NS}TrafficReports/{NS}Traffic")
        assert [(r.findtext(f"{NS}MCC"), int(r.findtext(f"{NS}Messages") or -1),
                 Decimal(r.findtext(f"{NS}Amount") or "")) for r in rows] == \
            [(t["mcc"], t["messages"], Decimal(t["amount"])) for t in inv["traffic"]]


async def test_a_redelivered_batch_writes_nothing(server: SftpServer) -> None:
    events = invoice_events(12)
    async with opened(server) as first:
        await first.deliver(events)  # connects (and lists the directory) on its own
    before = mtimes(server)
    # A crash between the upload and the offset commit: the next run gets the batch again.
    async with opened(server) as again:
        await again.recover()
        await again.deliver(events)
        await again.deliver(events[:5])  # taken already by this sink: not even looked for
    assert again.files_written == 0 and again.files_skipped == 12
    assert mtimes(server) == before


async def test_a_file_holding_another_document_of_the_invoice_is_never_replaced(server: SftpServer) -> None:
    """What version 1 replaced (the same invoice, another event): a file is never replaced."""
    (ev,) = invoice_events(1)
    other = replace(invoice_events(1, version="v2")[0], seq=9)
    server.local_dir.mkdir()
    held = invoice_xml.render(other, invoice(0), issue(other))
    (server.local_dir / name(0)).write_bytes(held)
    async with opened(server) as s:
        with pytest.raises(Permanent, match=f"already holds document {other.id}-issue of event {other.id}"):
            await s.deliver([ev])
    assert xml_files(server) == {name(0): held}


async def test_only_the_sinks_own_leftover_part_files_are_removed(server: SftpServer) -> None:
    server.local_dir.mkdir()
    (server.local_dir / ".acme-HZ-2026-0000.xml.streamd-erp.part").write_bytes(b"<Invoice half")
    theirs = {".x.part": b"another uploader's, under way", "not-ours.part": b"keep",
              ".acme-HZ-2026-0000.xml.streamd-erp2.part": b"another sink's",
              ".acme-HZ-2026-0001.xml.part": b"<Invoice half, from streamd before names had a marker"}
    for name, data in theirs.items():
        (server.local_dir / name).write_bytes(data)
    async with opened(server) as s:
        await s.recover()
        assert server.files() == theirs
        await s.deliver(invoice_events(3))
    assert {n: d for n, d in server.files().items() if n.endswith(".part")} == theirs
    assert len(xml_files(server)) == 3 + 1


async def test_names_that_sanitizing_made_one_are_two_files(server: SftpServer) -> None:
    events = [feed_event(i + 1, make_event(provider="horisen", source="hz", tenant=tenant, entity="invoice",
                                           op="created", key=f"inv-{i}", time=T0,
                                           data=invoice(i, number=number)))
              for i, (tenant, number) in enumerate(COLLIDING)]
    async with opened(server) as s:
        await s.deliver(events)
    files = xml_files(server)
    assert sorted(files) == sorted(["a%2Db-c_r1_issue.xml", "a-b-c_r1_issue.xml", "x%2Fy-1_r1_issue.xml",
                                    "x_y-1_r1_issue.xml"])
    assert {etree.fromstring(d).get("eventId") for d in files.values()} == {e.id for e in events}


def conflict_count(metrics: Metrics) -> float:
    return metrics.sink_sftp_name_conflicts.labels("erp")._value.get()  # type: ignore[no-any-return]


async def test_a_file_of_another_invoice_at_the_name_is_never_replaced(server: SftpServer) -> None:
    ours = invoice_events(3)
    # What is at two of the names: another invoice's file (another key: the same number in
    # another HORISEN account, say) and a file streamd did not write.
    other = feed_event(9, make_event(provider="horisen", source="hz2", tenant="acme", entity="invoice",
                                     op="created", key="inv-elsewhere", time=T0, data=invoice(0)))
    server.local_dir.mkdir()
    taken = {name(0): invoice_xml.render(other, invoice(0), issue(other)),
             name(1): b"<order>the ERP's own</order>\n"}
    for held, data in taken.items():
        (server.local_dir / held).write_bytes(data)
    before = mtimes(server)
    metrics = Metrics(CollectorRegistry())
    async with opened(server) as s:
        s.attach_metrics(metrics)
        with pytest.raises(Permanent) as exc:
            await s.deliver(ours)
        assert str(exc.value).startswith(
            f"event {ours[0].id} (seq 1): {server.directory}/{name(0)} already holds document "
            f"{other.id}-issue of event {other.id}; not replaced")
        assert str(exc.value).endswith("(and 1 more in this batch)")
        assert conflict_count(metrics) == 2
        # Split as the dispatcher does: each alone is refused, naming its file (counted once
        # already); the third is written.
        with pytest.raises(Permanent, match="-0001_r1_issue.xml already holds a file streamd did not write"):
            await s.deliver([ours[1]])
        await s.deliver([ours[2]])
        assert conflict_count(metrics) == 2
    files = server.files()
    assert {n: files[n] for n in taken} == taken and {n: mtimes(server)[n] for n in taken} == before
    assert etree.fromstring(files[name(2)]).get("eventId") == ours[2].id
    assert not [n for n in files if n.startswith(".")], "no .part left behind"


async def test_a_file_that_appeared_after_the_listing_is_not_replaced_either(server: SftpServer) -> None:
    async with opened(server) as s:
        await s.recover()  # lists the directory: empty
        (server.local_dir / name(0)).write_bytes(b"another uploader's")
        with pytest.raises(Permanent, match="already holds a file streamd did not write"):
            await s.deliver(invoice_events(2))
    assert server.files()[name(0)] == b"another uploader's"
    assert sorted(server.files()) == [name(0), name(1)]


async def test_two_invoices_of_one_name_in_a_batch_write_the_first(server: SftpServer) -> None:
    a = invoice_events(1)[0]
    b = replace(invoice_events(1, tenant="other")[0], seq=2)
    async with opened(server, filename="{number}_r{revision}.xml") as s:
        with pytest.raises(Permanent, match=f"event {b.id} \\(seq 2\\): .*HZ-2026-0000_r1.xml already holds "
                                            f"document {a.id}-issue \\(seq 1, another in this batch"):
            await s.deliver([a, b])
    (data,) = xml_files(server).values()
    assert etree.fromstring(data).get("eventId") == a.id


async def test_an_event_with_an_amount_beyond_the_bounds_is_refused_not_rendered(server: SftpServer) -> None:
    """Appended before amounts were bounded: written out, 1E-999999999 is a billion zeros."""
    (ev,) = invoice_events(1)
    bad = replace(ev, data=json.dumps({**json.loads(ev.data), "total": "1E-99999"}).encode())
    async with opened(server) as s:
        with pytest.raises(Permanent, match=r"holds no usable invoice: total: 1E-99999 is out of range"):
            await s.deliver([bad])
    assert not server.files()


async def test_without_the_fsync_extension_it_still_writes(server: SftpServer) -> None:
    async with opened(server) as s:
        await s.deliver(invoice_events(2))
        # A server that does not advertise it (asyncssh's client decides from this flag).
        s._sftp._handler._supports_fsync = False  # type: ignore[union-attr]
        await s.deliver(invoice_events(2, start=2))
        assert not s._fsync_ok
    ids = {etree.fromstring(d).get("eventId") for d in xml_files(server).values()}
    assert ids == {e.id for e in invoice_events(4)}


async def test_a_key_with_a_passphrase(server: SftpServer) -> None:
    (server.workdir / "pass").write_text(PASSPHRASE + "\n")
    async with opened(server, private_key=f"file:{server.encrypted_key}",
                      passphrase=f"file:{server.workdir / 'pass'}") as s:
        await s.deliver(invoice_events(1))
    assert len(xml_files(server)) == 1


async def test_an_event_that_is_no_invoice_is_refused_permanently(server: SftpServer) -> None:
    party = feed_event(9, make_event(provider="horisen", source="hz", tenant="acme", entity="party",
                                     op="created", key="p1", time=T0, data=Party(name="x")))
    bad = FeedEvent(10, "f" * 32, "hz", "horisen", "acme", "invoice", "created", "k", "t", 0,
                    b'{"total": "1"}', b"")
    async with opened(server) as s:
        for ev in (party, bad):
            with pytest.raises(Permanent, match=ev.id):
                await s.deliver([*invoice_events(2), ev])
    assert not server.files(), "a batch that will be split is refused before anything is written"


# ---------------------------------------------------------------- failures

async def test_a_wrong_host_key_is_refused_and_nothing_is_written(server: SftpServer) -> None:
    async with opened(server, known_hosts=str(server.wrong_known_hosts)) as s:
        with pytest.raises(Retryable, match="host key not verifiable") as exc:
            await s.recover()
        assert f"127.0.0.1:{server.port}" in str(exc.value)
        with pytest.raises(Retryable, match="host key not verifiable"):
            await s.deliver(invoice_events(2))
    assert not server.local_dir.exists()


async def test_a_refused_key_says_authentication_refused(server: SftpServer) -> None:
    async with opened(server, private_key=f"file:{server.stranger_key}") as s:
        with pytest.raises(Retryable, match=f"authentication refused for user '{server.username}'"):
            await s.recover()


async def test_server_down_is_retryable_and_it_reconnects(server: SftpServer) -> None:
    async with opened(server) as s:
        await s.deliver(invoice_events(2))
        server.stop()  # the listener and the open session
        with pytest.raises(Retryable, match=f"127.0.0.1:{server.port}"):
            await s.deliver(invoice_events(2, start=2))
        with pytest.raises(Retryable, match="cannot connect"):
            await s.deliver(invoice_events(2, start=2))
        server.start()
        await s.deliver(invoice_events(4))  # the first two were taken already: nothing for them
    assert len(xml_files(server)) == 4
    assert (s.files_written, s.files_skipped) == (4, 0)


async def test_a_connection_the_server_closed_is_reopened_at_once(server: SftpServer) -> None:
    async with opened(server) as s:
        await s.deliver(invoice_events(1))
        server.drop_sessions()  # as a server does with idle connections
        await s.deliver(invoice_events(1, start=1))  # no Retryable: reconnected, the batch written
    assert (s.files_written, s.files_skipped) == (2, 0)


async def test_an_unusable_directory_is_retryable_until_fixed(server: SftpServer) -> None:
    server.local_dir.mkdir()
    (server.local_dir / "blocked").write_text("a file where the directory should be")
    async with opened(server, directory=f"{server.directory}/blocked/in") as s:
        with pytest.raises(Retryable, match="preparing .*blocked/in"):
            await s.recover()
        (server.local_dir / "blocked").unlink()
        await s.recover()
        await s.deliver(invoice_events(1))
    assert len(list((server.local_dir / "blocked" / "in").iterdir())) == 1


# ---------------------------------------------------------------- names and config

def test_file_names_escape_what_is_unsafe_and_keep_common_names() -> None:
    (ev,) = invoice_events(1)
    doc = issue(ev)
    assert file_name("{tenant}-{number}.xml", ev, invoice(0), doc) == "acme-HZ-2026-0000.xml", "unchanged"
    assert file_name(FILENAME, ev, invoice(0), doc) == name(0)
    assert file_name("{tenant}-{number}.xml", ev, invoice(0, number="../2026/07 Ü%"), doc) == \
        "acme-..%2F2026%2F07%20%C3%9C%25.xml"
    assert file_name("{documentNumber}_{seq:06d}_{id}.xml", ev, invoice(3), doc) == \
        f"HZ-2026-0003_000001_{ev.id}.xml"
    assert file_name("{source}/{op}/{issued}/{key}.xml", ev, invoice(3), doc) == \
        "hz_issue_2026-02-28_inv-0.xml"
    assert file_name("{number}.xml", ev, invoice(1, number=None), doc) == "inv-0.xml", "no number: the key"
    assert file_name("..{number}", ev, invoice(1), doc) == "__HZ-2026-0001", "the template's own text"
    assert file_name("{number}", ev, invoice(1, number=".hidden"), doc) == "%2Ehidden"
    # A field empty here, then a '.': the name would be hidden; '%' then '.' is no escape.
    assert file_name("{tenant}.{number}.xml", replace(ev, tenant=""), invoice(1), doc) == "%.HZ-2026-0001.xml"


#: The pairs the brief named: distinct invoices that sanitizing gave one name.
COLLIDING = [("a-b", "c"), ("a", "b-c"), ("x/y", "1"), ("x_y", "1")]


def test_distinct_invoices_never_share_a_name() -> None:
    (ev,) = invoice_events(1)
    names = {file_name("{tenant}-{number}.xml", replace(ev, tenant=t), invoice(0, number=n), issue(ev))
             for t, n in COLLIDING}
    assert names == {"a%2Db-c.xml", "a-b-c.xml", "x%2Fy-1.xml", "x_y-1.xml"}


_VALUE = st.text(alphabet="ab-_./%~ü\x00", max_size=6)


@settings(max_examples=400, deadline=None)
@given(template=st.sampled_from(["{tenant}-{number}.xml", "{tenant}.{number}.xml", "{tenant}_{issued}_{key}",
                                 "{number}", "x{tenant}--{key}.{number}y", "{tenant}%{number}"]),
       a=st.tuples(_VALUE, _VALUE, _VALUE, _VALUE), b=st.tuples(_VALUE, _VALUE, _VALUE, _VALUE))
def test_names_are_injective(template: str, a: tuple[str, ...], b: tuple[str, ...]) -> None:
    t = Template(template, FIELDS)
    assert t.problem is None

    def name(v: tuple[str, ...]) -> str:
        return t.render(dict(zip(("tenant", "number", "issued", "key"), v, strict=True)))

    used = tuple(f.name for f in t.fields)
    pick = ("tenant", "number", "issued", "key")
    if name(a) == name(b):
        assert [a[pick.index(f)] for f in used] == [b[pick.index(f)] for f in used]
    for n in (name(a), name(b)):
        assert not n.startswith(".") and "/" not in n and "\x00" not in n and n.isascii()


def test_long_names_are_cut_keeping_their_extension_and_stay_distinct() -> None:
    (ev,) = invoice_events(1)
    names = {file_name("{tenant}-{number}.xml", ev, invoice(0, number="ü" * 100 + str(i)), issue(ev))
             for i in range(3)}
    assert len(names) == 3
    for n in names:
        assert len(n) <= MAX_NAME and n.endswith(".xml") and "~" in n
        assert len(part_name(n, "e" * 63)) <= 255


def test_temporary_names_say_whose_they_are() -> None:
    assert part_name("acme-1.xml", "erp") == ".acme-1.xml.streamd-erp.part"
    assert is_own_part(".acme-1.xml.streamd-erp.part", "erp")
    for other in (".acme-1.xml.part", ".x.part", ".acme-1.xml.streamd-erp2.part", "acme.streamd-erp.part"):
        assert not is_own_part(other, "erp"), other


def test_templates_that_could_give_two_documents_one_name_are_refused() -> None:
    assert template_problem("{tenant}{number}.xml") == \
        "{tenant} and {number} need text between them (such as '-'), or two invoices could get one name"
    assert template_problem("{tenant}-{issued}_{revision}.xml") == \
        "needs one of {number}, {documentNumber}, {key}, {id}, {seq}, or two invoices could get one name"
    assert template_problem("invoice.xml") is not None
    # Version 1's default: an invoice's correction would get its issue's name.
    assert template_problem("{tenant}-{number}.xml") == \
        "needs {revision} (or {op} with {id} or {seq}), or an invoice's documents (its corrections, " \
        "cancellation, payments) could get one name"
    assert template_problem("{number}-{seq}.xml") is not None, "an event may make an issue and a payment"
    for good in (FILENAME, "{key}.{revision}.xml", "{seq}-{op}.xml", "{number}_{id}_{op}.xml"):
        assert template_problem(good) is None, good


def base_toml(server: SftpServer, **extra: Any) -> str:
    # Not the default match (horisen's): these configs work whichever providers are registered.
    extra.setdefault("match", {"provider": ["synthetic"], "type": ["invoice.created"]})
    return server.sink_toml("erp", **extra)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse(text)
    return exc.value.problems


def test_a_good_config_and_its_defaults(server: SftpServer) -> None:
    cfg = parse(base_toml(server)).sinks["erp"]
    assert isinstance(cfg, SftpSinkConfig)
    assert (cfg.port, cfg.fsync, cfg.concurrency, cfg.batch_max, cfg.timeout) == \
        (server.port, True, 8, 100, Duration(30))
    defaults = SftpSinkConfig(type="sftp", host="h", username="u", known_hosts="k")
    assert defaults.match == Match(provider=["horisen"], entity=["invoice"]) and not defaults.payments
    assert defaults.filename == "{tenant}-{number}_r{revision}_{op}.xml"


def test_config_mistakes_are_named(server: SftpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFTP_PW", "hunter2-secret")
    found = problems(base_toml(server, known_hosts=None))
    assert "sinks.erp.known_hosts: missing required key" in found
    found = problems(base_toml(server, private_key=None))
    assert any("sinks.erp.private_key: missing required key (or set password" in p for p in found)
    found = problems(base_toml(server, password="env:SFTP_PW"))
    assert "sinks.erp.private_key, password: set one of them, not both" in found
    found = problems(base_toml(server, private_key=None, password="env:SFTP_PW",
                               passphrase="env:SFTP_PW"))
    assert "sinks.erp.passphrase: only used with private_key" in found
    found = problems(base_toml(server, filename="{tenant}-{nubmer}.xml", concurrency=0, port=70000))
    assert any(p.startswith("sinks.erp.filename: unknown field {nubmer}") for p in found), found
    assert "sinks.erp.concurrency: must be between 1 and 64" in found
    assert "sinks.erp.port: must be between 1 and 65535" in found
    for bad in ("{tenant", "{tenant}}", "{0}.xml", "{tenant.upper}.xml", "{seq:zz}.xml"):
        found = problems(base_toml(server, filename=bad))
        assert any(p.startswith("sinks.erp.filename:") for p in found), bad
    found = problems(base_toml(server, known_hosts=str(server.workdir / "nope")))
    assert any("known_hosts:" in p and "does not exist" in p and "ssh-keyscan" in p for p in found)
    found = problems(base_toml(server, private_key=f"file:{server.known_hosts}"))
    assert any(p.startswith("sinks.erp.private_key: file:") and "not a private key" in p for p in found)
    found = problems(base_toml(server, private_key="inline-key-text"))
    assert any("secrets cannot be written inline" in p for p in found)
    assert not any("inline-key-text" in p for p in found)


def test_secrets_never_show(server: SftpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    key_text = server.client_key.read_text()
    body = key_text.splitlines()[1]
    cfg = parse(base_toml(server)).sinks["erp"]
    shown = [repr(cfg), str(cfg), render_config(parse(base_toml(server))), repr(SftpSink("erp", cfg))]  # type: ignore[arg-type]
    monkeypatch.setenv("SFTP_PW", "hunter2-secret")
    pw = parse(base_toml(server, private_key=None, password="env:SFTP_PW"))
    shown += [repr(pw), render_config(pw)]
    # A wrong passphrase: the problem is named, the passphrase and the key are not.
    monkeypatch.setenv("SFTP_PASS", "not-the-passphrase")
    shown += problems(base_toml(server, private_key=f"file:{server.encrypted_key}",
                                passphrase="env:SFTP_PASS"))
    for text in shown:
        assert body not in text and "hunter2-secret" not in text and "not-the-passphrase" not in text
    assert "file:" in shown[0] and "<redacted file:" in shown[2]


async def test_secrets_stay_out_of_delivery_errors(server: SftpServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFTP_PW", "hunter2-secret")
    assert _validate(server.sink_config(private_key=None, password="env:SFTP_PW")) == []
    async with opened(server, private_key=None, password="env:SFTP_PW") as s:
        with pytest.raises(Retryable, match="authentication refused") as exc:
            await s.recover()  # the test server takes keys only
    assert "hunter2" not in str(exc.value)


# ---------------------------------------------------------------- through the daemon

async def test_end_to_end_through_the_daemon(tmp_path: Path) -> None:
    with running_sftp_server(tmp_path / "sftp") as server:
        server.stop()  # the ERP's server is down when streamd starts
        text = f"""
[store]
path = "{tmp_path / 'feed.db'}"
[http]
listen = "127.0.0.1:0"
[sources.hz]
provider = "synthetic"
generate = false
webhook = true
token = "file:hook.token"
{base_toml(server, backoff={"min": "10ms", "max": "100ms"}, batch_max=4)}
"""
        (tmp_path / "hook.token").write_text("sftp-test-hook-token")
        cfg = parse(text, base_dir=tmp_path)
        records = invoice_records(6)
        records.append({"tenant": "acme", "entity": "party", "op": "created", "key": "p1",
                        "data": {"name": "not for the ERP"}})
        async with InProcess(cfg) as d:
            r = await d.http.post("/webhooks/hz", json=records,
                                  headers={"authorization": "Bearer sftp-test-hook-token"})
            assert r.status_code == 200 and r.json()["appended"] == 7
            comp = d.daemon.health.get("sink", "erp")
            await until(lambda: comp.state is State.RETRYING, 10, "the sink to be retrying")
            assert d.rows("SELECT seq FROM sink_offsets WHERE sink = 'erp'") in ([], [(0,)])
            server.start()
            await until(lambda: len(xml_files(server)) == 6, 10, "six files")
            await until(lambda: d.rows("SELECT seq FROM sink_offsets WHERE sink = 'erp'") == [(7,)], 10)
        before = mtimes(server)
        assert d.rows("SELECT count(*), max(seq) FROM sink_state WHERE sink = 'erp'") == [(6, 6)]
        # A crash before the offset commit: what the sink remembers commits with the offset,
        # so neither is there; the next run redelivers, decides the same, and writes nothing.
        db = sqlite3.connect(cfg.store.path)
        db.execute("UPDATE sink_offsets SET seq = 0 WHERE sink = 'erp'")
        db.execute("DELETE FROM sink_state WHERE sink = 'erp'")
        db.commit()
        db.close()
        async with InProcess(cfg) as d:
            s = d.daemon.dispatchers["erp"].sink
            await until(lambda: s.files_skipped == 6, 10, "the redelivery to be skipped")
            assert s.files_written == 0
        assert mtimes(server) == before
        numbers = sorted(etree.fromstring(b).findtext(f"{NS}Number") for b in xml_files(server).values())
        assert numbers == [f"HZ-2026-{i:04d}" for i in range(6)]


def test_names_conflicts_and_part_files_through_streamd_run(
        streamd_proc: Callable[..., Streamd], tmp_path: Path) -> None:
    """A real `streamd run`: the pairs sanitizing once made one name give four files; a file
    of another event at a fifth name is left as it is and the event ends in dead letters,
    counted; a connect removes the sink's own stale `.part`, not another uploader's."""
    with running_sftp_server(tmp_path / "sftp") as server:
        server.local_dir.mkdir()
        stale, foreign = f".{name(9)}.streamd-erp.part", ".x.part"
        (server.local_dir / stale).write_bytes(b"<Invoice half")
        (server.local_dir / foreign).write_bytes(b"another uploader's, under way")
        squatter = feed_event(77, make_event(provider="synthetic", source="elsewhere", tenant="acme",
                                             entity="invoice", op="created", key="not-ours", time=T0,
                                             data=invoice(5)))
        held = invoice_xml.render(squatter, invoice(5), issue(squatter))
        (server.local_dir / name(5)).write_bytes(held)
        held_mtime = mtimes(server)[name(5)]
        d = streamd_proc(f"""
[store]
path = "feed.db"
[http]
listen = "127.0.0.1:0"
[sources.hz]
provider = "synthetic"
generate = false
webhook = true
token = "env:SFTP_HOOK_TOKEN"
{base_toml(server, backoff={"min": "10ms", "max": "50ms"}, max_tries=2)}
""", env={"SFTP_HOOK_TOKEN": "sftp-test-hook-token"})
        d.start()
        records = [{**r, "tenant": tenant, "data": {**r["data"], "number": number}}
                   for r, (tenant, number) in zip(invoice_records(4), COLLIDING, strict=True)]
        records += invoice_records(1, start=5)  # its name holds the squatter's file
        r = httpx.post(f"{d.url}/webhooks/hz", json=records, timeout=10,
                       headers={"authorization": "Bearer sftp-test-hook-token"})
        assert r.status_code == 200 and r.json()["appended"] == 5
        wait_for(lambda: d.query("SELECT count(*) FROM dead_letters WHERE origin = 'sink'") == [(1,)], 30,
                 "the conflicting event in dead letters")
        ((reason, context, raw),) = d.query("SELECT reason, context, raw FROM dead_letters")
        line = json.loads(raw)
        assert json.loads(context) == {"id": line["id"], "type": "invoice.created"}
        assert line["data"]["number"] == "HZ-2026-0005" and line["subject"].endswith("/inv-5")
        assert f"{server.directory}/{name(5)} already holds document {squatter.id}-issue of event " \
            f"{squatter.id}" in reason, reason
        wait_for(lambda: d.query("SELECT seq FROM sink_offsets WHERE sink = 'erp'") == [(5,)], 30,
                 "the sink past all five")
        metrics = httpx.get(f"{d.url}/metrics", timeout=10).text
        # Tried more than once (the batch, its halves, then alone max_tries times): counted once.
        tries = re.search(r'streamd_sink_failures_total\{kind="permanent",sink="erp"\} (\S+)', metrics)
        assert tries is not None and float(tries.group(1)) > 2
        assert 'streamd_sink_sftp_name_conflicts_total{sink="erp"} 1.0' in metrics
        files = server.files()
        assert files[name(5)] == held
        assert mtimes(server)[name(5)] == held_mtime
        assert sorted(files) == sorted([foreign, "a%2Db-c_r1_issue.xml", "a-b-c_r1_issue.xml", name(5),
                                        "x%2Fy-1_r1_issue.xml", "x_y-1_r1_issue.xml"])
        assert files[foreign] == b"another uploader's, under way"
        assert d.terminate() == 0


# ---------------------------------------------------------------- the XML alone

def _event(**kw: Any) -> FeedEvent:
    return replace(invoice_events(1)[0], **kw)


def render(inv: Invoice, **kw: Any) -> bytes:
    ev = _event(**kw)
    return invoice_xml.render(ev, inv, issue(ev))


def test_a_minimal_invoice_validates(schema: etree.XMLSchema) -> None:
    data = render(Invoice(direction="payable", currency="CHF", total=Decimal("0")))
    assert data.startswith(b"<?xml version='1.0' encoding='utf-8'?>\n"
                           b'<Invoice xmlns="urn:streamd:horisen-invoice:2" schemaVersion="2"')
    doc = etree.fromstring(data)
    schema.assertValid(doc)
    assert [c.tag[len(NS):] for c in doc] == ["Kind", "Status", "Currency", "Total"], "None is left out"


def test_a_maximal_invoice_validates(schema: etree.XMLSchema) -> None:
    inv = invoice(7, converted_currency="CHF", converted_total=Decimal("101.25"),
                  conversion_rate=Decimal("0.94"), description="March traffic",
                  lines=[InvoiceLine(description="SMS", quantity=Decimal("1007"), unit_price=Decimal("0.045"),
                                     net=Decimal("45.315"), tax=Decimal("3.49"), total=Decimal("48.805")),
                         InvoiceLine()])
    doc = etree.fromstring(render(inv, seq=123456))
    schema.assertValid(doc)
    assert [c.tag[len(NS):] for c in doc] == [
        "Kind", "Number", "Issued", "Due", "Status", "ProviderStatus", "Currency", "Net", "Tax", "VatRate",
        "Total", "Payment", "Domestic", "Party", "Description", "Lines", "TrafficReports"]
    conv = doc.find(f"{NS}Domestic")
    assert (conv.get("currency"), conv.get("rate"), conv.get("direction"), conv.findtext(f"{NS}Total")) == \
        ("CHF", "0.94", None, "101.25"), "107.70 x 0.94 is not 101.25: no direction, nothing derived"
    assert len(doc.findall(f"{NS}Lines/{NS}Line")) == 2
    assert invoice_xml.root_of(render(inv)[:4096]) == invoice_xml.Root(f"{_event().id}-issue", _event().id)


def test_special_characters_are_escaped(schema: etree.XMLSchema) -> None:
    nasty = 'A&B <"quoted"> \'x\' ]]> \x01\x1f end'
    inv = invoice(1, number=nasty, description=nasty, party=PartyRef(key=nasty, name=nasty))
    data = render(inv, tenant=nasty, key=nasty)
    doc = etree.fromstring(data)
    schema.assertValid(doc)
    clean = nasty.replace("\x01", "\ufffd").replace("\x1f", "\ufffd")
    assert doc.findtext(f"{NS}Number") == doc.findtext(f"{NS}Description") == clean
    assert doc.get("tenant") == doc.get("key") == doc.find(f"{NS}Party").get("key") == clean
    assert b"<B" not in data and b"\x01" not in data


def test_amounts_are_never_in_exponent_form(schema: etree.XMLSchema) -> None:
    inv = Invoice(direction="receivable", currency="EUR", total=Decimal("1E+3"), net=Decimal("1.5E-7"),
                  tax=Decimal("-0E-2"), lines=[InvoiceLine(unit_price=Decimal("12345678901234567890E-30"))])
    data = render(inv)
    schema.assertValid(etree.fromstring(data))
    assert b"E" not in data.split(b">", 2)[2].replace(b"EUR", b"")
    assert b"<Total>1000</Total>" in data and b"<Net>0.00000015</Net>" in data
    with pytest.raises(ValueError, match="not an amount"):
        render(Invoice(direction="receivable", currency="EUR", total=Decimal("NaN")))

