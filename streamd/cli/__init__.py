"""`streamd` on the command line: run, check, auth, tail, status, dlq, deletions, sink, demo.

Exit codes: 0 ok; 1 the store is unusable or the daemon cannot start; 2 bad usage;
78 (EX_CONFIG) the config is refused — systemd's unit does not restart on 78.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading

from .. import __version__
from ..config import Config
from ..errors import EX_FAILURE, StartupError, StoreError
from ..escape import escape
from ..secrets import redact
from .common import load_config

log = logging.getLogger("streamd")


def _finish(code: int) -> int:
    """A sink thread wedged in a blocking write (a dead NFS mount, a FIFO nobody reads)
    must not keep the process alive after the daemon has stopped."""
    sys.stdout.flush()
    sys.stderr.flush()
    if threading.active_count() > 1:
        logging.shutdown()
        os._exit(code)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    import anyio

    from .. import logs
    from ..daemon import Daemon

    cfg = load_config(args.config)
    logs.setup(cfg.daemon.log_level, cfg.daemon.log_format)

    async def main() -> None:
        await Daemon(cfg, freeze_gc=True).run()

    try:
        anyio.run(main)
    except StoreError as exc:
        log.critical("store unusable, stopping: %s", exc)
        return _finish(EX_FAILURE)
    except StartupError as exc:
        log.critical("cannot start: %s", exc)
        return _finish(EX_FAILURE)
    except KeyboardInterrupt:
        return _finish(130)
    log.info("stopped")
    return _finish(0)


def warnings(cfg: Config) -> list[str]:
    """What the config allows but `check` points out (e.g. an http sink's allow_http)."""
    from ..sinks import sink_spec

    return [f"sinks.{name}.{w}" for name, s in cfg.sinks.items() for w in sink_spec(s.type).warnings(s)]


def cmd_check(args: argparse.Namespace) -> int:
    from ..configfile import render

    cfg = load_config(args.config)
    print(f"{escape(cfg.origin)}: ok ({len(cfg.sources)} sources, {len(cfg.sinks)} sinks)")
    for warning in [*config_warnings(cfg), *warnings(cfg)]:
        print(f"streamd: warning: {escape(redact(warning))}", file=sys.stderr)
    if not args.quiet:
        print(render(cfg))
    return 0


def config_warnings(cfg: Config) -> list[str]:
    """What a valid config had better not do."""
    from ..providers import provider_spec

    keepers = [name for name, src in cfg.sources.items() if provider_spec(src.provider).keeps_credentials]
    if keepers and cfg.store.secrets_key is None:
        which = (f"source {keepers[0]} keeps" if len(keepers) == 1
                 else f"sources {', '.join(keepers)} keep")
        return [f"[store] secrets_key is not set: the tokens {which} in {cfg.store.path} are "
                "stored in clear, there and in every copy of it (docs/operations.md, \"Backups\")"]
    return []


def build_parser() -> argparse.ArgumentParser:
    from . import auth, deletions, demo, dlq, sink, status, tail

    p = argparse.ArgumentParser(prog="streamd", description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--version", action="version", version=f"streamd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("-c", "--config", help="config file (default: $STREAMD_CONFIG, "
                        "$CONFIGURATION_DIRECTORY/config.toml, ./config.toml, /etc/streamd/config.toml)")
        return sp

    sp = with_config(sub.add_parser("run", help="run the daemon"))
    sp.set_defaults(func=cmd_run)
    sp = with_config(sub.add_parser("check", help="validate the config and print it, secrets redacted"))
    sp.add_argument("-q", "--quiet", action="store_true", help="only say whether it is valid")
    sp.set_defaults(func=cmd_check)
    auth.add_parser(sub, with_config)
    tail.add_parser(sub, with_config)
    status.add_parser(sub, with_config)
    dlq.add_parser(sub, with_config)
    deletions.add_parser(sub, with_config)
    sink.add_parser(sub, with_config)
    demo.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
