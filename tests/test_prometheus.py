"""A real Prometheus server (Debian's `prometheus` package) scraping a real `streamd run`
process that has a synthetic source, a HORISEN source polling its simulator and two file
sinks: the target is up, the `streamd_` series arrive with their source, sink and
component labels and sensible values, and contrib's alert rules load and evaluate.

Everything is asserted through Prometheus' own HTTP API, so it checks what an operator's
Prometheus actually stores, not what /metrics happens to print."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from anyio.from_thread import start_blocking_portal

from streamd import __version__
from streamd.providers.horisen import simulator as sim_mod

from .conftest import Background, Streamd, feed_lines, wait_for
from .ports import free_port
from .test_contrib import RULES, exported_names
from .test_process import require

T = TypeVar("T")

SOURCES = {"gen", "hz"}
SINKS = {"all", "invoices"}
COMPONENTS = {("store", "writer")} | {("source", s) for s in SOURCES} | {("sink", s) for s in SINKS}

# Every family that exists for this config once a poll has completed and a commit was made.
# Those only an http sink or a webhook has are not expected (test_contrib scrapes them).
EXPECTED = {
    "streamd_store_errors_total",
    "streamd_build_info",
    "streamd_source_events_received_total", "streamd_source_events_appended_total",
    "streamd_source_events_duplicate_total", "streamd_source_events_rejected_total",
    "streamd_source_connected", "streamd_source_reconnects_total",
    "streamd_source_last_event_timestamp_seconds",
    "streamd_source_poll_duration_seconds_bucket", "streamd_source_poll_duration_seconds_count",
    "streamd_source_poll_duration_seconds_sum", "streamd_source_polls_total",
    "streamd_source_last_poll_timestamp_seconds", "streamd_source_requests_total",
    "streamd_source_token_grants_total", "streamd_source_held_records",
    "streamd_feed_head_seq",
    "streamd_store_commit_duration_seconds_bucket", "streamd_store_commit_duration_seconds_count",
    "streamd_store_commit_events_bucket", "streamd_store_queue_batches",
    "streamd_store_pruned_events_total",
    "streamd_sink_events_delivered_total", "streamd_sink_failures_total", "streamd_sink_offset_seq",
    "streamd_sink_lag_events", "streamd_sink_lag_seconds",
    "streamd_dead_letters_total", "streamd_retries_total", "streamd_retry_wait_seconds_total",
    "streamd_component_healthy",
}


class Prometheus:
    """`prometheus` as a subprocess on a loopback port, with its TSDB and log in `workdir`."""

    def __init__(self, workdir: Path, config: str) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(config)
        self.logfile = self.dir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, binary: str) -> None:
        # The port is picked free and then bound by prometheus: another process can win the
        # race in between, so a start that dies on "address already in use" is tried again.
        for _attempt in range(3):
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            with open(self.logfile, "wb") as log:
                self.proc = subprocess.Popen(
                    [binary, f"--config.file={self.config}", f"--storage.tsdb.path={self.dir / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{port}", "--log.level=info"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
            try:
                wait_for(self._ready, 30, "prometheus /-/ready")
                return
            except _Exited:
                if "address already in use" not in self.log():
                    raise
        raise AssertionError(f"prometheus could not bind a port:\n{self.log()}")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise _Exited(f"prometheus exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def api(self, path: str, **params: str) -> Any:
        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class _Exited(AssertionError):
    pass


@dataclass
class Setup:
    prom: Prometheus
    streamd: Streamd

    def wait(self, cond: Callable[[], T], what: str, timeout: float = 20.0) -> T:
        """`wait_for`, with both processes' logs in the failure."""
        try:
            return wait_for(cond, timeout, what)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- streamd log\n{self.streamd.log()[-4000:]}"
                                 f"\n--- prometheus log\n{self.prom.log()[-4000:]}") from None


