"""`streamd demo`: the real daemon on loopback against streamd's built-in simulators,
in a temp dir, with zero configuration. Prints the live feed on stdout; on exit
(Ctrl-C, or --duration), a summary per provider and per sink on stderr.

Today: the Asteria partner gateway (websocket over mutual TLS with throwaway
certificates, plus its webhook delivering some of the same changes again),
Asperion's API (HTTPS, OAuth2 with rotating refresh tokens), polled every 10
seconds while its records change, and HORISEN's documents export with traffic
reports (OAuth2 client credentials), polled every 10 seconds while invoices are
issued and paid; and Maestrano Connec!, whose notifications arrive on the daemon's
listener every few seconds while its poller lists what changed.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import httpx

from .. import logs
from ..config import parse
from ..daemon import Daemon
from ..providers.asperion import simulator as asperion_sim
from ..providers.asperion.oauth import TokenState, save
from ..providers.asteria.simulator import AsteriaSimulator, Knobs, send_webhooks, simulator
from ..providers.connec import simulator as connec_sim
from ..providers.horisen import simulator as horisen_sim
from ..store import FeedReader

DEMO_CONFIG = """
[store]
path = "feed.db"
retention = "1d"

[http]
listen = "127.0.0.1:0"

[daemon]
shutdown_timeout = "10s"
log_level = "warning"

{source}
[sinks.stdout]
type = "stdout"

[sinks.file]
type = "file"
path = "feed.jsonl"
rotate_bytes = "1MiB"
"""


def add_parser(sub: Any) -> None:
    sp = sub.add_parser("demo", help="run streamd against its built-in simulators, zero config")
    sp.add_argument("--duration", type=float, default=0.0, metavar="SECONDS",
                    help="stop after this long (default: run until Ctrl-C)")
    sp.add_argument("--rate", type=float, default=10.0, help="events per second from each simulator")
    sp.add_argument("--dir", help="keep the demo's files here instead of a temp dir")
    sp.set_defaults(func=run)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _summary(daemon: Daemon) -> None:
    reader = await FeedReader.open(daemon.cfg.store)
    try:
        rows = await reader.counts()
        dead = await reader.dead_letter_counts()
        offsets = await reader.offsets()
        head = await reader.head()
    finally:
        await reader.close()
    sample = daemon.metrics.registry.get_sample_value
    _say("\n--- streamd demo summary")
    by_provider: dict[str, list[str]] = {}
    totals: dict[str, int] = {}
    for provider, entity, n in rows:
        by_provider.setdefault(provider, []).append(f"{entity} {n}")
        totals[provider] = totals.get(provider, 0) + n
    for provider, parts in sorted(by_provider.items()):
        names = [n for n, s in daemon.cfg.sources.items() if s.provider == provider]
        dl = sum(c for (o, name), c in dead.items() if o == "source" and name in names)
        dups = sum(sample("streamd_source_events_duplicate_total", {"source": n}) or 0 for n in names)
        _say(f"provider {provider:<10} {totals[provider]:>6} events ({', '.join(parts)}); "
             f"{dups:.0f} duplicates dropped; {dl} dead letters")
    for name in daemon.cfg.sinks:
        off = offsets.get(name, 0)
        _say(f"sink     {name:<10} delivered up to seq {off}, lag {head - off}")


async def _webhooks(daemon: Daemon, sim: AsteriaSimulator, secret: str) -> None:
    """Every few seconds, Asteria's webhook delivers a change the websocket already brought:
    the feed keeps one copy (the summary counts the duplicates dropped)."""
    assert daemon.web is not None and daemon.web.address is not None
    host, port = daemon.web.address
    url = f"http://{host}:{port}/webhooks/asteria"
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            await anyio.sleep(3)
            if sim.sent:
                await send_webhooks(url, [sim.sent[-1]], header="x-streamd-webhook-secret",
                                    secret=secret, client=http)


async def _asperion_changes(sim: asperion_sim.AsperionSimulator) -> None:
    """An Asperion user at work: every few seconds a debtor, invoice or article is added,
    changed (an invoice paid) or removed; the next poll turns that into events."""
    while True:
        await anyio.sleep(4)
        sim.mutate(1, 2, 1)


async def _horisen_changes(sim: horisen_sim.HorisenSimulator) -> None:
    """A platform at work: every few seconds an invoice is issued and an open one is paid."""
    while True:
        await anyio.sleep(6)
        sim.mutate(new=1, paid=1 if any(d["paymentStatus"] == "open" and d["status"] == "approved"
                                         for d in sim.documents().values()) else 0)


async def _connec_changes(daemon: Daemon, sim: connec_sim.ConnecSimulator) -> None:
    """A Maestrano customer at work: every few seconds an entity is created and another
    changed, and Maestrano's webhook tells streamd (the poller sees the same versions)."""
    assert daemon.web is not None and daemon.web.address is not None
    host, port = daemon.web.address
    url = f"http://{host}:{port}/maestrano/connec/notifications"
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            await anyio.sleep(5)
            await connec_sim.notify(sim, url, sim.mutate(created=1, updated=1), client=http)


