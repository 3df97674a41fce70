"""What the commands share: loading the config, finding the feed, filters, time arguments,
feed lines for a terminal. The subcommands import it, never the package `cli`, which
imports them."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from ..config import Config, Match, StoreConfig
from ..errors import EX_CONFIG, ConfigError
from ..escape import escape, escape_json
from ..secrets import redact
from ..units import Duration


def default_config() -> str:
    """--config, else $STREAMD_CONFIG, else systemd's $CONFIGURATION_DIRECTORY/config.toml,
    else ./config.toml, else /etc/streamd/config.toml."""
    if os.environ.get("STREAMD_CONFIG"):
        return os.environ["STREAMD_CONFIG"]
    if os.environ.get("CONFIGURATION_DIRECTORY"):
        return str(Path(os.environ["CONFIGURATION_DIRECTORY"].split(":")[0]) / "config.toml")
    if Path("config.toml").exists():
        return "config.toml"
    return "/etc/streamd/config.toml"


def load_config(path: str | None) -> Config:
    """Load the config or exit 78, printing every problem with its key path. A problem
    may quote a value: it is printed redacted (URLs, key material) and escaped."""
    # Imported here: loading consults every provider and sink kind, which a command that
    # reads no config (`tail --db`, `--help`) should not pay for.
    from ..configfile import load

    target = path or default_config()
    try:
        return load(target)
    except ConfigError as exc:
        print(f"streamd: config {escape(target)} refused:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {escape(redact(problem))}", file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None


def store_config(args: argparse.Namespace) -> StoreConfig:
    """--db PATH wins; else the [store] of the config."""
    if getattr(args, "db", None):
        return StoreConfig(path=args.db)
    return load_config(args.config).store


def add_db(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--db", help="the feed database (instead of reading it from the config)")


def add_filters(sp: argparse.ArgumentParser) -> None:
    for flag, what in (("provider", "provider"), ("entity", "entity"),
                       ("type", "event type, e.g. invoice.created or 'invoice.*'"),
                       ("tenant", "tenant"), ("source", "source name")):
        sp.add_argument(f"--{flag}", action="append", default=[], metavar=flag.upper(),
                        help=f"only this {what} (repeat for several; globs allowed)")
    sp.add_argument("--forecast", choices=("yes", "no"), default=None,
                    help="no: leave out forecast invoices; yes: only those")


def match_from(args: argparse.Namespace) -> Match:
    forecast = getattr(args, "forecast", None)
    return Match(provider=args.provider, entity=args.entity, type=args.type, tenant=args.tenant,
                 source=args.source, forecast=None if forecast is None else forecast == "yes")



def parse_since(text: str, now: float | None = None) -> int:
    """An RFC 3339 time ("2026-11-21T10:00:00Z") or a duration ago ("15m"): unix ms."""
    if re.match(r"^\d{4}-\d{2}-\d{2}", text):
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        return int(t.timestamp() * 1000)
    ago = Duration.parse(text).seconds
    return int(((now if now is not None else time.time()) - ago) * 1000)


def fmt_ms(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def for_terminal(line: bytes) -> bytes:
    """A feed line as `tail` shows it on a terminal: anything beyond printable ASCII escaped."""
    if line.isascii() and b"\x7f" not in line:
        return line
    return escape_json(line.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
