"""The nats sink against real NATS servers on loopback (tests/nats_cluster.py): what each
message holds, exactly once after a lost ack past the stream's duplicate window, the
failure cases (stream missing, wrong credentials, an untrusted certificate, an outage
longer than the dedupe window: each a reason in /readyz and the log, retried, nothing
lost), a stream whose config contradicts the sink's, a tenant moving between shards,
and `streamd tail --nats`. The subject template and the config's checks first.
The two-shard SIGKILL drill: test_nats_drill.py."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from streamd import certs
from streamd.config import Config, Match
from streamd.configfile import parse
from streamd.errors import EX_CONFIG, ConfigError
from streamd.sinks.subjects import Template, covers, escape
from streamd.store import FeedEvent, FeedReader

from .conftest import InProcess, streamd_cli, until
from .nats_cluster import NatsCluster, Proxy, StreamMessage, make_stream, read_stream_async

HOOK_TOKEN = "hook-token-for-the-synthetic-webhook"
FAST = '{ min = "20ms", max = "200ms" }'


# ---------------------------------------------------------------- the subject template

@given(st.text(max_size=12), st.text(max_size=12))
@example("0\n", "")  # a regex's "$" matches before a final line break: not safe
def test_escaped_values_are_one_safe_token_and_never_collide(a: str, b: str) -> None:
    ea, eb = escape(a), escape(b)
    assert ea and all(c.isascii() and (c.isalnum() or c in "_-~") for c in ea)
    assert (ea == eb) == (a == b)


def test_template_rules() -> None:
    t = Template.parse("fin.{tenant}.{entity}")
    assert t.problem is None
    # The shard is appended when the template has none; one shard is one filter.
    assert t.render({"tenant": "acme.eu", "entity": "invoice", "shard": "host-1"}) == \
        "fin.acme~2Eeu.invoice.host-1"
    assert t.filter("host-1") == "fin.*.*.host-1"
    assert Template.parse("fin.{shard}.{type}").filter("a.b") == "fin.a~2Eb.*"
    assert covers("fin.>", t.filter("x")) and not covers("fin.*", t.filter("x"))
    assert not covers("fin.*.*.y", t.filter("x")) and covers("fin.*.*.*", t.filter("x"))
    for bad, why in (("{tenant}.x", "literal token"), ("fin.x{tenant}", "whole token"),
                     ("fin..{tenant}", "empty token"), ("fin.{who}", "unknown field"),
                     ("fin.{op}.{op}", "twice"), ("fin.a*", "literal text")):
        problem = Template.parse(bad).problem
        assert problem is not None and why in problem, (bad, problem)


# ---------------------------------------------------------------- config

def sink_keys(**keys: Any) -> str:
    return "".join(f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}\n"
                   for k, v in keys.items())


def problems(text: str, base: Path | None = None) -> list[str]:
    try:
        parse(text, base_dir=base)
    except ConfigError as exc:
        return exc.problems
    return []


def test_config_refused_with_the_key_and_the_reason(tmp_path: Path) -> None:
    def sink(**keys: Any) -> str:
        keys = {"servers": ["nats://127.0.0.1:4222"], "stream": "FIN", **keys}
        return "[sinks.fin]\ntype = \"nats\"\n" + sink_keys(**keys)

    assert problems(sink()) == []
    cases = [
        (sink(servers=["nats://alice:pw@10.1.2.3:4222"]), "sinks.fin.servers[0]: must not hold credentials"),
        (sink(servers=["nats://10.1.2.3:4222"]), "sinks.fin.servers[0]: plain nats:// to 10.1.2.3"),
        (sink(servers=["http://127.0.0.1:4222"]), "sinks.fin.servers[0]: expected"),
        (sink(stream="FIN.X"), "sinks.fin.stream: 'FIN.X' is not a stream name"),
        (sink(subject="{tenant}.fin"), "sinks.fin.subject: must begin with a literal token"),
        (sink(subjects=["fin.>"]), "sinks.fin.subjects: only used with create = true"),
        (sink(create=True, subject="fin.{tenant}", subjects=["other.>"]), "sinks.fin.subjects: none of"),
        (sink(batch_max=5000), "sinks.fin.batch_max: at most 1000"),
        (sink(token="env:NATS_T", user="alice", password="env:NATS_T"), "sinks.fin.token, user: set one way"),
        (sink(user="alice"), "sinks.fin.password: required with user"),
        (sink(ca="missing-ca.pem"), "sinks.fin.ca:"),
        (sink(cert="c.pem"), "sinks.fin.cert, key: a client certificate needs both"),
        (sink(token="s3cret-inline"), "sinks.fin.token: secrets cannot be written inline"),
        (sink(create=True, max_age="1s", duplicate_window="2m"), "sinks.fin.duplicate_window"),
    ]
    os.environ["NATS_T"] = "t"
    try:
        for text, want in cases:
            got = problems(text, tmp_path)
            assert any(p.startswith(want) for p in got), (want, got)
    finally:
        del os.environ["NATS_T"]
    # Plain nats:// to another host is allowed when asked for, and warned about.
    assert problems(sink(servers=["nats://10.1.2.3:4222"], allow_plain=True)) == []


def test_shard_defaults_to_the_host_name_and_is_checked() -> None:
    assert parse("").daemon.shard == socket.gethostname()
    assert parse('[daemon]\nshard = "eu-1.dc2"').daemon.shard == "eu-1.dc2"
    assert any(p.startswith("daemon.shard: 'a b' is not a shard name")
               for p in problems('[daemon]\nshard = "a b"'))


def test_check_refuses_a_bad_nats_sink_with_exit_78_and_prints_no_secret(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[sinks.fin]\ntype = "nats"\nservers = ["nats://127.0.0.1:4222"]\nstream = "FIN"\n'
        'user = "alice"\npassword = "env:NATS_PW"\nbatch_max = 2000\n')
    proc = streamd_cli("check", "-c", str(tmp_path / "config.toml"),
                       env={"NATS_PW": "hunter2-secret"})
    assert proc.returncode == EX_CONFIG, proc.stderr
    assert "sinks.fin.batch_max: at most 1000" in proc.stderr
    assert "hunter2-secret" not in proc.stderr + proc.stdout


# ---------------------------------------------------------------- against real servers

@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path_factory.mktemp("nats"), nodes=3) as c:
        yield c


def config(tmp: Path, servers: list[str], *, stream: str, shard: str = "alpha", count: int = 0,
           rate: float = 0, seed: int = 1, tenants: tuple[str, ...] = ("acme", "globex"),
           webhook: bool = False, **keys: Any) -> Config:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "hook.token").write_text(HOOK_TOKEN)
    keys.setdefault("create", True)
    keys.setdefault("replicas", 3 if len(servers) > 1 else 1)
    keys.setdefault("timeout", "2s")
    # Streams of one cluster cannot share subjects: each test's stream has its own prefix.
    keys.setdefault("subject", stream.lower() + ".{tenant}.{entity}")
    source = ('generate = false\nwebhook = true\ntoken = "file:hook.token"\n' if webhook else
              f"rate = {rate}\ncount = {count}\nbatch = 50\n")
    return parse(f"""
