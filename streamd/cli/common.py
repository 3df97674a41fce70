"""What the read-only commands share: finding the feed, filters, time arguments."""

from __future__ import annotations

import argparse
import re
import time
from datetime import UTC, datetime

from ..config import Match, StoreConfig
from ..units import Duration


def store_config(args: argparse.Namespace) -> StoreConfig:
    """--db PATH wins; else the [store] of the config."""
    if getattr(args, "db", None):
        return StoreConfig(path=args.db)
    from . import load_config

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
