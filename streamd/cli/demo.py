"""`streamd demo`: the real daemon on loopback against streamd's built-in simulators,
in a temp dir, with zero configuration. Prints the live feed on stdout; on exit
(Ctrl-C, or --duration), a summary per provider and per sink on stderr.

The sources: every provider whose spec has a `demo` hook, each under its own name
(`DemoPart` in `sources/base.py`): its simulator, its source table, and its platform at
work while the demo runs, in the provider's `demo.py`. This module names no provider:
a new provider joins the demo with its hook.

The sinks, every kind streamd has: stdout (the live feed), a JSONL file, `http` to
a built-in webhook receiver (plain HTTP on loopback, requests signed the Standard
Webhooks way and checked), and `sftp` to a built-in SFTP server (asyncssh, public-key
auth with throwaway keys, host key pinned in a known_hosts file) that receives the
documents an ERP books of HORISEN's invoices as XML files (streamd.demo). The summary
gives per provider the events by entity, duplicates dropped and dead letters; per sink
the events delivered, its offset and lag, and what the receiver and the server got.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import secrets
import select
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from .. import logs
from ..configfile import parse
from ..daemon import Daemon
from ..providers import PROVIDERS, provider_spec
from ..secrets import Secret
from ..sources import DemoPart, DemoSetup
from ..store import FeedReader

if TYPE_CHECKING:  # imported when the demo runs: asyncssh would slow every command's start
    from ..demo.receiver import DemoReceiver
    from ..demo.sftp import DemoSftpServer

def _secrets_key(path: Path) -> None:
    """A random [store] secrets_key for the demo's feed (kept with `--dir`), 0600 from birth."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(os.urandom(32)).decode() + "\n")


DEMO_CONFIG = """
[store]
path = "feed.db"
retention = "1d"
# Asperion's rotating tokens are sealed at rest, as they should be in production.
secrets_key = "file:secrets.key"

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

{sinks}"""


def add_parser(sub: Any) -> None:
    sp = sub.add_parser("demo", help="run streamd against its built-in simulators, zero config")
    sp.add_argument("--duration", type=float, default=0.0, metavar="SECONDS",
                    help="stop after this long (default: run until Ctrl-C)")
    sp.add_argument("--rate", type=float, default=10.0, help="events per second from each simulator")
    sp.add_argument("--dir", help="keep the demo's files here instead of a temp dir")
    sp.set_defaults(func=run)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _summary(daemon: Daemon, receiver: DemoReceiver, sftp: DemoSftpServer) -> None:
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
    for name, sink in daemon.cfg.sinks.items():
        off = offsets.get(name, 0)
        delivered = sample("streamd_sink_events_delivered_total", {"sink": name}) or 0
        line = f"sink     {name:<10} {delivered:>6.0f} delivered (up to seq {off}), lag {head - off}"
        if dead.get(("sink", name)):
            line += f"; {dead[('sink', name)]} dead letters"
        if sink.type == "http":
            line += (f"; receiver: {receiver.requests} requests, {len(receiver.ids)} events, "
                     f"{receiver.redeliveries} redeliveries, {receiver.bad_signatures} bad signatures")
        elif sink.type == "sftp":
            line += f"; server: {len(sftp.files())} XML files"
        _say(line)


def _reader_gone(fd: int) -> bool:
    """Whether `fd` is a pipe whose reader closed it (`streamd demo | head`, after its lines):
    Linux reports POLLERR for it even when no event was asked for."""
    poller = select.poll()
    poller.register(fd, 0)
    return bool(poller.poll(0))


async def _stop_when_stdout_closes(daemon: Daemon) -> None:
    """`streamd demo | head` ends the demo, as a broken pipe ends any Unix filter; but not by
    SIGPIPE's default action, which would kill it as well for a write to any of its sockets
    that a peer closed (an everyday event while it stops). A closed stdout or stderr is
    pointed at /dev/null instead (the summary then still reaches a terminal on the other)."""
    while True:
        gone = [fd for fd in (1, 2) if _reader_gone(fd)]
        if gone:
            null = os.open(os.devnull, os.O_WRONLY)
            for fd in gone:
                os.dup2(null, fd)
            os.close(null)
            if 1 in gone:
                daemon.request_stop()
                return
        await anyio.sleep(0.1)


