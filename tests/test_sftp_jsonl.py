"""The sftp sink's `format = "jsonl"`: each batch one file of feed lines, on a real OpenSSH
sftp-server (the transport the invoice XML uses, with another format on top)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streamd.config import Match
from streamd.configfile import parse
from streamd.errors import ConfigError, Permanent
from streamd.model import cloudevent, make_event, render_line
from streamd.sinks.sftp import SftpSink, SftpSinkConfig
from streamd.store import FeedEvent

from .conftest import InProcess, feed_lines, until
from .sftp_server import SSHD, SftpServer, invoice_records, running_sftp_server

pytestmark = pytest.mark.anyio
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SftpServer]:
    """OpenSSH's sshd with its sftp-server."""
    if not os.path.exists(SSHD) and os.environ.get("STREAMD_REQUIRE_TOOLS") != "1":
        pytest.skip(f"{SSHD} is not installed")
    with running_sftp_server(tmp_path / "sftp", use_sshd=True) as s:
        yield s


def events(n: int, start: int = 1, provider: str = "asteria") -> list[FeedEvent]:
    """n feed events of several entities, seqs from `start`."""
    out = []
    for seq in range(start, start + n):
        entity = "party" if seq % 3 == 0 else "invoice"
        ev = make_event(provider=provider, source="src", tenant="acme", entity=entity, op="created",
                        key=f"k{seq}", time=T0, data={"seq": seq, "note": "Söhne <&>\n"},
                        version=str(seq))
        line = render_line(cloudevent(seq=seq, id=ev.id, source=ev.source, provider=ev.provider,
                                      tenant=ev.tenant, entity=ev.entity, op=ev.op, key=ev.key,
                                      time=ev.time, data=ev.data))
        out.append(FeedEvent(seq, ev.id, ev.source, ev.provider, ev.tenant, ev.entity, ev.op, ev.key,
                             ev.time, 0, ev.data, line))
    return out


@asynccontextmanager
async def opened(server: SftpServer, **kw: Any) -> AsyncIterator[SftpSink]:
    s = SftpSink("lake", server.sink_config(format="jsonl", **kw))
    try:
        yield s
    finally:
        await s.aclose()


def mtimes(server: SftpServer) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in server.local_dir.iterdir()}


async def test_each_batch_becomes_one_file_of_its_feed_lines(server: SftpServer) -> None:
    batches = [events(5), events(3, start=6)]
    async with opened(server) as s:
        assert s.stable_batches  # its files are named and made of whole batches
        await s.recover()
        for batch in batches:
            await s.deliver(batch)
    assert server.files() == {
        "streamd-000000000001-000000000005.jsonl": b"".join(e.line for e in batches[0]),
        "streamd-000000000006-000000000008.jsonl": b"".join(e.line for e in batches[1]),
    }, "one file per batch, the feed lines as they are, no .part left"
    assert s.files_written == 2 and s.files_skipped == 0


async def test_a_redelivered_batch_is_found_there_and_not_written_again(server: SftpServer) -> None:
    batch = events(4)
    async with opened(server) as first:
        await first.deliver(batch)
    before = mtimes(server)
    # A crash between the rename and the offset commit: the next run delivers the same
    # batch (stable batches), which makes the same file.
    async with opened(server) as again:
        await again.recover()
        await again.deliver(batch)
    assert again.files_written == 0 and again.files_skipped == 1
    assert mtimes(server) == before


async def test_a_file_of_other_events_at_the_name_is_never_replaced(server: SftpServer) -> None:
    """Another feed's batch 1-4 (a restore from another database): refused, left as it is."""
    server.local_dir.mkdir()
    theirs = b"".join(e.line for e in events(4, provider="connec"))
    for held in (theirs, theirs + b"more\n", theirs[:10]):
        (server.local_dir / "streamd-000000000001-000000000004.jsonl").write_bytes(held)
        async with opened(server) as s:
            with pytest.raises(Permanent, match=r"streamd-000000000001-000000000004\.jsonl already holds "
                               r"a file that does not hold exactly these events; not replaced"):
                await s.deliver(events(4))
        assert server.files() == {"streamd-000000000001-000000000004.jsonl": held}


async def test_a_template_of_its_own(server: SftpServer) -> None:
    async with opened(server, filename="feed_{first}-{last}_{count}.ndjson") as s:
        await s.deliver(events(3, start=41))
    assert list(server.files()) == ["feed_41-43_3.ndjson"]