async def _main(args: argparse.Namespace, workdir: Path) -> None:
    sim = simulator(workdir / "certs", Knobs(count=0, rate=args.rate, drop_every=400, replay=10,
                                             malformed_every=149, unknown_every=211,
                                             client_id="streamd-demo", stamp_now=True))
    secret = secrets.token_urlsafe(24)
    os.environ["STREAMD_DEMO_WEBHOOK_SECRET"] = secret
    asperion = asperion_sim.simulator(workdir / "asperion", asperion_sim.Knobs(records=10))
    horisen = horisen_sim.simulator(workdir / "horisen", horisen_sim.Knobs(days=5, documents_per_day=4))
    connec = connec_sim.simulator(workdir / "connec", connec_sim.Knobs(entities=3))
    async with anyio.create_task_group() as tg:
        url = await tg.start(sim.serve)
        await tg.start(asperion.serve)
        await tg.start(horisen.serve)
        await tg.start(connec.serve)
        source = sim.source_toml("asteria", webhook_secret='"env:STREAMD_DEMO_WEBHOOK_SECRET"',
                                 backoff='{ min = "200ms", max = "5s" }')
        source += "\n" + asperion.source_toml("asperion", interval='"10s"',
                                              backoff='{ min = "200ms", max = "5s" }')
        source += "\n" + horisen.source_toml("horisen", interval='"10s"',
                                             backoff='{ min = "200ms", max = "5s" }')
        source += "\n" + connec.source_toml("connec", interval='"10s"',
                                            backoff='{ min = "200ms", max = "5s" }')
        cfg = parse(DEMO_CONFIG.format(source=source), origin="<demo>", base_dir=workdir)
        # What `streamd auth asperion` would leave behind after signing in.
        await save(cfg.store, "asperion", TokenState(refresh_token=asperion.issue_refresh_token()))
        logs.setup(cfg.daemon.log_level)
        daemon = Daemon(cfg)

        async def banner() -> None:
            await daemon.ready.wait()
            assert daemon.web is not None and daemon.web.address is not None
            host, port = daemon.web.address
            _say(f"streamd demo: the Asteria gateway simulator at {url} (mutual TLS, throwaway CA in "
                 f"{workdir / 'certs'})")
            _say(f"  the Asperion API simulator at {asperion.base_url} (OAuth2, TLS 1.3), polled every 10s")
            _say(f"  the HORISEN API simulator at {horisen.api_url} (client credentials), polled every 10s")
            _say(f"  the Connec! API simulator at {connec.api_url}; its webhooks post to "
                 f"http://{host}:{port}/maestrano/connec/notifications")
            _say(f"  feed {workdir / 'feed.db'}; file sink {workdir / 'feed.jsonl'}")
            _say(f"  metrics http://{host}:{port}/metrics   readiness http://{host}:{port}/readyz")
            _say(f"  in another shell: streamd tail --db {workdir / 'feed.db'} -f --type 'invoice.*'")
            _say("  Ctrl-C stops (a summary follows)\n")
            tg.start_soon(_webhooks, daemon, sim, secret)
            tg.start_soon(_asperion_changes, asperion)
            tg.start_soon(_horisen_changes, horisen)
            tg.start_soon(_connec_changes, daemon, connec)
            if args.duration:
                await anyio.sleep(args.duration)
                daemon.request_stop()

        tg.start_soon(banner)
        await daemon.run()
        tg.cancel_scope.cancel()
    await _summary(daemon)


def run(args: argparse.Namespace) -> int:
    logging.getLogger().setLevel(logging.WARNING)
    # `streamd demo | head` ends the demo, as a broken pipe ends any Unix filter.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if args.dir:
        workdir = Path(args.dir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        anyio.run(_main, args, workdir)
        return 0
    with tempfile.TemporaryDirectory(prefix="streamd-demo-") as tmp:
        anyio.run(_main, args, Path(tmp))
    return 0
