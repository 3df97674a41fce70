"""Asperion end to end over real HTTPS on loopback: the simulated API and identity server,
the daemon's poller, the store (a real SQLite file), change detection, OAuth2."""

from __future__ import annotations

import json
import re
import sqlite3
import ssl
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from streamd.configfile import parse
from streamd.errors import ConfigError
from streamd.providers.asperion import simulator as sim_mod
from streamd.providers.asperion import source as source_mod
from streamd.providers.asperion.changes import record_event
from streamd.providers.asperion.oauth import TOKEN_KEY, TokenState, save
from streamd.providers.asperion.simulator import AsperionSimulator, Knobs
from streamd.sources.changes import chain, same_content

from .conftest import InProcess, streamd_cli, until
from .ports import free_port

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 11, 21, tzinfo=UTC)


def config(tmp_path: Path, sim: AsperionSimulator, extra: str = "", other: str = "",
           interval: str = "1s") -> Any:
    src = sim.source_toml("ap", backoff='{ min = "20ms", max = "300ms" }', interval=f'"{interval}"',
                          **({} if "page_size" in extra else {"page_size": "7"}))
    return parse(f"""
[store]
path = "feed.db"
[http]
listen = "127.0.0.1:0"
{src}{extra}
{other}
""", base_dir=tmp_path)


async def authorize(cfg: Any, sim: AsperionSimulator, name: str = "ap") -> None:
    """What `streamd auth` leaves behind: a refresh token in the store."""
    await save(cfg.store, name, TokenState(refresh_token=sim.issue_refresh_token()))


def feed(d: InProcess, source: str = "ap") -> list[tuple[str, str, str, str, bytes]]:
    return [(t, e, op, k, data) for t, e, op, k, data in d.rows(
        "SELECT tenant, entity, op, key, data FROM events WHERE source = ? ORDER BY seq", (source,))]


def polls(d: InProcess, name: str = "ap") -> int:
    return int(d.daemon.sources[name].polls)


async def rounds(d: InProcess, n: int = 1, pairs: int = 6, seconds: float = 20.0) -> None:
    """Wait until every (tenant, resource) has completed `n` more listings."""
    target = polls(d) + n * pairs
    await until(lambda: polls(d) >= target, seconds, f"{n} more poll rounds")


def test_versions_chain_so_a_revert_is_a_new_event() -> None:
    rec = {"id": 7, "name": "A", "customerNumber": "D7", "dateLastChange": "2026-03-01T10:00:00"}
    a = json.dumps(rec).encode()
    b = json.dumps({**rec, "name": "B"}).encode()
    first = record_event("debtors", a, source="s", tenant="1", previous="", received_at=NOW)
    again = record_event("debtors", a, source="s", tenant="1", previous="", received_at=NOW)
    assert first.id == again.id and first.op == "created"  # a replay is absorbed
    second = record_event("debtors", b, source="s", tenant="1", previous=first.version, received_at=NOW)
    back = record_event("debtors", a, source="s", tenant="1", previous=second.version, received_at=NOW)
    assert second.op == back.op == "updated"
    assert len({first.id, second.id, back.id}) == 3  # A -> B -> A: the return is not a duplicate
    assert same_content(first.version, back.version) and not same_content(first.version, second.version)
    assert back.version.startswith(chain(second.version) + "#")


