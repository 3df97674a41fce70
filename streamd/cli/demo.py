"""`streamd demo`: the real daemon on loopback against streamd's built-in simulators,
in a temp dir, with zero configuration. Prints the live feed on stdout; on exit
(Ctrl-C, or --duration), a summary per provider and per sink on stderr.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

from .. import logs
from ..config import parse
from ..daemon import Daemon
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

[sources.demo]
provider = "synthetic"
tenants = ["acme", "globex"]
rate = {rate}
reject_every = 40
webhook = true

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
    sp.add_argument("--rate", type=float, default=5.0, help="synthetic events per second")
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
    _say("\n--- streamd demo summary")
    by_provider: dict[str, list[str]] = {}
    totals: dict[str, int] = {}
    for provider, entity, n in rows:
        by_provider.setdefault(provider, []).append(f"{entity} {n}")
        totals[provider] = totals.get(provider, 0) + n
    for provider, parts in sorted(by_provider.items()):
        dl = sum(c for (o, name), c in dead.items() if o == "source"
                 and daemon.cfg.sources.get(name) and daemon.cfg.sources[name].provider == provider)
        _say(f"provider {provider:<10} {totals[provider]:>6} events ({', '.join(parts)}); "
             f"{dl} dead letters")
    for name in daemon.cfg.sinks:
        off = offsets.get(name, 0)
        _say(f"sink     {name:<10} delivered up to seq {off}, lag {head - off}")


async def _main(args: argparse.Namespace, workdir: Path) -> None:
    cfg = parse(DEMO_CONFIG.replace("{rate}", repr(float(args.rate))), origin="<demo>",
                base_dir=workdir)
    logs.setup(cfg.daemon.log_level)
    daemon = Daemon(cfg)
    async with anyio.create_task_group() as tg:
        async def banner() -> None:
            await daemon.ready.wait()
            assert daemon.web is not None and daemon.web.address is not None
            host, port = daemon.web.address
            _say(f"streamd demo: feed {workdir / 'feed.db'}, file sink {workdir / 'feed.jsonl'}")
            _say(f"  metrics http://{host}:{port}/metrics   readiness http://{host}:{port}/readyz")
            _say(f"  in another shell: streamd tail --db {workdir / 'feed.db'} -f --type 'invoice.*'")
            _say("  Ctrl-C stops (a summary follows)\n")
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