SOURCE_BACKOFF = '{ min = "200ms", max = "5s" }'  # a simulator restarting is back at once


async def _main(args: argparse.Namespace, workdir: Path) -> None:
    from ..demo.receiver import DemoReceiver
    from ..demo.sftp import DemoSftpServer

    parts: dict[str, DemoPart] = {}
    for provider in PROVIDERS:
        make = provider_spec(provider).demo
        if make is not None:
            parts[provider] = make(DemoSetup(name=provider, directory=workdir, rate=args.rate))
    os.environ["STREAMD_DEMO_SIGNING_SECRET"] = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    signing = Secret.resolve("env:STREAMD_DEMO_SIGNING_SECRET")
    receiver = DemoReceiver(signing)  # checks the signature the http sink makes with it
    sftp = DemoSftpServer(workdir / "sftp")
    async with anyio.create_task_group() as tg:
        for part in parts.values():
            await tg.start(part.serve)
        await tg.start(receiver.serve)
        await tg.start(sftp.serve)
        source = "\n".join(part.source_toml(SOURCE_BACKOFF) for part in parts.values())
        sinks = receiver.sink_toml("http", signing_secret=json.dumps(signing.reference),
                                   batch_linger='"250ms"')
        sinks += "\n" + sftp.sink_toml("sftp")
        await anyio.to_thread.run_sync(_secrets_key, workdir / "secrets.key")
        cfg = parse(DEMO_CONFIG.format(source=source, sinks=sinks), origin="<demo>", base_dir=workdir)
        for part in parts.values():
            await part.prepare(cfg.store)
        logs.setup(cfg.daemon.log_level)
        daemon = Daemon(cfg)

        async def banner() -> None:
            await daemon.ready.wait()
            assert daemon.web is not None and daemon.web.address is not None
            host, port = daemon.web.address
            listener = f"http://{host}:{port}"
            lines = [line for part in parts.values() for line in part.banner(listener)]
            for i, line in enumerate(lines):
                _say(f"streamd demo: {line}" if i == 0 else f"  {line}")
            _say(f"  feed {workdir / 'feed.db'}; file sink {workdir / 'feed.jsonl'}")
            _say(f"  http sink: CloudEvents batches, signed, to the demo's receiver at {receiver.endpoint}")
            _say(f"  sftp sink: HORISEN invoices as XML documents for an ERP to the demo's SFTP server at "
                 f"{sftp.url}")
            _say(f"    (public-key auth, host key in {sftp.known_hosts}); the files land in {sftp.local_dir}")
            _say(f"  metrics {listener}/metrics   readiness {listener}/readyz")
            _say(f"  in another shell: streamd tail --db {workdir / 'feed.db'} -f --type 'invoice.*'")
            _say("  Ctrl-C stops (a summary follows)\n")
            for part in parts.values():
                tg.start_soon(part.activity, listener)
            if args.duration:
                await anyio.sleep(args.duration)
                daemon.request_stop()

        tg.start_soon(banner)
        tg.start_soon(_stop_when_stdout_closes, daemon)
        await daemon.run()
        tg.cancel_scope.cancel()
    await _summary(daemon, receiver, sftp)


def run(args: argparse.Namespace) -> int:
    logging.getLogger().setLevel(logging.WARNING)
    try:
        if args.dir:
            workdir = Path(args.dir).resolve()
            workdir.mkdir(parents=True, exist_ok=True)
            anyio.run(_main, args, workdir)
            return 0
        with tempfile.TemporaryDirectory(prefix="streamd-demo-") as tmp:
            anyio.run(_main, args, Path(tmp))
    except KeyboardInterrupt:  # Ctrl-C while starting, before the daemon handles signals
        _say("streamd demo: interrupted while starting")
        return 130
    return 0