async def test_first_poll_creates_each_record_once_then_only_the_changes(tmp_path: Path) -> None:
    async with sim_mod.simulator(tmp_path / "sim", Knobs(records=20)) as sim:
        cfg = config(tmp_path, sim)
        await authorize(cfg, sim)
        async with InProcess(cfg) as d:
            await rounds(d, 1)
            rows = feed(d)
            assert len(rows) == 2 * 3 * 20
            assert Counter(r[2] for r in rows) == {"created": 120}
            assert len({(t, e, k) for t, e, _, k, _ in rows}) == 120
            assert {(t, e) for t, e, *_ in rows} == {(t, e) for t in ("1001", "1002")
                                                    for e in ("party", "invoice", "product")}
            await rounds(d, 2)
            assert len(feed(d)) == 120  # nothing changed, nothing emitted

            m = sim.mutate(5, 7, 3)
            await rounds(d, 2)
            new = feed(d)[120:]
            assert Counter(r[2] for r in new) == {"created": 5, "updated": 7, "deleted": 3}
            entity = {"debtors": "party", "salesinvoices": "invoice", "articles": "product"}
            for op, changed in (("created", m.created), ("updated", m.updated), ("deleted", m.deleted)):
                assert sorted((t, e, k) for t, e, o, k, _ in new if o == op) == \
                    sorted((t, entity[r], k) for t, r, k in changed)
            # A deletion carries the last state it had.
            for t, _, op, k, data in new:
                if op == "deleted":
                    assert json.loads(data)["name" if _ == "party" else "number"] is not None, (t, k)
            paid = [json.loads(data) for _, e, op, _, data in new if op == "updated" and e == "invoice"]
            assert all(inv["status"] in ("paid", "open", "draft") for inv in paid)
            await rounds(d, 1)
            assert len(feed(d)) == 120 + 15
            progress = d.rows("SELECT key FROM source_state WHERE source = 'ap' AND key LIKE 'poll.%'")
            assert len(progress) == 6


async def test_a_restart_polls_again_without_repeating_anything(tmp_path: Path) -> None:
    async with sim_mod.simulator(tmp_path / "sim", Knobs(records=15)) as sim:
        cfg = config(tmp_path, sim)
        await authorize(cfg, sim)
        async with InProcess(cfg) as d:
            await rounds(d, 1)
        sim.mutate(2, 2, 2)
        async with InProcess(cfg) as d:
            await rounds(d, 1)
            rows = feed(d)
        assert Counter(r[2] for r in rows) == {"created": 90 + 2, "updated": 2, "deleted": 2}
        assert sim.refused_refreshes == 0


async def test_administration_ids_are_numbers_as_asperion_writes_them(tmp_path: Path) -> None:
    """The seed's `"administrationId": 1234` is a number, and `tenants = [1001]` says the same:
    it is polled with `X-Tenant-Id: 1001`, and its events carry tenant "1001"."""
    async with sim_mod.simulator(tmp_path / "sim", Knobs(records=4)) as sim:
        cfg = config(tmp_path, sim, extra='tenants = [1001]\nresources = ["debtors"]\n')
        await authorize(cfg, sim)
        async with InProcess(cfg) as d:
            await rounds(d, 1, pairs=1)
            assert {(t, op) for t, _, op, _, _ in feed(d)} == {("1001", "created")}
            assert len(feed(d)) == 4
        listed = {e.tenant for e in sim.log if e.path == "/v1/debtors"}
        assert listed == {"1001"}
    for tenants, problem in (("[0]", "tenants[0]: 0 is not an administration id (one is 1 or more)"),
                             ('[1001, "1001"]', "tenants: an administration is listed twice"),
                             ("[true]", "tenants[0]: expected int | str, got bool")):
        with pytest.raises(ConfigError) as refused:
            config(tmp_path, sim, extra=f"tenants = {tenants}\n")
        assert f"sources.ap.{problem}" in refused.value.problems, refused.value.problems


async def test_retry_after_holds_back_that_tenant(tmp_path: Path) -> None:
    async with sim_mod.simulator(tmp_path / "sim", Knobs(records=30, throttle_every=5, retry_after=2)) as sim:
        cfg = config(tmp_path, sim, extra='tenants = ["1001"]\nresources = ["debtors"]\nmax_tries = 6\n'
                     'concurrency = 3\n')
        await authorize(cfg, sim)
        async with InProcess(cfg) as d:
            await rounds(d, 1, pairs=1, seconds=30)
            assert len(feed(d)) == 30
            api = [e for e in sim.log if e.path.startswith("/v1/")]
            throttled = [e for e in api if e.status == 429]
            assert throttled, "the simulator throttled nothing"
            for t in throttled:
                # Requests already on the wire when the 429 came arrive within milliseconds;
                # after those, the tenant's next request waits out Retry-After.
                early = [e for e in api if t.at + 0.2 < e.at < t.at + 2.0]
                assert not early, f"requests went out before Retry-After: {early}"
            assert max(e.at for e in api) - throttled[0].at >= 2.0
            assert await d.metric('streamd_source_requests_total{code="429",source="ap"}')


