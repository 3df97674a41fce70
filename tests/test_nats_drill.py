"""The scale-out drill: two `streamd run` shards publish into one R3 JetStream stream on a
real three-node NATS cluster whose dedupe window is 1 s, while each shard is SIGKILLed
several times at random moments and one NATS node is killed and started again. Then the
whole stream is read back with nats-py: every event of both feeds exactly once, its
`Nats-Msg-Id` its CloudEvent id, its body its feed line, and nothing else.

`run_drill` is also the long drill (`python bench/drills.py nats`).
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .conftest import Streamd, wait_for
from .nats_cluster import NatsCluster, read_stream

CONFIG = """
[store]
path = "feed.db"
commit_linger = "1ms"
[http]
listen = "127.0.0.1:0"
[daemon]
shard = "{shard}"
shutdown_timeout = "20s"
[sources.gen]
provider = "synthetic"
tenants = {tenants}
rate = {rate}
count = {count}
batch = 20
seed = {seed}
[sinks.fin]
type = "nats"
servers = {servers}
stream = "FIN"
subject = "fin.{{tenant}}.{{entity}}"
create = true
replicas = 3
duplicate_window = "1s"
timeout = "2s"
batch_max = 200
backoff = {{ min = "50ms", max = "500ms" }}
"""


def _head(d: Streamd) -> int:
    if not d.db.exists():
        return 0
    rows = d.query("SELECT coalesce(max(seq), 0) FROM events")
    return int(rows[0][0])


def _offset(d: Streamd) -> int:
    rows = d.query("SELECT seq FROM sink_offsets WHERE sink = 'fin'")
    return int(rows[0][0]) if rows else 0


def _generated(d: Streamd) -> int:
    rows = d.query("SELECT value FROM source_state WHERE source = 'gen' AND key = 'next'")
    return int(json.loads(bytes(rows[0][0]))) if rows else 0


def run_drill(workdir: Path, make: Callable[[str, str], Streamd], *, kills: int, count: int,
              rate: float, seed: int, say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Returns what it saw; raises AssertionError on the first broken promise."""
    rng = random.Random(seed)
    with NatsCluster(workdir / "nats", nodes=3) as nats:
        shards = {}
        for i, name in enumerate(("shard-a", "shard-b")):
            shards[name] = make(name, CONFIG.format(
                shard=name, tenants=json.dumps([f"{name}-t1", f"{name}-t2"]), rate=rate, count=count,
                seed=seed + i, servers=json.dumps(nats.urls)))
            shards[name].start()
        down: int | None = None
        for k in range(kills):
            d = shards["shard-a" if k % 2 == 0 else "shard-b"]
            # A random moment: after this shard committed a few more of its events.
            target = min(_head(d) + rng.randint(20, max(count // (kills + 2), 21)), count)
            wait_for(lambda d=d, target=target: _head(d) >= target or _generated(d) >= count, 60,
                     "the shard to commit more events")
            d.kill()
            if k == kills // 3:
                down = rng.randrange(3)
                nats.kill(down)
                say(f"  NATS node n{down} killed")
            elif down is not None and k == 2 * kills // 3:
                nats.start(down)
                say(f"  NATS node n{down} started again")
                down = None
            d.start()
            say(f"  kill {k + 1}/{kills}: {d.dir.name} at feed seq {_head(d)}")
        if down is not None:
            nats.start(down)
        for d in shards.values():
            wait_for(lambda d=d: _generated(d) >= count and _offset(d) >= _head(d) > 0, 120,
                     f"{d.dir.name} to publish its whole feed")
            assert d.terminate() == 0, d.log()
        messages = read_stream(nats.urls, "FIN")
    expected: dict[str, bytes] = {}
    for d in shards.values():
        for ident, line in _feed(d):
            expected[ident] = line
    ids = [m.headers.get("Nats-Msg-Id") for m in messages]
    dupes = len(ids) - len(set(ids))
    assert dupes == 0, f"{dupes} events are in the stream more than once"
    assert len(messages) == len(expected), \
        f"{len(messages)} messages in the stream, {len(expected)} events in the feeds"
    for m in messages:
        ident = m.headers["Nats-Msg-Id"]
        assert ident in expected, f"message {m.seq} ({ident}) is no feed event"
        assert m.body + b"\n" == expected[ident], f"message {m.seq} is not its feed line"
        assert json.loads(m.body)["id"] == ident
    # How often a restart found its shard's events in the stream beyond its SQLite offset
    # (killed between JetStream's ack and the offset's commit): resumed after them.
    resumed = sum(log.read_text(errors="replace").count("already holds events up to seq")
                  for d in shards.values() for log in d.dir.glob("log*.txt"))
    return {"events": len(expected), "messages": len(messages), "kills": kills,
            "resumed_from_stream": resumed}


def _feed(d: Streamd) -> list[tuple[str, bytes]]:
    """(id, feed line) of every event, as streamd renders them."""
    from streamd.store.reader import _row_to_event

    db = sqlite3.connect(d.db)
    try:
        rows = db.execute("SELECT seq, id, source, provider, tenant, entity, op, key, time, received,"
                          " data FROM events ORDER BY seq").fetchall()
    finally:
        db.close()
    return [(e.id, e.line) for e in map(_row_to_event, rows)]


def test_two_shards_sigkilled_and_a_nats_node_restarted_publish_every_event_once(
        tmp_path: Path) -> None:
    made: list[Streamd] = []

    def make(name: str, config: str) -> Streamd:
        d = Streamd(tmp_path / name, config)
        made.append(d)
        return d

    t0 = time.monotonic()
    try:
        seen = run_drill(tmp_path, make, kills=6, count=2500, rate=400, seed=5)
    finally:
        for d in made:
            d.stop()
    assert seen["events"] == 5000, seen
    assert time.monotonic() - t0 < 60
