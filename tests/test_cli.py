"""The command line against a real feed: status, dlq, and the demo that README.md opens with."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
import msgspec
from lxml import etree

from streamd.model import Invoice
from streamd.providers.synthetic import wire
from streamd.sinks.documents import History, decide

from .conftest import Streamd, feed_lines, streamd_cli, wait_for

TOKEN = "cli-test-token"
XSD = Path(__file__).resolve().parents[1] / "docs" / "horisen-invoice.xsd"
CONFIG = """
[store]
path = "feed.db"
[http]
listen = "127.0.0.1:0"
[sources.hook]
provider = "synthetic"
generate = false
webhook = true
token = "env:CLI_HOOK_TOKEN"
[sinks.file]
type = "file"
path = "out/feed.jsonl"
"""


def test_status_and_dead_letters_from_the_command_line(streamd_proc: Callable[..., Streamd]) -> None:
    d = streamd_proc(CONFIG, env={"CLI_HOOK_TOKEN": TOKEN})
    d.start()
    bad = b'{"tenant":"t","entity":"invoice","op":"created","key":"x","data":{"total":"one"}}'
    body = b"[" + wire.record(1, 0, ["t"], datetime(2026, 1, 1)) + b"," + bad + b"]"
    r = httpx.post(f"{d.url}/webhooks/hook", content=body, timeout=10, headers={
        "content-type": "application/json", "authorization": f"Bearer {TOKEN}"})
    assert r.json()["rejected"] == 1
    assert d.terminate() == 0
    env = {"CLI_HOOK_TOKEN": TOKEN}

    r = streamd_cli("status", "-c", str(d.config), "--json", env=env)
    s = json.loads(r.stdout)
    assert s["head"] == 1 and s["retained"] == 1
    assert s["daemon"].startswith("not reachable")
    assert s["sinks"]["file"]["offset"] == 1 and s["sinks"]["file"]["lag_events"] == 0
    assert s["dead_letters"] == {"source hook": 1}

    r = streamd_cli("dlq", "list", "-c", str(d.config), "--raw", env=env)
    assert "source hook" in r.stdout and "Invalid decimal" in r.stdout
    assert bad.decode() in r.stdout
    (dl_id,) = d.query("SELECT id FROM dead_letters")[0]

    r = streamd_cli("dlq", "retry", "-c", str(d.config), str(dl_id), env=env)
    assert r.returncode == 0 and "1 dead letters marked for retry" in r.stdout
    assert d.query("SELECT status FROM dead_letters") == [("retry",)]
    r = streamd_cli("dlq", "drop", "-c", str(d.config), env=env)
    assert r.returncode == 2, "drop needs ids or --all"
    r = streamd_cli("dlq", "drop", "--all", "-c", str(d.config), env=env)
    assert "1 dead letters dropped" in r.stdout
    assert d.query("SELECT count(*) FROM dead_letters") == [(0,)]


def test_tail_without_a_feed_says_so() -> None:
    r = streamd_cli("tail", "--db", "/nonexistent/feed.db")
    assert r.returncode == 1 and "no feed database here" in r.stderr


def test_the_demo_runs_and_prints_the_feed_and_a_summary(tmp_path: Path) -> None:
    r = streamd_cli("demo", "--duration", "4", "--rate", "40", "--dir", str(tmp_path), timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    n = len(lines)
    assert n >= 60
    assert [x["seq"] for x in lines] == list(range(1, n + 1))
    assert {x["specversion"] for x in lines} == {"1.0"}
    kinds = {x["type"] for x in lines}
    for entity in ("party", "invoice", "transaction", "bank_account", "product", "voucher", "user"):
        assert {f"{entity}.created", f"{entity}.updated", f"{entity}.deleted"} <= kinds, entity
    assert "wss://127.0.0.1:" in r.stderr and "/metrics" in r.stderr and "feed.jsonl" in r.stderr
    assert "receiver at http://127.0.0.1:" in r.stderr
    assert "SFTP server at sftp://streamd@127.0.0.1:" in r.stderr
    assert "Traceback" not in r.stderr
    # Asperion's first poll: 2 tenants x 3 resources x 10 records, each created once.
    asperion = [x for x in lines if x["provider"] == "asperion"]
    assert len(asperion) == 60 and {x["type"].split(".")[1] for x in asperion} == {"created"}
    # HORISEN's first poll: 5 days x 4 documents, each invoice created once with its traffic.
    invoices = [x for x in lines if x["provider"] == "horisen" and x["type"] == "invoice.created"]
    assert len(invoices) == 20 and all(x["data"]["traffic"] for x in invoices)
    # Connec!'s first poll: 2 groups x (7 collections x 3 entities + 1 company).
    assert len([x for x in lines if x["provider"] == "connec"]) >= 44

    _, sep, tail = r.stderr.partition("\n--- streamd demo summary\n")
    assert sep, r.stderr
    summary = {tuple(line.split()[:2]): line for line in tail.splitlines()}
    providers = ("asperion", "asteria", "connec", "horisen")
    assert sorted(summary) == sorted([("provider", p) for p in providers]
                                     + [("sink", s) for s in ("stdout", "file", "http", "sftp")]), tail
    for p in providers:
        count = len([x for x in lines if x["provider"] == p])
        assert re.match(rf"provider {p} +{count} events \(.+\); \d+ duplicates dropped; \d+ dead letters$",
                        summary["provider", p]), summary["provider", p]
    # Every sink drained: the feed's head, delivered; the sftp sink took HORISEN's invoices.
    horisen = [x for x in lines if x["provider"] == "horisen" and x["type"].startswith("invoice.")]
    for sink, delivered in (("stdout", n), ("file", n), ("http", n), ("sftp", len(horisen))):
        assert re.match(rf"sink +{sink} +{delivered} delivered \(up to seq {n}\), lag 0(;|$)",
                        summary["sink", sink]), summary["sink", sink]
    # The receiver got every event once, every request signed right.
    got = re.search(r"; receiver: (\d+) requests, (\d+) events, (\d+) redeliveries, (\d+) bad signatures$",
                    summary["sink", "http"])
    assert got is not None, summary["sink", "http"]
    requests, events, redeliveries, bad = map(int, got.groups())
    assert 1 <= requests <= n and events == n and redeliveries == 0 and bad == 0
    # The SFTP server holds the documents the lifecycle makes of them (none for a draft),
    # each valid against the schema.
    wanted: list[str] = []
    histories: dict[str, History] = {}
    for x in horisen:
        history, docs = decide(histories.get(x["subject"], History()), seq=x["seq"], event_id=x["id"],
                               invoice=msgspec.convert(x["data"], Invoice, strict=False), payments=False)
        histories[x["subject"]] = history
        wanted += [d.document_id for d in docs]
    assert wanted and len(wanted) < len(invoices), "some demo invoices are drafts or cancelled"
    assert summary["sink", "sftp"].endswith(f"; server: {len(wanted)} XML files")
    files = sorted((tmp_path / "sftp" / "root" / "invoices").iterdir())
    assert [f.suffix for f in files] == [".xml"] * len(wanted)
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    docs = [etree.parse(str(f)) for f in files]
    for doc in docs:
        schema.assertValid(doc)
    assert sorted(d.getroot().get("documentId") for d in docs) == sorted(wanted)


def test_the_demo_ends_when_its_reader_goes(tmp_path: Path) -> None:
    """`streamd demo | head`: once standard output's reader is gone the demo stops, cleanly,
    with its summary (not killed by SIGPIPE, which would also hit its sockets)."""
    proc = subprocess.Popen([sys.executable, "-m", "streamd", "demo", "--rate", "40", "--dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        for _ in range(3):
            assert json.loads(proc.stdout.readline())["specversion"] == "1.0"
        proc.stdout.close()
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert b"--- streamd demo summary" in err and b"Traceback" not in err, err.decode()


def test_dlq_on_a_missing_feed_fails_cleanly() -> None:
    r = streamd_cli("dlq", "retry", "--all", "--db", "/nonexistent/feed.db")
    assert r.returncode == 1 and "streamd dlq" in r.stderr


def test_since_takes_a_time_or_a_duration_ago() -> None:
    from streamd.cli.common import parse_since

    assert parse_since("2026-11-21T10:00:00Z") == 1_795_255_200_000
    assert parse_since("2026-11-21T11:00:00+01:00") == 1_795_255_200_000
    assert parse_since("15m", now=1000.0) == 100_000


def test_sink_reset_redelivers_from_the_given_seq(streamd_proc: Callable[..., Streamd]) -> None:
    config = CONFIG + '\n[sinks.copy]\ntype = "file"\npath = "out/copy.jsonl"\n'
    d = streamd_proc(config, env={"CLI_HOOK_TOKEN": TOKEN})
    env = {"CLI_HOOK_TOKEN": TOKEN}
    d.start()
    body = b"[" + b",".join(wire.record(1, i, ["t"], datetime(2026, 1, 1)) for i in range(6)) + b"]"
    r = httpx.post(f"{d.url}/webhooks/hook", content=body, timeout=10, headers={
        "content-type": "application/json", "authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    r = streamd_cli("sink", "reset", "copy", "--to-seq", "2", "-c", str(d.config), env=env)
    assert r.returncode == 1 and "the daemon is running" in r.stderr  # it keeps offsets in memory
    assert d.terminate() == 0
    copy = d.dir / "out" / "copy.jsonl"
    assert len(feed_lines(copy)) == 6
    copy.rename(copy.with_name("copy.old"))  # the file sink resumes after what its file holds

    r = streamd_cli("sink", "reset", "copy", "--to-seq", "2", "-c", str(d.config), env=env)
    assert r.returncode == 0, r.stderr
    assert "offset 6 -> 2" in r.stdout and "seq 3..6 (4 events)" in r.stdout
    for bad, says in ((["nope", "--to-seq", "1"], "no sink 'nope'"), (["copy", "--to-seq", "99"], "past")):
        r = streamd_cli("sink", "reset", *bad, "-c", str(d.config), env=env)
        assert r.returncode == 2 and says in r.stderr
    d.start()
    wait_for(lambda: copy.exists() and len(feed_lines(copy)) == 4, 20, "the redelivery")
    assert [json.loads(x)["seq"] for x in feed_lines(copy)] == [3, 4, 5, 6]
    assert len(feed_lines(d.dir / "out" / "feed.jsonl")) == 6  # the other sink is untouched
    assert d.terminate() == 0