[store]
path = "feed.db"
commit_linger = "1ms"
[http]
listen = "127.0.0.1:0"
[daemon]
shard = "{shard}"
[sources.gen]
provider = "synthetic"
tenants = {json.dumps(list(tenants))}
seed = {seed}
{source}
[sinks.fin]
type = "nats"
servers = {json.dumps(servers)}
stream = "{stream}"
backoff = {FAST}
{sink_keys(**keys)}
""", base_dir=tmp)


async def feed(cfg: Config) -> list[FeedEvent]:
    reader = await FeedReader.open(cfg.store)
    try:
        return await reader.read(0, await reader.head(), 1_000_000, Match())
    finally:
        await reader.close()


def assert_exactly_once(messages: list[StreamMessage], events: list[FeedEvent], shard: str) -> None:
    """Every event once, as its feed line, with its id, type, source, seq and shard; nothing
    else; each subject in feed order."""
    ids = [m.headers["Nats-Msg-Id"] for m in messages]
    assert len(ids) == len(set(ids)), "an event is in the stream twice"
    by_id = {m.headers["Nats-Msg-Id"]: m for m in messages}
    assert set(by_id) == {e.id for e in events}
    last: dict[str, int] = {}
    for e in events:
        m = by_id[e.id]
        assert m.body + b"\n" == e.line
        assert json.loads(m.body)["id"] == e.id
        assert (m.headers["ce-type"], m.headers["ce-source"], m.headers["streamd-seq"],
                m.headers["streamd-shard"]) == (e.type, f"/{e.provider}/{e.source}", str(e.seq), shard)
        assert m.subject.partition(".")[2] == f"{escape(e.tenant)}.{e.entity}.{shard}"
    for m in messages:
        seq = int(m.headers["streamd-seq"])
        assert seq > last.get(m.subject, 0), f"{m.subject} out of feed order"
        last[m.subject] = seq


async def metric(d: InProcess, series: str, **labels: str) -> float:
    text = (await d.http.get("/metrics")).text
    want = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    for line in text.splitlines():
        if line.startswith(series + want + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def drained(d: InProcess, count: int) -> bool:
    assert d.daemon.writer is not None
    return d.daemon.writer.head >= count and d.daemon.dispatchers["fin"].offset >= d.daemon.writer.head


async def readyz(d: InProcess) -> str:
    return (await d.http.get("/readyz")).text


async def said(d: InProcess, *texts: str) -> bool:
    """Whether /readyz names any of these reasons."""
    text = await readyz(d)
    return any(t in text for t in texts)


pytestmark = pytest.mark.anyio


async def test_every_event_once_as_its_feed_line_with_its_headers(cluster: NatsCluster,
                                                                  tmp_path: Path) -> None:
    cfg = config(tmp_path, cluster.urls, stream="HEADERS", count=1200, tenants=("acme", "a.b/ü"))
    async with InProcess(cfg) as d:
        await until(lambda: drained(d, 1200), 30, "the sink to pass every event")
        assert await metric(d, "streamd_shard_info", shard="alpha") == 1.0
        assert await metric(d, "streamd_sink_nats_batches_total", sink="fin", outcome="stored") >= 2
    assert_exactly_once(await read_stream_async(cluster.urls, "HEADERS"), await feed(cfg), "alpha")


async def test_an_ack_lost_past_the_duplicate_window_is_not_published_again(
        cluster: NatsCluster, tmp_path: Path) -> None:
    """The stream stores a batch, its ack is lost, and the sink retries only after the
    stream's 1 s dedupe window: it finds the batch in the stream and does not send it again."""
    await make_stream(cluster.urls, "LOSTACK", ["lostack.>"], duplicate_window=1.0)
    proxy = Proxy(cluster.nodes[0].port)
    try:
        cfg = config(tmp_path, [proxy.url], stream="LOSTACK", rate=400, count=2000, create=False,
                     timeout="1s")
        async with InProcess(cfg) as d:
            dispatcher = d.daemon.dispatchers["fin"]
            await until(lambda: dispatcher.offset >= 200, 20, "first deliveries")
            proxy.hold()  # what the sink sends still lands; the acks never come back
            await until(lambda: metric(d, "streamd_sink_nats_batches_total", sink="fin",
                                       outcome="unanswered"), 10, "a batch without its ack")
            assert "no ack for a batch" in await readyz(d)
            await anyio_sleep_past(1.5)  # past the dedupe window, the sink retrying all along
            proxy.release()
            await until(lambda: drained(d, 2000), 30, "delivery after the outage")
            found = await metric(d, "streamd_sink_nats_batches_total", sink="fin", outcome="found")
            held = await metric(d, "streamd_sink_nats_skipped_events_total", sink="fin", reason="held")
    finally:
        proxy.close()
    assert_exactly_once(await read_stream_async(cluster.urls, "LOSTACK"), await feed(cfg), "alpha")
    assert found >= 1 and held >= 1  # the scenario happened: a stored batch's ack was lost