# ---------------------------------------------------------------- config

def table(server: SftpServer, **extra: Any) -> str:
    return server.sink_toml("lake", format="jsonl", **extra)


def test_its_defaults_are_every_event_under_the_batch_s_seqs(server: SftpServer) -> None:
    cfg = parse(table(server)).sinks["lake"]
    assert isinstance(cfg, SftpSinkConfig)
    assert (cfg.format, cfg.filename, cfg.match) == ("jsonl", "streamd-{first:012d}-{last:012d}.jsonl",
                                                     Match())
    mine = Match(provider=["horisen"], entity=["invoice"])
    kept = parse(table(server, match={"provider": ["horisen"], "entity": ["invoice"]})).sinks["lake"]
    assert kept.match == mine, "a match the table names is kept, even the invoice format's default"
    xml = parse(server.sink_toml("erp")).sinks["erp"]
    assert isinstance(xml, SftpSinkConfig)
    assert (xml.format, xml.filename, xml.match) == ("invoice-xml", "{tenant}-{number}_r{revision}_{op}.xml",
                                                     mine)


@pytest.mark.parametrize(("extra", "problem"), [
    ({"filename": "{tenant}.jsonl"}, "sinks.lake.filename: unknown field {tenant} (known: {first}, {last}, "
                                     "{count})"),
    ({"filename": "batch_{count}.jsonl"}, "sinks.lake.filename: needs one of {first}, {last}, or two files "
                                          "could get one name"),
    ({"filename": "{first:q}.jsonl"}, "sinks.lake.filename: cannot be rendered ("),
    ({"payments": True}, "sinks.lake.payments: payment documents are invoice-xml's; format 'jsonl' "
                         "writes every event as it is"),
    ({"format": "csv"}, "sinks.lake.format: invalid enum value 'csv'"),
])
def test_its_mistakes_are_named(server: SftpServer, extra: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse(table(server, **extra) if "format" not in extra else server.sink_toml("lake", **extra))
    assert any(p.startswith(problem) for p in exc.value.problems), exc.value.problems


# ---------------------------------------------------------------- through the daemon

async def test_through_the_daemon_every_event_once_across_a_crash(tmp_path: Path) -> None:
    """Every event of every entity, in feed order, across files; after a crash before the
    offset commit, the batches go again, the same, and are found there: nothing twice."""
    with running_sftp_server(tmp_path / "sftp") as server:  # sshd where it is installed
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
{table(server, batch_max=4, backoff={"min": "10ms", "max": "100ms"})}
[sinks.copy]
type = "file"
path = "{tmp_path / 'feed.jsonl'}"
"""
        (tmp_path / "hook.token").write_text("sftp-test-hook-token")
        cfg = parse(text, base_dir=tmp_path)
        records = invoice_records(6)
        records.append({"tenant": "acme", "entity": "party", "op": "created", "key": "p1",
                        "data": {"name": "in the lake too"}})
        async with InProcess(cfg) as d:
            r = await d.http.post("/webhooks/hz", json=records,
                                  headers={"authorization": "Bearer sftp-test-hook-token"})
            assert r.status_code == 200 and r.json()["appended"] == 7
            await until(lambda: d.rows("SELECT sink, seq FROM sink_offsets ORDER BY sink")
                        == [("copy", 7), ("lake", 7)], 15, "both sinks past all seven")
        files = server.files()
        assert sorted(files) == ["streamd-000000000001-000000000004.jsonl",
                                 "streamd-000000000005-000000000007.jsonl"]
        before = mtimes(server)
        db = sqlite3.connect(cfg.store.path)
        db.execute("UPDATE sink_offsets SET seq = 0 WHERE sink = 'lake'")
        db.commit()
        db.close()
        async with InProcess(cfg) as d:
            s = d.daemon.dispatchers["lake"].sink
            assert isinstance(s, SftpSink)
            await until(lambda: s.files_skipped == 2, 15, "both batches found there")
            await until(lambda: d.rows("SELECT seq FROM sink_offsets WHERE sink = 'lake'") == [(7,)], 15)
            assert s.files_written == 0
        assert mtimes(server) == before
        # The feed lines as the file sink writes them, each once, in feed order.
        lines = feed_lines(tmp_path / "feed.jsonl")
        assert len(lines) == 7 and b"in the lake too" in lines[-1]
        assert b"".join(files[n] for n in sorted(files)) == b"".join(lines)
