"""The operator's kit in contrib/: Prometheus alert rules (checked and unit-tested with promtool)
and the Grafana dashboard, and that every metric they use is one streamd exports."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamd.metrics import Metrics

from .conftest import Streamd
from .test_process import require

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "contrib" / "prometheus" / "streamd.rules.yml"
RULES_TEST = ROOT / "contrib" / "prometheus" / "streamd.rules.test.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "streamd.json"

METRIC = re.compile(r"\bstreamd_[a-z0-9_]+")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "info": ("_info",),
    "gauge": ("",),
}


def exported_names() -> set[str]:
    """Every sample name streamd's registry can expose, whether or not a series exists yet."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in board["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def exprs(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(board) for t in p.get("targets", [])]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = require("promtool")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=False)


def test_exported_names_cover_suffixes() -> None:
    names = exported_names()
    assert {"streamd_source_polls_total", "streamd_store_commit_duration_seconds_bucket",
            "streamd_source_poll_duration_seconds_count", "streamd_build_info",
            "streamd_sink_lag_seconds"} <= names


def test_rules_check() -> None:
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr


def test_rules_unit_tests() -> None:
    r = promtool("test", "rules", str(RULES_TEST))
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_is_tested_and_labelled() -> None:
    rules = RULES.read_text()
    alerts = re.findall(r"^\s*- alert: (\w+)$", rules, re.M)
    assert len(alerts) == len(set(alerts)) >= 9
    tested = set(re.findall(r"alertname: (\w+)", RULES_TEST.read_text()))
    assert set(alerts) <= tested, set(alerts) - tested
    for block in re.split(r"^\s*- alert: ", rules, flags=re.M)[1:]:
        name = block.split()[0]
        assert re.search(r"^\s+for: \d+[smh]$", block, re.M), name
        assert re.search(r"^\s+severity: (warning|critical)$", block, re.M), name
        assert "summary:" in block and "description:" in block, name


def test_rules_use_exported_metrics() -> None:
    used = set(METRIC.findall(RULES.read_text()))
    assert used
    assert used <= exported_names(), used - exported_names()


def test_dashboard_loads() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    for p in panels(board):
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]


def test_dashboard_uses_exported_metrics() -> None:
    board = dashboard()
    used = {m for e in exprs(board) for m in METRIC.findall(e)}
    used |= {m for v in board["templating"]["list"] for m in METRIC.findall(v.get("definition", ""))}
    assert len(used) > 20
    assert used <= exported_names(), used - exported_names()


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses every panel query (as a recording rule, Grafana's $__ variables filled in)."""
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, e in enumerate(exprs(dashboard())):
        e = e.replace("$__rate_interval", "5m")
        lines += [f"      - record: dashboard:q{i}", f"        expr: {json.dumps(e)}"]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text("\n".join(lines) + "\n")
    r = promtool("check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("path", [RULES, RULES_TEST, DASHBOARD])
def test_contrib_files_exist(path: Path) -> None:
    assert path.is_file()


# ---------------------------------------------------------------- what a fresh daemon exports

FRESH = """
[store]
path = "feed.db"
[http]
listen = "127.0.0.1:0"
[sources.ap]
provider = "asperion"
base_url = "https://127.0.0.1:9/v1"
authorize_url = "https://127.0.0.1:9/connect/authorize"
token_url = "https://127.0.0.1:9/connect/token"
client_id = "streamd"
client_secret = "env:FRESH_SECRET"
[sources.hz]
provider = "horisen"
token_url = "https://127.0.0.1:9/oauth2/access-token"
api_url = "https://127.0.0.1:9"
client_id = "streamd"
client_secret = "env:FRESH_SECRET"
[sources.hook]
provider = "synthetic"
generate = false
webhook = true
token = "env:FRESH_SECRET"
[sinks.file]
type = "file"
path = "out/feed.jsonl"
[sinks.http]
type = "http"
url = "http://127.0.0.1:9/events"
"""


def named_by_contrib() -> set[str]:
    """Every metric the alert rules and the dashboard name."""
    board = dashboard()
    used = set(METRIC.findall(RULES.read_text())) | {m for e in exprs(board) for m in METRIC.findall(e)}
    return used | {m for v in board["templating"]["list"] for m in METRIC.findall(v.get("definition", ""))}


def test_a_fresh_daemon_exports_every_metric_contrib_names(streamd_proc: Callable[..., Streamd]) -> None:
    """The first scrape, right after READY=1, before any source got anywhere (their peers do
    not answer) and before any error: every metric the rules and the dashboard use already
    has a series, so `increase()`, alerts and panels see the first event or error."""
    d = streamd_proc(FRESH, env={"FRESH_SECRET": "s3cret"})
    d.start()
    text = httpx.get(f"{d.url}/metrics", timeout=10).text
    scraped = {m.group(1) for line in text.splitlines()
               if (m := re.match(r"^(streamd_[a-z0-9_]+)[{ ]", line))}
    needed = named_by_contrib()
    assert len(needed) > 30
    assert needed <= scraped, sorted(needed - scraped)
    # At 0, with the label values they will have, not just declared.
    for series in ('streamd_store_errors_total{kind="busy"} 0.0',
                   'streamd_store_errors_total{kind="fatal"} 0.0',
                   'streamd_source_deletions_held{source="ap"} 0.0',
                   'streamd_source_refresh_tokens_lost_total{source="ap"} 0.0',
                   'streamd_source_token_grants_total{outcome="refused",source="hz"} 0.0',
                   'streamd_source_last_event_timestamp_seconds{source="hook"} 0.0',
                   'streamd_webhook_requests_total{code="401",source="hook"} 0.0',
                   'streamd_sink_http_requests_total{code="error",sink="http"} 0.0'):
        assert series in text, series
    d.kill()