async def anyio_sleep_past(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)  # an outage has to last: the time is the point, not a settle


async def test_stream_missing_without_create_is_retried_until_it_exists(
        cluster: NatsCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(tmp_path, cluster.urls, stream="MISSING", count=300, create=False)
    with caplog.at_level(logging.WARNING, "streamd.sink"):
        async with InProcess(cfg) as d:
            want = "stream MISSING does not exist (create = false): create it, or set create = true"
            await until(lambda: said(d, want), 10, "the reason in /readyz")
            await until(lambda: metric(d, "streamd_retries_total", component="sink", name="fin"), 5)
            assert d.daemon.dispatchers["fin"].offset == 0
            await make_stream(cluster.urls, "MISSING", ["missing.>"])
            await until(lambda: drained(d, 300), 30, "delivery once the stream exists")
    # Once, not per retry (the dispatcher logs each retry at info).
    assert sum(r.getMessage() == f"sink fin: {want}" for r in caplog.records) == 1
    assert_exactly_once(await read_stream_async(cluster.urls, "MISSING"), await feed(cfg), "alpha")


async def test_a_stream_deleted_while_publishing_is_waited_for_and_nothing_is_taken_as_stored(
        cluster: NatsCluster, tmp_path: Path) -> None:
    """The stream goes away under a running sink: no publish counts as stored (the server
    answers "no responders"), the sink says why and waits; once the stream is made again it
    holds every event from where the sink was, once."""
    import nats

    await make_stream(cluster.urls, "GONE", ["gone.>"])
    cfg = config(tmp_path, cluster.urls, stream="GONE", rate=300, count=900, create=False)
    async with InProcess(cfg) as d:
        dispatcher = d.daemon.dispatchers["fin"]
        await until(lambda: dispatcher.offset >= 100, 20, "first deliveries")
        nc = await nats.connect(cluster.urls)
        try:
            await nc.jetstream().delete_stream("GONE")
            await until(lambda: said(d, "no stream took the batch", "stream GONE does not exist"), 10)
            gone_at = dispatcher.offset
            await make_stream(cluster.urls, "GONE", ["gone.>"])
            await until(lambda: drained(d, 900), 30, "delivery into the new stream")
        finally:
            await nc.close()
    events = [e for e in await feed(cfg) if e.seq > gone_at]
    assert_exactly_once(await read_stream_async(cluster.urls, "GONE"), events, "alpha")


async def test_a_stream_that_contradicts_the_sink_or_refuses_atomic_batches_is_refused(
        cluster: NatsCluster, tmp_path: Path) -> None:
    await make_stream(cluster.urls, "CONTRA", ["contra.>"], replicas=1)
    await make_stream(cluster.urls, "NOATOMIC", ["noatomic.>"], allow_atomic=False)
    cfg = config(tmp_path / "a", cluster.urls, stream="CONTRA", count=10, replicas=3)
    async with InProcess(cfg) as d:
        await until(lambda: said(d, "stream CONTRA: replicas is 1, the sink's config says 3"), 10)
        assert d.daemon.dispatchers["fin"].offset == 0
    cfg = config(tmp_path / "b", cluster.urls, stream="NOATOMIC", count=10, create=False)
    async with InProcess(cfg) as d:
        await until(lambda: said(d, "stream NOATOMIC: allow_atomic is off"), 10)


async def test_wrong_credentials_are_retried_until_the_server_takes_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    auth = 'authorization { users: [ { user: streamd, password: "right-password" } ] }'
    caplog.set_level(logging.INFO, "streamd")
    with NatsCluster(tmp_path / "nats", nodes=1, extra=auth) as server:
        (tmp_path / "pw").write_text("wrong-password")
        cfg = config(tmp_path / "d", server.urls, stream="AUTH", count=200, user="streamd",
                     password=f"file:{tmp_path / 'pw'}")
        async with InProcess(cfg) as d:
            want = "authorization violation: the server refused the credentials"
            await until(lambda: said(d, want), 10, "the reason in /readyz")
            assert "wrong-password" not in await readyz(d)
            # The operator fixes the server's side; the sink, retrying, gets through.
            node = server.nodes[0]
            (node.dir / "nats.conf").write_text((node.dir / "nats.conf").read_text()
                                                .replace("right-password", "wrong-password"))
            assert node.proc is not None
            node.proc.send_signal(signal.SIGHUP)  # nats-server reloads its config
            await until(lambda: drained(d, 200), 30, "delivery with the credentials taken")
        logged = caplog.text
        assert "WARNING  streamd.sink" in logged and want in logged and "wrong-password" not in logged
        assert "publishing into stream AUTH again" in logged
        assert_exactly_once(await read_stream_async(server.urls, "AUTH", user="streamd",
                                                    password="wrong-password"),
                            await feed(cfg), "alpha")


async def test_an_nkey_seed_authenticates(tmp_path: Path) -> None:
    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    (tmp_path / "seed").write_bytes(seed)
    with NatsCluster(tmp_path / "nats", nodes=1,
                     extra=f"authorization {{ users: [ {{ nkey: {public} }} ] }}") as server:
        cfg = config(tmp_path / "d", server.urls, stream="NKEY", count=100,
                     nkey_seed=f"file:{tmp_path / 'seed'}")
        async with InProcess(cfg) as d:
            await until(lambda: drained(d, 100), 20, "delivery with the nkey")
        assert_exactly_once(await read_stream_async(server.urls, "NKEY", nkeys_seed_str=seed.decode()),
                            await feed(cfg), "alpha")


async def test_an_untrusted_server_certificate_is_refused_and_retried(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "streamd.sink")
    good = certs.make(tmp_path / "good")
    other = certs.make(tmp_path / "other")
    tls = f'tls {{ cert_file: "{other.server_chain}", key_file: "{other.server_key}" }}'
    cluster = NatsCluster(tmp_path / "nats", nodes=1, extra=tls, scheme="tls")
    with cluster:
        cfg = config(tmp_path / "d", cluster.urls, stream="TLS", count=200, ca=str(good.ca))
        async with InProcess(cfg) as d:
            want = "TLS: the server's certificate is not trusted (unable to get local issuer certificate)"
            await until(lambda: said(d, want), 10, "the reason in /readyz")
            assert d.daemon.dispatchers["fin"].offset == 0
            # The server gets a certificate from the CA the sink trusts; the retry connects.
            node = cluster.nodes[0]
            (node.dir / "nats.conf").write_text((node.dir / "nats.conf").read_text()
                                                .replace(str(other.server_chain), str(good.server_chain))
                                                .replace(str(other.server_key), str(good.server_key)))
            assert node.proc is not None
            node.proc.send_signal(signal.SIGHUP)
            await until(lambda: drained(d, 200), 30, "delivery over verified TLS")
        assert want in caplog.text
        import ssl

        ctx = ssl.create_default_context(cafile=str(good.ca))
        assert_exactly_once(await read_stream_async(cluster.urls, "TLS", tls=ctx), await feed(cfg),
                            "alpha")


async def test_tls_configured_refuses_a_server_without_tls(tmp_path: Path) -> None:
    """A server that does not ask for TLS (or someone pretending to be it) must not get
    the password in clear text."""
    good = certs.make(tmp_path / "good")
    auth = 'authorization { users: [ { user: streamd, password: "pw-never-in-clear" } ] }'
    with NatsCluster(tmp_path / "nats", nodes=1, extra=auth) as plain:
        (tmp_path / "pw").write_text("pw-never-in-clear")
        cfg = config(tmp_path / "d", plain.urls, stream="PLAIN", count=10, ca=str(good.ca),
                     user="streamd", password=f"file:{tmp_path / 'pw'}")
        async with InProcess(cfg) as d:
            await until(lambda: said(d, "the server does not require TLS, and TLS is configured"), 10)
            assert d.daemon.dispatchers["fin"].offset == 0


async def test_an_outage_longer_than_the_dedupe_window_loses_and_repeats_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A batch is stored but its ack never comes back, then every NATS node is killed,
    while events keep coming, for longer than the stream's 1 s dedupe window; then the
    cluster comes back."""
    caplog.set_level(logging.WARNING, "streamd.sink")
    with NatsCluster(tmp_path / "nats", nodes=3) as nc:
        await make_stream(nc.urls, "OUTAGE", ["outage.>"], duplicate_window=1.0)
        proxy = Proxy(nc.nodes[0].port)
        try:
            cfg = config(tmp_path / "d", [proxy.url], stream="OUTAGE", rate=500, count=2500,
                         create=False, timeout="1s")
            async with InProcess(cfg) as d:
                dispatcher = d.daemon.dispatchers["fin"]
                await until(lambda: dispatcher.offset >= 300, 20, "first deliveries")
                proxy.hold()
                await until(lambda: metric(d, "streamd_sink_nats_batches_total", sink="fin",
                                           outcome="unanswered"), 10, "a batch without its ack")
                for i in range(3):
                    nc.kill(i)
                proxy.release()
                await until(lambda: said(d, "cannot connect to"), 10, "the outage in /readyz")
                held = dispatcher.offset
                await anyio_sleep_past(2.0)
                assert dispatcher.offset == held
                nc.start()
                await until(lambda: drained(d, 2500), 45, "delivery after the outage")
                found = await metric(d, "streamd_sink_nats_batches_total", sink="fin", outcome="found")
        finally:
            proxy.close()
        assert_exactly_once(await read_stream_async(nc.urls, "OUTAGE"), await feed(cfg), "alpha")
        assert found >= 1  # the scenario happened: the batch whose ack was lost was stored
        assert "no ack for a batch" in caplog.text and "cannot connect to" in caplog.text


async def test_an_event_too_large_for_the_server_goes_to_dead_letters_and_the_rest_is_published(
        tmp_path: Path) -> None:
    """With the server's max_payload at 1,300 bytes the synthetic invoices (about 1,500 with
    their headers) can never be published; parties and payments can."""
    with NatsCluster(tmp_path / "nats", nodes=1, extra="max_payload: 1300") as server:
        cfg = config(tmp_path / "d", server.urls, stream="BIG", count=100, max_tries=1)
        async with InProcess(cfg) as d:
            await until(lambda: drained(d, 100), 30, "the sink to pass every event")
            letters = d.rows("SELECT reason, event_seq FROM dead_letters WHERE origin = 'sink'")
        events = await feed(cfg)
        invoices = {e.seq for e in events if e.entity == "invoice"}
        assert invoices and {seq for _, seq in letters} == invoices
        assert all("the server takes at most 1300 (max_payload)" in reason for reason, _ in letters)
        assert_exactly_once(await read_stream_async(server.urls, "BIG"),
                            [e for e in events if e.entity != "invoice"], "alpha")
        # The server takes larger messages now; `streamd dlq retry` sends the invoices, late
        # and out of feed order, and a restart must not take one for the shard's last word.
        server.extra = ""
        server.kill(0)
        server.start(0)
        retry = streamd_cli("dlq", "retry", "--all", "--db", str(tmp_path / "d" / "feed.db"))
        assert retry.returncode == 0, retry.stderr
        async with InProcess(cfg) as d:
            await until(lambda: not d.rows("SELECT id FROM dead_letters"), 30, "the dead letters sent")
        async with InProcess(cfg) as d:
            await until(lambda: drained(d, 100), 10)
        messages = await read_stream_async(server.urls, "BIG")
        assert_exactly_once(sorted(messages, key=lambda m: int(m.headers["streamd-seq"])), events,
                            "alpha")
        assert max(int(m.headers.get("streamd-high", 0)) for m in messages) == max(
            e.seq for e in events if e.entity != "invoice")


async def test_a_server_with_a_lower_batch_limit_gets_smaller_batches(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "streamd.sink")
    with NatsCluster(tmp_path / "nats", nodes=1,
                     jetstream="limits { batch { max_msgs: 40 } }") as server:
        cfg = config(tmp_path / "d", server.urls, stream="SMALL", count=300, batch_max=200)
        async with InProcess(cfg) as d:
            await until(lambda: drained(d, 300), 30, "the sink to pass every event")
        assert_exactly_once(await read_stream_async(server.urls, "SMALL"), await feed(cfg), "alpha")
    assert "the server takes fewer messages per batch (atomic publish batch is too large: 40)" \
        in caplog.text


async def test_a_tenant_moved_between_shards_is_in_the_stream_once(cluster: NatsCluster,
                                                                   tmp_path: Path) -> None:
    """While a tenant moves from shard alpha to shard beta, both take its webhooks (a
    sender retrying to the new host, an overlap on purpose): the same change has the same
    id on both, and the stream's dedupe keeps one. Then only beta takes it."""
    from streamd.providers.synthetic import wire

    await make_stream(cluster.urls, "MOVE", ["move.>"], duplicate_window=120.0)
    a_cfg = config(tmp_path / "a", cluster.urls, stream="MOVE", shard="alpha", webhook=True,
                   create=False)
    b_cfg = config(tmp_path / "b", cluster.urls, stream="MOVE", shard="beta", webhook=True,
                   create=False)
    epoch = datetime(2026, 1, 1, tzinfo=UTC)
    records = [json.loads(wire.record(7, i, ["moving"], epoch)) for i in range(60)]
    headers = {"authorization": f"Bearer {HOOK_TOKEN}"}
    async with InProcess(a_cfg) as a, InProcess(b_cfg) as b:
        assert (await a.http.post("/webhooks/gen", json=records[:40], headers=headers)).status_code == 200
        await until(lambda: drained(a, 40), 20)
        # The overlap: beta takes the last 20 alpha took, and 20 new ones.
        assert (await b.http.post("/webhooks/gen", json=records[20:], headers=headers)).status_code == 200
        await until(lambda: drained(b, 40), 30)
        assert await metric(b, "streamd_sink_nats_skipped_events_total", sink="fin",
                            reason="duplicate") == 20
    messages = await read_stream_async(cluster.urls, "MOVE")
    ids = [m.headers["Nats-Msg-Id"] for m in messages]
    assert len(ids) == len(set(ids)) == 60
    shards = [m.headers["streamd-shard"] for m in messages]
    assert shards.count("alpha") == 40 and shards.count("beta") == 20


