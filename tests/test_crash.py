"""Crash safety: a real streamd process, fed two ways, SIGKILLed at random moments.

Fed by (a) its generator, whose progress commits with the events it produced, and
(b) webhook posters, who count an event as acknowledged only on a 2xx. After every
restart: every acknowledged event is in the feed exactly once, the generator's
events are exactly those its committed progress says, and no seq ever changes its
event. At the end the file sink holds every event once, in seq order.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import httpx
import pytest

from streamd.providers.synthetic import normalize, wire

from .conftest import Streamd, feed_lines, wait_for

KILLS = 22
RATE = 2000.0
TOKEN = "crash-test-token"

CONFIG = f"""
[store]
path = "feed.db"
commit_linger = "1ms"
[http]
listen = "127.0.0.1:0"
[daemon]
shutdown_timeout = "20s"
[sources.gen]
provider = "synthetic"
tenants = ["a", "b", "c"]
rate = {RATE}
batch = 25
seed = 11
[sources.hook]
provider = "synthetic"
generate = false
webhook = true
token = "env:CRASH_HOOK_TOKEN"
[sinks.file]
type = "file"
path = "out/feed.jsonl"
rotate_bytes = "1MiB"
keep = 1000
batch_max = 200
"""


class Poster(threading.Thread):
    """Posts batches of 5 records until the daemon dies; remembers what got a 2xx."""

    def __init__(self, url: str, start_n: int, tenant: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.n = start_n
        self.tenant = tenant
        self.acked: set[str] = set()
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        epoch = datetime(2026, 1, 1)
        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                body = b"[" + b",".join(wire.record(99, self.n + i, [self.tenant], epoch)
                                         for i in range(5)) + b"]"
                try:
                    r = client.post(f"{self.url}/webhooks/hook", content=body, headers={
                        "content-type": "application/json", "authorization": f"Bearer {TOKEN}"})
                except httpx.HTTPError:
                    return  # the daemon is gone; an unanswered post was never acknowledged
                if r.status_code == 200:
                    self.acked.update(r.json()["ids"])
                self.n += 5
                self.sent += 1


def feed(d: Streamd) -> dict[int, str]:
    return {seq: bytes(i).hex() for seq, i in d.query("SELECT seq, id FROM events")}


def generator_expectation(d: Streamd) -> set[str]:
    rows = d.query("SELECT value FROM source_state WHERE source = 'gen' AND key IN ('next', 'epoch')"
                   " ORDER BY key")
    if not rows:
        return set()
    epoch = datetime.fromisoformat(json.loads(rows[0][0]))
    n = json.loads(rows[1][0])
    step = timedelta(seconds=1 / RATE)
    return {normalize.normalize(wire.record(11, i, ["a", "b", "c"], epoch, step=step), source="gen",
                                received_at=epoch).id for i in range(n)}


@pytest.mark.timeout(420)
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
        streamd_proc: Callable[..., Streamd]) -> None:
    rng = random.Random(20261121)
    d = streamd_proc(CONFIG, env={"CRASH_HOOK_TOKEN": TOKEN})
    acked: set[str] = set()
    seen: dict[int, str] = {}
    next_n = 0
    for kill in range(KILLS):
        d.start()
        posters = [Poster(d.url, next_n + 100_000 * k, f"hook{k}") for k in range(2)]
        for p in posters:
            p.start()
        wait_for(lambda posters=posters: all(p.sent > 0 for p in posters), 20,  # type: ignore[misc]
                 "posters to get answers")
        # the random moment: anywhere in the next 0-400 ms of a busy daemon
        threading.Event().wait(rng.uniform(0.0, 0.4))
        d.kill()
        for p in posters:
            p.stop.set()
            p.join(10)
            acked |= p.acked
        next_n = max(p.n for p in posters) + 1_000_000 * (kill + 1)

        now = feed(d)
        ids = list(now.values())
        assert len(ids) == len(set(ids)), f"kill {kill}: an id appears twice in the feed"
        missing = acked - set(ids)
        assert not missing, f"kill {kill}: {len(missing)} acknowledged events lost"
        changed = {s for s, i in seen.items() if now.get(s) != i}
        assert not changed, f"kill {kill}: seqs {sorted(changed)[:5]} changed or vanished"
        gen_ids = {i for (i,) in [(bytes(x).hex(),) for (x,) in d.query(
            "SELECT id FROM events WHERE source = 'gen'")]}
        assert gen_ids == generator_expectation(d), f"kill {kill}: generator progress and events disagree"
        seen = now

    assert len(acked) > 200 and len(seen) > 2000, "the drill must actually have fed the daemon"
    # A clean run to the end: SIGTERM drains the file sink up to the final head.
    d.start()
    wait_for(lambda: d.query("SELECT count(*) FROM sink_offsets") == [(1,)], 20, "a first delivery")
    assert d.terminate() == 0
    out = d.dir / "out" / "feed.jsonl"
    final = feed(d)
    lines = [json.loads(line) for line in feed_lines(out)]
    seqs = [x["seq"] for x in lines]
    assert seqs == sorted(final), ("the file sink holds every event once, in seq order; the last "
                                   f"run's log ends:\n{d.log()[-4000:]}")
    assert all(final[x["seq"]] == x["id"] for x in lines)
    assert acked <= {x["id"] for x in lines}


def test_a_webhook_answered_2xx_survives_an_immediate_sigkill(
        streamd_proc: Callable[..., Streamd]) -> None:
    d = streamd_proc(CONFIG.replace("rate = 2000.0", "generate = false"),
                     env={"CRASH_HOOK_TOKEN": TOKEN})
    d.start()
    body = b"[" + b",".join(wire.record(5, i, ["t"], datetime(2026, 1, 1)) for i in range(50)) + b"]"
    r = httpx.post(f"{d.url}/webhooks/hook", content=body, timeout=10, headers={
        "content-type": "application/json", "authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    d.kill()
    db = sqlite3.connect(d.db)
    try:
        stored = {bytes(i).hex() for (i,) in db.execute("SELECT id FROM events")}
    finally:
        db.close()
    assert set(r.json()["ids"]) <= stored
