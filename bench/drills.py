"""The long failure drills: all four providers and two sinks in one real `streamd run`.

    python bench/drills.py kills [--kills 30] [--seed 7]   # SIGKILL at random moments
    python bench/drills.py peers [--minute 60]             # every peer misbehaves at once
    python bench/drills.py nats [--kills 30] [--events 20000]  # two shards into NATS JetStream
    python bench/drills.py all

The workload, the same for both: the Asteria gateway's websocket (mutual TLS) and
its webhooks, the Asperion and HORISEN pollers, Maestrano Connec!'s webhooks (and its
poller), every simulator changing its records as the drill runs; a file sink and an
HTTP sink to a receiver. The simulators and the receiver run in this process, on
loopback; streamd is its own process.

`kills`: the daemon is SIGKILLed `--kills` times, each at a random moment. After each
kill: every event ever committed is still there under the same seq, and every webhook
event that was answered 2xx is in the feed. At the end: each poller's feed matches its
provider, the feed has no duplicate id, and both sinks hold every event, first
arrivals in seq order, repeats only redeliveries of the same id.

`peers`: for `--minute` seconds every peer misbehaves (websocket drops and malformed
frames, 429s and 5xx, slow answers, access tokens that expire within seconds,
malformed payloads, an HTTP receiver failing half its requests or hanging). The
daemon must stay up (same pid), `/readyz` must name what is unhealthy, the metrics
must count it, and once the peers behave, everything recovers without a restart and
the same end checks pass.

`nats`: the scale-out drill (tests/test_nats_drill.py, longer): two `streamd run` shards
publish their generators' events into one R3 stream on a three-node NATS cluster whose
dedupe window is 1 s; the shards are SIGKILLed `--kills` times in turn at random
moments, and one NATS node is killed for the middle third of the drill. The whole stream
is then read back: every event of both feeds once, with its id and its feed line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import anyio
import httpx
import msgspec
from anyio.from_thread import BlockingPortal, start_blocking_portal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.* helpers

from streamd.config import StoreConfig  # noqa: E402
from streamd.model.envelope import encode_data  # noqa: E402
from streamd.providers.asperion import simulator as asperion_sim  # noqa: E402
from streamd.providers.asperion.normalize import normalize_record  # noqa: E402
from streamd.providers.asperion.oauth import TokenState, save  # noqa: E402
from streamd.providers.asperion.wire import RESOURCES  # noqa: E402
from streamd.providers.asteria import simulator as asteria_sim  # noqa: E402
from streamd.providers.connec import simulator as connec_sim  # noqa: E402
from streamd.providers.connec import wire as connec_wire  # noqa: E402
from streamd.providers.horisen import simulator as horisen_sim  # noqa: E402
from tests.conftest import Streamd, wait_for  # noqa: E402
from tests.http_receiver import Knobs as ReceiverKnobs  # noqa: E402
from tests.http_receiver import Receiver  # noqa: E402

ASTERIA_SECRET = "drill-asteria-webhook-secret"
NOW = datetime.now(UTC)
ENCODE = msgspec.json.Encoder(decimal_format="number").encode  # Connec! amounts are JSON numbers
BACKOFF = '{ min = "50ms", max = "1s" }'

CONFIG = """
[store]
path = "feed.db"
commit_linger = "2ms"
[http]
listen = "127.0.0.1:0"
[daemon]
shutdown_timeout = "20s"
log_level = "info"
{sources}
[sinks.file]
type = "file"
path = "out/feed.jsonl"
rotate_bytes = "4MiB"
keep = 1000
batch_max = 200
[sinks.http]
type = "http"
url = "{receiver}/feed"
format = "batch"
batch_max = 200
timeout = "2s"
backoff = {{ min = "50ms", max = "1s" }}
"""


@dataclass
class Sims:
    asteria: asteria_sim.AsteriaSimulator
    asperion: asperion_sim.AsperionSimulator
    horisen: horisen_sim.HorisenSimulator
    connec: connec_sim.ConnecSimulator
    receiver: Receiver


class World:
    """The simulators and the receiver (in a thread's event loop), the daemon, and the
    webhook posters with what they were answered."""

    def __init__(self, portal: BlockingPortal, workdir: Path, seed: int) -> None:
        self.portal = portal
        self.rng = random.Random(seed)
        asteria = asteria_sim.simulator(workdir / "asteria", asteria_sim.Knobs(count=0, rate=150, seed=seed))
        asperion = asperion_sim.simulator(workdir / "asperion", asperion_sim.Knobs(records=30, seed=seed))
        horisen = horisen_sim.simulator(workdir / "horisen", horisen_sim.Knobs(days=20, documents_per_day=4,
                                                                               seed=seed))
        connec = connec_sim.simulator(workdir / "connec", connec_sim.Knobs(entities=4, seed=seed))
        receiver = Receiver(knobs=ReceiverKnobs(seed=seed, hang=3.0))
        self.sims = Sims(asteria, asperion, horisen, connec, receiver)
        self.futures = [portal.start_task_soon(server.serve)
                        for server in (asteria, asperion, horisen, connec, receiver)]
        wait_for(lambda: all(getattr(s, "url", "") for s in (asteria, asperion, horisen, connec, receiver)),
                 20, "the simulators to listen")
        sources = "\n".join([
            asteria.source_toml("gw", backoff=BACKOFF, webhook_secret='"env:DRILL_ASTERIA_SECRET"'),
            asperion.source_toml("ap", interval='"1s"', page_size="10", backoff=BACKOFF,
                                 refresh_before='"1s"'),
            horisen.source_toml("hz", interval='"1s"', page_size="20", backoff=BACKOFF),
            connec.source_toml("mno", interval='"2s"', page_size="10", backoff=BACKOFF),
        ])
        self.d = Streamd(workdir / "streamd", CONFIG.format(sources=sources, receiver=receiver.url),
                         env={"DRILL_ASTERIA_SECRET": ASTERIA_SECRET})
        # What `streamd auth asperion` leaves behind: a refresh token in the store.
        anyio.run(save, StoreConfig(path=str(self.d.db)), "ap",
                  TokenState(refresh_token=asperion.issue_refresh_token()))
        self.asteria_acked: set[str] = set()  # event ids a 2xx named
        self.connec_acked: set[tuple[str, str, str]] = set()  # (group, key, updated_at) answered 2xx
        self.posts = Counter[str]()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._n = 0

    # ------------------------------------------------------------ the workload

    def mutate(self) -> None:
        """A round of provider-side changes (in the simulators' own loop: no races)."""
        s = self.sims
        r = self.rng
        self.portal.call(lambda: s.asperion.mutate(r.randint(0, 2), r.randint(0, 3), r.randint(0, 1)))
        has_open = any(d["paymentStatus"] == "open" and d["status"] == "approved"
                       for d in self.portal.call(s.horisen.documents).values())
        paid = r.randint(0, 1) if has_open else 0
        self.portal.call(lambda: s.horisen.mutate(new=r.randint(0, 2), paid=paid))

    def drain_notify(self) -> None:
        """Read the daemon's sd_notify datagrams (its watchdog pings) so its socket never fills."""
        while True:
            try:
                self.d.notifications()
            except (OSError, AttributeError):
                pass  # between runs: the socket is being replaced
            time.sleep(0.5)

    def start_posters(self) -> None:
        self._stop.clear()
        self._threads = [threading.Thread(target=self._post_asteria, daemon=True),
                         threading.Thread(target=self._post_connec, daemon=True)]
        for t in self._threads:
            t.start()

    def stop_posters(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _post_asteria(self) -> None:
        """Asteria's webhooks: new changes, and now and then one the websocket brought."""
        with httpx.Client(timeout=5) as http:
            while not self._stop.is_set():
                self._n += 1
                if self._n % 5 == 0 and self.sims.asteria.sent:
                    topic, body = self.sims.asteria.sent[-1]
                else:
                    topic, body = asteria_sim.event(10_000_000 + self._n, seed=99)
                try:
                    r = http.post(f"{self.d.url}/webhooks/gw", content=body, headers={
                        "content-type": "application/json", "x-asteria-topic": topic,
                        "x-streamd-webhook-secret": ASTERIA_SECRET})
                except httpx.HTTPError:
                    self.posts["asteria unanswered"] += 1
                    self._stop.wait(0.05)
                    continue
                self.posts[f"asteria {r.status_code}"] += 1
                if r.status_code == 200:
                    self.asteria_acked.update(r.json()["ids"])
                self._stop.wait(0.02)

    def _post_connec(self) -> None:
        """Maestrano's notifications: an entity created and another changed, each round."""
        s = self.sims.connec
        url = f"{self.d.url}/maestrano/connec/notifications"
        with httpx.Client(timeout=5) as http:
            while not self._stop.is_set():
                def change() -> tuple[dict[str, Any], dict[str, set[tuple[str, str, str]]]]:
                    m = s.mutate(created=1, updated=1)
                    versions: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
                    for g, c, key in [*m.created, *m.updated]:
                        versions[g].add((g, key, str(s.entity(g, c, key)["updated_at"])))
                    return connec_sim.notification_for(s, m), versions

                bodies, versions = self.portal.call(change)
                for group, body in bodies.items():
                    try:
                        r = http.post(url, content=ENCODE(body), auth=(s.api_id, s.api_key),
                                      headers={"content-type": "application/json"})
                    except httpx.HTTPError:
                        self.posts["connec unanswered"] += 1
                        continue
                    self.posts[f"connec {r.status_code}"] += 1
                    if r.status_code == 200:
                        self.connec_acked |= versions[group]
                self._stop.wait(0.2)

    # ------------------------------------------------------------ what the feed holds

    def feed(self) -> dict[int, bytes]:
        return {seq: bytes(i) for seq, i in self.d.query("SELECT seq, id FROM events")}

    def check_acked(self) -> None:
        ids = {bytes(i).hex() for (i,) in self.d.query("SELECT id FROM events")}
        lost = set(self.asteria_acked) - ids
        assert not lost, f"{len(lost)} Asteria webhook events answered 2xx are not in the feed"
        # A Connec! version is `updated_at#content-hash`.
        have = {(t, k, v.split("#", 1)[0]) for t, k, v in self.d.query(
            "SELECT tenant, key, version FROM events WHERE source = 'mno'")}
        lost_c = self.connec_acked - have
        assert not lost_c, f"{len(lost_c)} Connec! changes answered 2xx not in the feed: {sorted(lost_c)[:3]}"

    def providers_match(self) -> str | None:
        """None when each poller's feed says what its provider holds; else what is missing."""
        last: dict[tuple[str, str, str, str], tuple[str, bytes, str]] = {}
        for src, tenant, entity, op, key, data, version in self.d.query(
                "SELECT source, tenant, entity, op, key, data, version FROM events "
                "WHERE source IN ('ap', 'hz', 'mno') ORDER BY seq"):
            last[(src, tenant, entity, key)] = (op, bytes(data), version)
        s = self.sims
        for tenant in s.asperion.knobs.tenants:
            for resource in s.asperion.knobs.resources:
                for key, rec in self.portal.call(s.asperion.records, tenant, resource).items():
                    n = normalize_record(resource, asperion_sim.encode_record(rec), received_at=NOW)
                    got = last.get(("ap", tenant, RESOURCES[resource], key))
                    if got is None or got[0] == "deleted" or got[1] != encode_data(n.data):
                        return f"asperion {tenant}/{resource}/{key}"
        created = {k for (src, _, entity, k), _ in last.items() if src == "hz" and entity == "invoice"}
        for doc_id in self.portal.call(s.horisen.documents):
            if str(doc_id) not in created:
                return f"horisen invoice {doc_id}"
        for group in s.connec.groups:
            for collection in connec_wire.COLLECTIONS:
                for key, entity in self.portal.call(s.connec.entities, group, collection).items():
                    versions = {v.split("#", 1)[0] for (src, t, _, k), (_, _, v) in last.items()
                                if src == "mno" and t == group and k == key}
                    if entity.get("updated_at") not in versions:
                        return f"connec {group}/{collection}/{key}"
        return None

    def sinks_complete(self) -> bool:
        head = self.d.query("SELECT coalesce(max(seq), 0) FROM events")[0][0]
        offsets = dict(self.d.query("SELECT sink, seq FROM sink_offsets"))
        return all(offsets.get(s, 0) >= head for s in ("file", "http"))


def check_sink(name: str, arrivals: list[tuple[str, bytes]], feed: list[str]) -> int:
    """A sink's receiving end holds every event; first arrivals in seq order; a repeat is a
    redelivery of the same event (same bytes). Returns the number of redeliveries."""
    first: dict[str, bytes] = {}
    order: list[str] = []
    repeats = 0
    for eid, body in arrivals:
        if eid in first:
            repeats += 1
            assert json.loads(first[eid]) == json.loads(body), f"{name}: {eid} came back different"
        else:
            first[eid] = body
            order.append(eid)
    assert set(order) == set(feed), f"{name}: {len(set(feed) - set(order))} events missing, " \
                                    f"{len(set(order) - set(feed))} unknown"
    assert order == feed, f"{name}: first arrivals out of seq order"
    return repeats


def file_arrivals(d: Streamd) -> list[tuple[str, bytes]]:
    from tests.conftest import feed_lines

    out = []
    for line in feed_lines(d.dir / "out" / "feed.jsonl"):
        out.append((json.loads(line)["id"], line))
    return out


def http_arrivals(rx: Receiver) -> list[tuple[str, bytes]]:
    return [(ce["id"], json.dumps(ce, sort_keys=True).encode()) for ce in rx.events("/feed")]


def end_checks(w: World, t0: float) -> dict[str, Any]:
    """Wait for the feed to match the providers and the sinks to catch up, then check all."""
    s = w.sims.asteria
    w.portal.call(lambda: setattr(s.knobs, "count", s.position + 1))  # the gateway goes quiet
    wait_for(lambda: w.providers_match() is None, 120,
             f"the feed to match the providers (first mismatch: {w.providers_match()})", interval=0.5)
    wait_for(w.sinks_complete, 120, "both sinks to deliver everything", interval=0.2)
    w.check_acked()
    rows = w.d.query("SELECT seq, id, source FROM events ORDER BY seq")
    ids = [bytes(i).hex() for _, i, _ in rows]
    assert len(ids) == len(set(ids)), "an event id appears twice in the feed"
    redelivered_file = check_sink("file", file_arrivals(w.d), ids)
    redelivered_http = check_sink("http", http_arrivals(w.sims.receiver), ids)
    per_source = Counter(src for _, _, src in rows)
    dead = dict(w.d.query("SELECT name, count(*) FROM dead_letters GROUP BY name"))
    return {"events": len(ids), "per_source": per_source, "dead": dead, "file_redeliveries": redelivered_file,
            "http_redeliveries": redelivered_http, "seconds": time.monotonic() - t0}


def summary(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n# {title}")
    print("| figure | value")
    print("|:--|--:")
    for k, v in rows:
        print(f"| {k} | {v}")


@contextmanager
def world(seed: int, keep: str | None) -> Iterator[World]:
    with TemporaryDirectory(prefix="streamd-drill-") as tmp, start_blocking_portal() as portal:
        w = World(portal, Path(keep or tmp), seed)
        drain = threading.Thread(target=w.drain_notify, daemon=True)
        drain.start()
        try:
            yield w
        except BaseException:
            print(w.d.log()[-4000:], file=sys.stderr)
            raise
        finally:
            w.stop_posters()
            w.d.stop()
            for fut in w.futures:
                fut.cancel()


# ---------------------------------------------------------------- kills

def drill_kills(kills: int, seed: int, keep: str | None) -> None:
    t0 = time.monotonic()
    with world(seed, keep) as w:
        committed: dict[int, bytes] = {}
        alive: list[float] = []
        for i in range(kills):
            w.d.start()
            w.start_posters()
            if i % 3 == 0:
                w.mutate()
            up = w.rng.uniform(0.2, 3.0)  # a random moment: the point of the drill
            time.sleep(up)
            w.d.kill()
            alive.append(up)
            w.stop_posters()
            now = w.feed()
            changed = [seq for seq, eid in committed.items() if now.get(seq) != eid]
            assert not changed, f"kill {i + 1}: {len(changed)} committed events lost or changed their seq"
            committed = now
            w.check_acked()
            print(f"kill {i + 1:>2}/{kills} after {up:.2f}s: feed {len(now):>6} events, webhooks acked: "
                  f"asteria {len(w.asteria_acked)}, connec {len(w.connec_acked)}", flush=True)
        w.d.start()
        r = end_checks(w, t0)
        assert w.d.terminate() == 0
        summary(f"{kills} SIGKILLs, mixed workload (seed {seed})", [
            ("kills", str(kills)),
            ("alive between kills (s)", f"{min(alive):.2f}–{max(alive):.2f}"),
            ("events in the feed", f"{r['events']:,}"),
            *[(f"  from {src}", f"{n:,}") for src, n in sorted(r["per_source"].items())],
            ("Asteria webhook events acked 2xx (all in the feed)", f"{len(w.asteria_acked):,}"),
            ("Connec! entities acked 2xx (all in the feed)", f"{len(w.connec_acked):,}"),
            ("committed events lost / seq reused", "0 / 0"),
            ("duplicate ids in the feed", "0"),
            ("file sink: redeliveries (same id, same bytes)", str(r["file_redeliveries"])),
            ("http sink: redeliveries (same id, same bytes)", str(r["http_redeliveries"])),
            ("dead letters", ", ".join(f"{k} {v}" for k, v in sorted(r["dead"].items())) or "0"),
            ("wall time (s)", f"{r['seconds']:.0f}"),
        ])


# ---------------------------------------------------------------- peers

UNHEALTHY = re.compile(r"^(source|sink|store) (\S+): (?!ok)", re.M)


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def drill_peers(minute: float, seed: int, keep: str | None) -> None:
    t0 = time.monotonic()
    with world(seed, keep) as w:
        s = w.sims
        w.d.start()
        pid = w.d.proc.pid if w.d.proc else 0
        w.start_posters()
        time.sleep(3)  # some normal traffic first
        http = httpx.Client(base_url=w.d.url, timeout=10)
        before = http.get("/metrics").text

        def misbehave(on: bool) -> None:
            def apply() -> None:
                s.asteria.knobs.drop_every = 40 if on else 0
                s.asteria.knobs.malformed_every = 25 if on else 0
                s.asperion.knobs.throttle_every = 4 if on else 0
                s.asperion.knobs.retry_after = 1.0
                s.asperion.knobs.fail_every = 5 if on else 0
                s.asperion.knobs.latency = 0.3 if on else 0.0
                s.asperion.knobs.token_ttl = 2.0 if on else 3600.0
                s.horisen.knobs.fail_every = 3 if on else 0
                s.horisen.knobs.latency = 0.2 if on else 0.0
                s.horisen.knobs.token_ttl = 1.5 if on else 3600.0
                s.connec.knobs.fail_every = 3 if on else 0
                s.connec.knobs.latency = 0.3 if on else 0.0
                s.receiver.knobs.chaos = 0.5 if on else 0.0
            w.portal.call(apply)

        misbehave(True)
        # Malformed payloads besides Asteria's frames: a HORISEN document with a bad amount,
        # and a Connec! notification with two broken entities among good ones.
        doc_id = min(w.portal.call(s.horisen.documents))
        w.portal.call(lambda: s.horisen.corrupt(doc_id, totalUnpaid="lots"))
        bad = w.portal.call(connec_sim.partly_invalid_notification, s.connec, s.connec.groups[0])
        r = http.post("/maestrano/connec/notifications", content=ENCODE(bad),
                      auth=(s.connec.api_id, s.connec.api_key), headers={"content-type": "application/json"})
        print(f"a partly invalid Connec! notification: {r.status_code} {r.text}", flush=True)
        named: Counter[str] = Counter()
        samples = 0
        end = time.monotonic() + minute
        while time.monotonic() < end:
            r = http.get("/readyz")
            samples += 1
            if r.status_code == 503:
                for kind, name in UNHEALTHY.findall(r.text):
                    named[f"{kind} {name}"] += 1
            assert w.d.proc is not None and w.d.proc.poll() is None, "the daemon exited"
            if samples % 5 == 0:
                w.mutate()
            if samples % 10 == 0:  # access tokens revoked before their time, besides the short lifetimes
                w.portal.call(s.asperion.expire_access_tokens)
                w.portal.call(s.horisen.expire_tokens)
            time.sleep(1)
        misbehave(False)
        t_back = time.monotonic()
        last = [""]

        def ready() -> bool:
            r = http.get("/readyz")
            last[0] = r.text
            return r.status_code == 200

        try:
            wait_for(ready, 120, "/readyz to be 200 again", interval=0.5)
        except AssertionError:
            print(f"/readyz still says:\n{last[0]}", file=sys.stderr)
            raise
        recovered = time.monotonic() - t_back
        w.stop_posters()
        r = end_checks(w, t0)
        assert w.d.proc is not None and w.d.proc.pid == pid and w.d.proc.poll() is None, "restarted"
        after = http.get("/metrics").text
        http.close()
        assert w.d.terminate() == 0

        def grew(name: str, **labels: str) -> str:
            return f"{metric_sum(after, name, **labels) - metric_sum(before, name, **labels):,.0f}"

        summary(f"every peer misbehaving for {minute:.0f} s (seed {seed})", [
            ("daemon restarts", "0 (same pid throughout)"),
            ("/readyz samples while misbehaving", str(samples)),
            *[(f"  named unhealthy: {k}", f"{v} of {samples}") for k, v in sorted(named.items())],
            ("recovered to /readyz 200 after the peers did (s)", f"{recovered:.1f}"),
            ("retries (streamd_retries_total)", grew("streamd_retries_total")),
            ("source reconnects / poll retries", grew("streamd_source_reconnects_total")),
            ("API answers 429", grew("streamd_source_requests_total", code="429")),
            ("API answers 500 / 503", f'{grew("streamd_source_requests_total", code="500")} / '
                                      f'{grew("streamd_source_requests_total", code="503")}'),
            ("access tokens granted", grew("streamd_source_token_grants_total")),
            ("payloads rejected to dead letters", grew("streamd_source_events_rejected_total")),
            ("http sink failed attempts", grew("streamd_sink_failures_total", sink="http")),
            ("dead letters", ", ".join(f"{k} {v}" for k, v in sorted(r["dead"].items())) or "0"),
            ("events in the feed (all checks passed)", f"{r['events']:,}"),
            ("http sink redeliveries", str(r["http_redeliveries"])),
            ("webhook answers", ", ".join(f"{k}: {v}" for k, v in sorted(w.posts.items()))),
            ("wall time (s)", f"{r['seconds']:.0f}"),
        ])


def drill_nats(kills: int, events: int, seed: int, keep: str | None) -> None:
    from tests.test_nats_drill import run_drill

    t0 = time.monotonic()
    with TemporaryDirectory(prefix="streamd-drill-nats-") as tmp:
        work = Path(keep or tmp)
        made: list[Streamd] = []

        def make(name: str, config: str) -> Streamd:
            d = Streamd(work / name, config)
            made.append(d)
            return d

        try:
            seen = run_drill(work, make, kills=kills, count=events, rate=1000, seed=seed, say=print)
        finally:
            for d in made:
                d.stop()
    summary(f"NATS: two shards, {kills} SIGKILLs, a NATS node down for a third (seed {seed})", [
        ("events in the two feeds", f"{seen['events']:,}"),
        ("messages in the stream", f"{seen['messages']:,}"),
        ("duplicates / events missing / other messages", "0 / 0 / 0"),
        ("restarts that resumed after the stream's last message (past the SQLite offset)",
         str(seen["resumed_from_stream"])),
        ("wall time (s)", f"{time.monotonic() - t0:.0f}"),
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("drill", choices=["kills", "peers", "nats", "all"])
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--minute", type=float, default=60.0, help="seconds the peers misbehave")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--events", type=int, default=20_000, help="nats: events per shard")
    ap.add_argument("--dir", help="work here (kept) instead of a temp dir")
    args = ap.parse_args()
    # The receiver's server reports each request a SIGKILL cut short; that is the drill, not news.
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
    os.environ.setdefault("STREAMD_LOG_LEVEL", "info")
    if args.drill in ("kills", "all"):
        drill_kills(args.kills, args.seed, args.dir and f"{args.dir}/kills")
    if args.drill in ("peers", "all"):
        drill_peers(args.minute, args.seed, args.dir and f"{args.dir}/peers")
    if args.drill in ("nats", "all"):
        drill_nats(args.kills, args.events, args.seed, args.dir and f"{args.dir}/nats")


if __name__ == "__main__":
    main()
