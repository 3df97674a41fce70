"""The http sink under SIGKILL: a real `streamd run`, killed at random moments, delivering
to a receiver that fails at random (500s, 429 with Retry-After, answers later than the
sink's timeout). At the end the receiver holds every event at least once; an event
received twice came both times in the same request (same idempotency key, same events);
each sink's events were first received in feed order; and no request came sooner than
a 429's Retry-After asked (unless streamd was restarted in between: a new process does
not know).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import pytest

from .conftest import Background, Streamd, wait_for
from .http_receiver import Receiver, Request

KILLS = 10
COUNT = 2400
RATE = 200.0

CONFIG = """
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
rate = {rate}
count = {count}
batch = 20
seed = 17
[sinks.batched]
type = "http"
url = "{url}/batched"
format = "batch"
batch_max = 50
timeout = "500ms"
max_in_flight = 1
backoff = {{ min = "20ms", max = "300ms" }}
[sinks.single]
type = "http"
url = "{url}/single"
format = "single"
match = {{ tenant = ["a"], entity = ["invoice"] }}
batch_max = 50
timeout = "500ms"
max_in_flight = 1
backoff = {{ min = "20ms", max = "300ms" }}
"""


def check_sink(name: str, requests: list[Request], feed: list[str], kills: list[float]) -> None:
    """What one sink's receiving end must hold; `feed` is its events' ids in seq order."""
    accepted = [r for r in requests if r.ok]
    first_seen: dict[str, int] = {}
    keys: dict[str, set[str]] = defaultdict(set)  # event id -> idempotency keys it came with
    batches: dict[str, set[tuple[str, ...]]] = defaultdict(set)  # key -> the events it carried
    for r in accepted:
        key = r.headers["idempotency-key"]
        got = tuple(ce["id"] for ce in r.cloudevents())
        batches[key].add(got)
        for ident in got:
            first_seen.setdefault(ident, len(first_seen))
            keys[ident].add(key)
        if name == "single":
            assert got == (key,), "a single event's key is its id"
    assert set(first_seen) == set(feed), f"{name}: {len(set(feed) - set(first_seen))} events never received"
    assert sorted(first_seen, key=first_seen.__getitem__) == feed, f"{name}: first receipt out of seq order"
    reused = {k: v for k, v in batches.items() if len(v) > 1}
    assert not reused, f"{name}: one idempotency key carried different events"
    split = {i: k for i, k in keys.items() if len(k) > 1}
    assert not split, f"{name}: events delivered under more than one idempotency key"
    for r, after in zip(requests, requests[1:], strict=False):
        # A kill while the 429 was on its way: the next request may come from a new process
        # that never saw it.
        if r.status == 429 and not any(r.at <= k <= after.at for k in kills):
            assert after.at - r.answered >= 0.99, f"{name}: a request {after.at - r.answered:.2f}s " \
                                                    "after a 429 asking for 1s"


@pytest.mark.timeout(120)
def test_sigkill_at_random_moments_with_a_failing_receiver(
        streamd_proc: Callable[..., Streamd], background: Background) -> None:
    rng = random.Random(20261122)
    rx = Receiver()
    rx.knobs.chaos, rx.knobs.chaos_retry_after, rx.knobs.hang, rx.knobs.seed = 0.03, "1", 0.8, 5
    # Windows between a request's arrival and its answer for the kills to hit (the receiver
    # takes the events even if the sender dies meanwhile), long enough for the generator to
    # commit more events behind a partial batch in flight.
    rx.knobs.path_latency = {"/batched": 0.06, "/single": 0.005}
    background.start(rx.serve)
    wait_for(lambda: rx.url, 10, "the receiver")
    d = streamd_proc(CONFIG.format(rate=RATE, count=COUNT, url=rx.url))
    kills: list[float] = []
    busy_kills = 0
    for _ in range(KILLS):
        d.start()
        before = len(rx.requests)
        threading.Event().wait(rng.uniform(0.0, 0.8))  # the random moment
        d.kill()
        kills.append(time.monotonic())
        busy_kills += len(rx.requests) > before

    def generated() -> int:
        rows = d.query("SELECT value FROM source_state WHERE source = 'gen' AND key = 'next'")
        return int(json.loads(rows[0][0])) if rows else 0

    assert 0 < generated() < COUNT, "the kills must come while the generator still runs"
    assert busy_kills >= KILLS // 2, "most kills must interrupt deliveries"

    d.start()

    def feed() -> tuple[list[str], list[str]]:
        rows = d.query("SELECT id, tenant, entity FROM events ORDER BY seq")
        return ([bytes(i).hex() for i, _, _ in rows],
                [bytes(i).hex() for i, t, e in rows if t == "a" and e == "invoice"])

    def delivered() -> bool:
        if generated() < COUNT:
            return False
        every, matched = feed()
        return ({ce["id"] for ce in rx.events("/batched")} >= set(every)
                and {ce["id"] for ce in rx.events("/single")} >= set(matched))

    wait_for(delivered, 60, "every event at the receiver", interval=0.2)
    assert d.terminate() == 0
    every, matched = feed()
    assert len(every) == COUNT
    requests = list(rx.requests)
    for name, ids in (("batched", every), ("single", matched)):
        check_sink(name, [r for r in requests if r.path == f"/{name}"], ids, kills)
    whys = {r.why for r in requests}
    assert {"chaos-500", "chaos-429", "chaos-hang"} <= whys, "the receiver must have failed every way"