async def test_a_5xx_storm_is_retried_and_the_poll_completes(tmp_path: Path) -> None:
    async with sim_mod.simulator(tmp_path / "sim", Knobs(records=40, fail_every=2)) as sim:
        cfg = config(tmp_path, sim, extra='tenants = ["1002"]\nmax_tries = 10\n')
        await authorize(cfg, sim)
        async with InProcess(cfg) as d:
            await rounds(d, 1, pairs=3, seconds=30)
            assert Counter(r[2] for r in feed(d)) == {"created": 120}
            assert sum(1 for e in sim.log if e.status == 503) >= 10
            assert await d.metric('streamd_source_requests_total{code="503",source="ap"}')
            assert (await d.metric('streamd_retries_total{component="source",name="ap"}') or 0) >= 10
            sim.knobs.fail_every = 0
            await rounds(d, 1, pairs=3)
            assert len(feed(d)) == 120


async def test_a_listing_that_fails_part_way_deletes_nothing(tmp_path: Path) -> None:
    async with sim_mod.simulator(tmp_path / "sim", Knobs(records=40)) as sim:
        cfg = config(tmp_path, sim, extra='tenants = ["1001"]\nresources = ["articles"]\nmax_tries = 1\n')
        await authorize(cfg, sim)
        async with InProcess(cfg) as d:
            await rounds(d, 1, pairs=1)
            assert len(feed(d)) == 40
            sim.mutate(0, 0, 3, tenants=["1001"], resources=["articles"])
            sim.knobs.fail_every = 4  # some page of every listing fails, and is not retried
            failed = 'streamd_source_polls_total{outcome="failed",source="ap"}'
            await until(lambda: d.metric(failed), 10, "a failed listing")
            await until(lambda: _ge(d.metric(failed), 3), 20, "three failed listings")
            assert [r for r in feed(d) if r[2] == "deleted"] == []  # a partial listing never deletes
            r = await d.http.get("/readyz")
            assert "source ap: retrying" in r.text and "HTTP 503" in r.text
            sim.knobs.fail_every = 0
            await rounds(d, 1, pairs=1)
            assert Counter(r[2] for r in feed(d)) == {"created": 40, "deleted": 3}


async def _ge(value: Any, n: float) -> bool:
    return (await value or 0) >= n


async def test_a_token_expiring_mid_listing_is_refreshed_without_restarting_it(tmp_path: Path) -> None:
    knobs = Knobs(records=60, latency=0.06, token_ttl=0.25)
    async with sim_mod.simulator(tmp_path / "sim", knobs) as sim:
        cfg = config(tmp_path, sim, interval="1h", extra='tenants = ["1001"]\nresources = ["debtors"]\n'
                     'concurrency = 1\nrefresh_before = "0s"\n')
        await authorize(cfg, sim)
        async with InProcess(cfg) as d:
            await rounds(d, 1, pairs=1)
            assert len(feed(d)) == 60
            # 9 pages of 7 at 60 ms each outlive a 250 ms token: the API said 401 (the token
            # claims a whole second), streamd refreshed it, and the listing went on.
            assert sim.refreshes >= 2  # the one at start, and at least one mid-listing
            assert sum(1 for e in sim.log if e.status == 401) >= 1
            assert sim.refused_refreshes == 0
            # Not restarted: each of the 9 pages was fetched successfully exactly once.
            assert sum(1 for e in sim.log if e.path == "/v1/debtors" and e.status == 200) == 9
            assert polls(d) == 1


async def test_a_401_after_a_fresh_token_stops_that_source_only(tmp_path: Path) -> None:
    synthetic = """
[sources.gen]
provider = "synthetic"
rate = 200
"""
    async with sim_mod.simulator(tmp_path / "sim", Knobs(records=5)) as sim:
        cfg = config(tmp_path, sim, other=synthetic)
        await authorize(cfg, sim)
        sim.knobs.token_ttl = 0.0  # every access token is dead on arrival
        async with InProcess(cfg) as d:
            async def failed() -> bool:
                r = await d.http.get("/readyz")
                return r.status_code == 503 and "source ap: failed" in r.text
            await until(failed, 15, "/readyz to name the failed source")
            r = await d.http.get("/readyz")
            assert "HTTP 401 twice" in r.text and "streamd auth ap" in r.text
            assert await d.metric('streamd_component_healthy{component="source",name="ap"}') == 0
            before = len(feed(d, "gen"))
            await until(lambda: len(feed(d, "gen")) > before + 20, 10, "the synthetic source to go on")
            assert feed(d) == []