def scrape_config(target: str, rules: Path) -> str:
    return f"""\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: streamd
    metrics_path: /metrics
    static_configs:
      - targets: ["{target}"]
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """One streamd and one Prometheus scraping it, shared by this module's tests (each only
    reads and waits for what it needs)."""
    binary = require("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    with start_blocking_portal() as portal:
        bg = Background(portal)
        sim = sim_mod.simulator(tmp / "sim", sim_mod.Knobs(days=5, documents_per_day=3))
        bg.start(sim.serve)
        d = Streamd(tmp / "streamd", "")
        prom: Prometheus | None = None
        try:
            wait_for(lambda: getattr(sim, "url", ""), 10, "the HORISEN simulator to listen")
            hz = sim.source_toml("hz", interval='"500ms"', backoff='{ min = "50ms", max = "1s" }')
            d.config.write_text(f"""\
[store]
path = "feed.db"
[http]
listen = "127.0.0.1:0"
[sources.gen]
provider = "synthetic"
tenants = ["a", "b"]
rate = 40
batch = 4
seed = 3
{hz}
[sinks.all]
type = "file"
path = "out/all.jsonl"
[sinks.invoices]
type = "file"
path = "out/invoices.jsonl"
match = {{ provider = ["horisen"] }}
""")
            d.start()
            prom = Prometheus(tmp / "prom", scrape_config(f"127.0.0.1:{d.port}", RULES))
            prom.start(binary)
            yield Setup(prom, d)
        finally:
            if prom is not None:
                prom.stop()
            d.stop()
            bg.stop()


def values(results: list[dict[str, Any]], *labels: str) -> dict[tuple[str, ...], float]:
    """An instant vector as {label values: sample value}."""
    return {tuple(r["metric"].get(k, "") for k in labels): float(r["value"][1]) for r in results}


def test_target_is_scraped_and_up(setup: Setup) -> None:
    target = f"127.0.0.1:{setup.streamd.port}"

    def up() -> list[dict[str, Any]]:
        active = setup.prom.api("targets", state="active")["activeTargets"]
        return active if any(t["health"] == "up" for t in active) else []

    active = setup.wait(up, "the streamd target to be up")
    assert len(active) == 1, active
    t = active[0]
    assert t["labels"]["job"] == "streamd"
    assert t["lastError"] == ""
    assert t["scrapeUrl"] == f"http://{target}/metrics"
    assert t["labels"]["instance"] == target
    setup.wait(lambda: setup.prom.query('up{job="streamd"}'), "an up sample")
    assert values(setup.prom.query('up{job="streamd"}'), "instance") == {(target,): 1.0}


def test_streamd_series_arrive_with_job_and_instance(setup: Setup) -> None:
    def names() -> set[str]:
        found = {n for n in setup.prom.api("label/__name__/values") if n.startswith("streamd_")}
        return found if EXPECTED <= found else set()

    found = setup.wait(names, f"all of {sorted(EXPECTED)} in prometheus")
    # Nothing Prometheus stored is a name the registry does not define.
    assert found <= exported_names(), found - exported_names()
    instance = f"127.0.0.1:{setup.streamd.port}"
    series = setup.prom.api("series", **{"match[]": '{__name__=~"streamd_.+"}'})
    assert len(series) > 50
    assert {(s["job"], s["instance"]) for s in series} == {("streamd", instance)}
    info = setup.prom.query("streamd_build_info")
    assert values(info, "version") == {(__version__,): 1.0}


def test_per_source_series_count_what_the_sources_did(setup: Setup) -> None:
    q = setup.prom.query

    def appended() -> dict[tuple[str, ...], float] | None:
        v = values(q("streamd_source_events_appended_total"), "source")
        return v if set(v) == {(s,) for s in SOURCES} and all(x > 0 for x in v.values()) else None

    setup.wait(appended, "both sources to have appended events, as scraped")
    received = values(q("streamd_source_events_received_total"), "source")
    assert set(received) == {(s,) for s in SOURCES} and all(x > 0 for x in received.values())
    assert values(q("streamd_source_events_rejected_total"), "source") == {("gen",): 0.0, ("hz",): 0.0}
    setup.wait(lambda: set(values(q("streamd_source_connected == 1"), "source")) == {(s,) for s in SOURCES},
               "both sources to be connected, as scraped")
    # The HORISEN poller's own series: a token granted, polls completed, requests answered.
    assert values(q('streamd_source_token_grants_total{outcome="ok"}'), "source")[("hz",)] >= 1
    assert values(q('streamd_source_polls_total{outcome="complete"}'), "source")[("hz",)] >= 1
    codes = values(q("streamd_source_requests_total"), "source", "code")
    assert codes.get(("hz", "200"), 0) >= 1, codes
    assert values(q("streamd_source_poll_duration_seconds_count"), "source")[("hz",)] >= 1
    last_poll = values(q("time() - streamd_source_last_poll_timestamp_seconds"), "source")
    assert 0 <= last_poll[("hz",)] < 120, last_poll
    head = values(q("streamd_feed_head_seq"))[()]
    stored = setup.streamd.query("SELECT max(seq) FROM events")[0][0]
    assert 0 < head <= stored


def test_per_sink_series_show_delivery_and_lag(setup: Setup) -> None:
    q = setup.prom.query

    def delivered() -> dict[tuple[str, ...], float] | None:
        v = values(q("streamd_sink_events_delivered_total"), "sink")
        return v if set(v) == {(s,) for s in SINKS} and all(x > 0 for x in v.values()) else None

    scraped = setup.wait(delivered, "both sinks to have delivered events, as scraped")
    # The counter moves only once the lines are written, so each file holds at least as many.
    out = setup.streamd.dir / "out"
    lines = {sink: [json.loads(line) for line in feed_lines(out / f"{sink}.jsonl")] for sink in SINKS}
    for sink in SINKS:
        assert 0 < scraped[(sink,)] <= len(lines[sink]), (sink, scraped, len(lines[sink]))
    assert {e["provider"] for e in lines["invoices"]} == {"horisen"}
    assert {e["provider"] for e in lines["all"]} == {"synthetic", "horisen"}
    failures = values(q("streamd_sink_failures_total"), "sink", "kind")
    assert failures == {(s, k): 0.0 for s in SINKS for k in ("retryable", "permanent")}
    for family in ("streamd_sink_lag_events", "streamd_sink_lag_seconds", "streamd_sink_offset_seq"):
        got = values(q(family), "sink")
        assert set(got) == {(s,) for s in SINKS}, (family, got)
        assert all(x >= 0 for x in got.values()), (family, got)
    # Lag is the head minus the offset, so never more than the head.
    assert not q("streamd_sink_lag_events > on() group_left streamd_feed_head_seq")
    dead = values(q("streamd_dead_letters_total"), "origin", "name")
    assert set(dead) == {("source", s) for s in SOURCES} | {("sink", s) for s in SINKS}
    assert all(x == 0 for x in dead.values()), dead


def test_component_health_is_one_per_component(setup: Setup) -> None:
    def healthy() -> dict[tuple[str, ...], float] | None:
        v = values(setup.prom.query("streamd_component_healthy"), "component", "name")
        return v if set(v) == COMPONENTS and all(x == 1 for x in v.values()) else None

    setup.wait(healthy, f"streamd_component_healthy == 1 for {sorted(COMPONENTS)}")
    readyz = httpx.get(f"{setup.streamd.url}/readyz", timeout=10)
    assert readyz.status_code == 200, readyz.text


def test_contrib_rules_load_and_stay_quiet_for_a_healthy_daemon(setup: Setup) -> None:
    alerts = re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), re.M)
    q = setup.prom.query
    # First what a healthy daemon looks like to Prometheus: every component healthy and
    # the poller past its first poll.
    setup.wait(lambda: len(q("streamd_component_healthy == 1")) == len(COMPONENTS)
               and q("streamd_source_last_poll_timestamp_seconds > 0"), "a healthy daemon, as scraped")
    since = datetime.now(UTC)

    def evaluated() -> list[dict[str, Any]] | None:
        groups = setup.prom.api("rules", type="alert")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(
            r["health"] != "unknown" and datetime.fromisoformat(r["lastEvaluation"]) > since
            for r in rules) else None

    rules = setup.wait(evaluated, "every alert rule to be evaluated over that data")
    assert sorted(r["name"] for r in rules) == sorted(alerts)
    bad = [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not bad, bad
    active = [(r["name"], r["state"], r["alerts"]) for r in rules if r["state"] != "inactive"]
    assert not active, active