async def test_tail_nats_prints_the_stream_as_feed_lines(cluster: NatsCluster, tmp_path: Path) -> None:
    cfg = config(tmp_path, cluster.urls, stream="TAIL", count=150)
    async with InProcess(cfg) as d:
        await until(lambda: drained(d, 150), 20)
    events = await feed(cfg)
    # Someone else publishes into the stream: a body with a line break could forge lines.
    import nats

    nc = await nats.connect(cluster.urls)
    try:
        await nc.jetstream().publish("tail.x.y.z", b'{"id": "forged"}\n{"id": "forged-too"}')
    finally:
        await nc.close()
    (tmp_path / "config.toml").write_text(cfg_text(tmp_path, cluster.urls, "TAIL"))
    out = streamd_cli("tail", "-c", str(tmp_path / "config.toml"), "--nats", "fin",
                      "--from-seq", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.encode() == b"".join(e.line for e in events)
    assert "holds a line break; not a streamd event, skipped" in out.stderr
    last = streamd_cli("tail", "-c", str(tmp_path / "config.toml"), "--nats", "fin", "-n", "3",
                       "--tenant", "acme", cwd=tmp_path)
    assert last.returncode == 0, last.stderr
    lines = last.stdout.encode().splitlines(keepends=True)
    assert lines and all(json.loads(x)["tenant"] == "acme" for x in lines)
    assert set(lines) <= {e.line for e in events[-2:]}  # the last 3 messages: 2 events, the forgery


def cfg_text(tmp: Path, servers: list[str], stream: str) -> str:
    return (f'[store]\npath = "feed.db"\n[sinks.fin]\ntype = "nats"\nservers = {json.dumps(servers)}\n'
            f'stream = "{stream}"\nsubject = "{stream.lower()}.{{tenant}}.{{entity}}"\n')