async def test_a_refused_refresh_token_waits_for_streamd_auth(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source_mod, "CREDENTIALS_CHECK", 0.1)
    async with sim_mod.simulator(tmp_path / "sim", Knobs(records=4)) as sim:
        cfg = config(tmp_path, sim)
        await save(cfg.store, "ap", TokenState(refresh_token="not-a-token-the-server-gave"))
        async with InProcess(cfg) as d:
            async def failed() -> bool:
                r = await d.http.get("/readyz")
                return "source ap: failed" in r.text and "invalid_grant" in r.text
            await until(failed, 10, "the source to fail on a refused refresh token")
            assert await d.metric('streamd_source_token_grants_total{outcome="refused",source="ap"}') == 1
            # `streamd auth --refresh-token -` (a real subprocess) writes into the live store.
            token = sim.issue_refresh_token()
            cfg_file = tmp_path / "auth.toml"
            cfg_file.write_text(f'[store]\npath = "{cfg.store.path}"\n' + sim.source_toml("ap"))
            done = await anyio.to_thread.run_sync(lambda: streamd_cli(
                "auth", "ap", "-c", str(cfg_file), "--refresh-token", "-", input=token.encode() + b"\n"))
            assert done.returncode == 0, done.stderr
            assert token not in done.stdout + done.stderr
            await rounds(d, 1)
            assert len(feed(d)) == 24
            assert not sim.refresh_token_valid(token)  # it was used, and rotated
            status = await anyio.to_thread.run_sync(lambda: streamd_cli("status", "-c", str(cfg_file)))
            stored = d.rows("SELECT value FROM source_state WHERE key = ?", (TOKEN_KEY,))[0][0]
            assert json.loads(stored)["refresh_token"] not in status.stdout


async def browse(url: str, ca: Path) -> httpx.Response:
    """The "browser": follows the identity server's 302 to streamd's loopback listener."""
    trust = ssl.create_default_context(cafile=str(ca))
    async with httpx.AsyncClient(verify=trust, follow_redirects=True) as browser:
        return await browser.get(url)


async def test_streamd_auth_runs_the_authorization_code_flow(tmp_path: Path) -> None:
    async with sim_mod.simulator(tmp_path / "sim", Knobs()) as sim:
        redirect = f"http://127.0.0.1:{free_port()}/callback"
        cfg_file = tmp_path / "config.toml"
        cfg_file.write_text('[store]\npath = "feed.db"\n'
                            + sim.source_toml("ap", redirect_uri=f'"{redirect}"'))
        proc = await anyio.open_process([sys.executable, "-m", "streamd", "auth", "ap", "-c", str(cfg_file)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
        try:
            assert proc.stdout is not None and proc.stderr is not None
            out = b""
            with anyio.fail_after(20):
                while b"waiting for the redirect" not in out:
                    out += await proc.stdout.receive()
            m = re.search(rb"(https://\S+/connect/authorize\?\S+)", out)
            assert m, out
            page = await browse(m.group(1).decode(), sim.certs.ca)
            assert page.status_code == 200 and "authorization complete" in page.text
            assert [r.status_code for r in page.history] == [302]
            assert str(page.url).startswith(redirect + "?code=")
            with anyio.fail_after(20):
                code = await proc.wait()
            err = (await proc.stderr.receive()) if code else b""
            assert code == 0, err
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.aclose()
        con = sqlite3.connect(tmp_path / "feed.db")
        try:
            (value,) = con.execute("SELECT value FROM source_state WHERE source = 'ap' AND key = ?",
                                   (TOKEN_KEY,)).fetchone()
        finally:
            con.close()
        assert sim.refresh_token_valid(json.loads(value)["refresh_token"])
