"""`streamd deletions list|confirm`: the deletions a polling source holds back.

A polling source may hold deletions back (`ProviderSpec.holds_deletions`; what it keeps is
in sources/held.py). Asperion does, when one listing loses more than `mass_delete_share`
of the records it knew: an administration whose access was revoked looks exactly like one
that was emptied. This module names no provider. `list` shows what is
held; `confirm` tells the running daemon that the records are really gone: it writes a
confirmation of each hold into the feed database, and the next listing that still finds
them gone deletes them. A confirmation names its hold, so it never lets a later one go.
Works whether the daemon runs or not (a short transaction that waits for its writer).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio

from ..errors import EX_CONFIG, StoreError
from ..escape import escape
from ..model import format_time
from ..store import FeedReader, write_state


def add_parser(sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    sp = sub.add_parser("deletions", help="deletions a source holds back for you to confirm")
    verbs = sp.add_subparsers(dest="verb", required=True, metavar="VERB")
    ls = with_config(verbs.add_parser("list", help="show held deletions"))
    ls.add_argument("source", nargs="?", help="only this source")
    ls.set_defaults(func=cmd_list)
    ok = with_config(verbs.add_parser("confirm", help="let held deletions go ahead at the next listing"))
    ok.add_argument("source", help="the [sources.<name>] holding them")
    ok.add_argument("--tenant", help="only this tenant (administration)")
    ok.add_argument("--resource", help="only this resource (debtors, salesinvoices, articles)")
    ok.set_defaults(func=cmd_confirm)


def _sources(args: argparse.Namespace) -> tuple[Any, list[str]] | int:
    from ..providers import provider_spec
    from .common import load_config

    cfg = load_config(args.config)
    names = [n for n, s in cfg.sources.items() if provider_spec(s.provider).holds_deletions]
    if args.source is not None and args.source not in names:
        why = ("is not in the config" if args.source not in cfg.sources
               else f"holds no deletions (its provider, {cfg.sources[args.source].provider}, never does)")
        print(f"streamd deletions: source {escape(args.source)} {why}", file=sys.stderr)
        return EX_CONFIG
    return cfg, [args.source] if args.source is not None else names


async def _holds(store: Any, names: list[str]) -> dict[str, Any]:
    from ..sources.held import PREFIX, holds

    reader = await FeedReader.open(store)
    try:
        return {name: holds(await reader.progress_under(name, PREFIX)) for name in names}
    finally:
        await reader.close()


def cmd_list(args: argparse.Namespace) -> int:
    found = _sources(args)
    if isinstance(found, int):
        return found
    cfg, names = found
    try:
        by_source = anyio.run(_holds, cfg.store, names)
    except StoreError as exc:
        print(f"streamd deletions: {exc}", file=sys.stderr)
        return 1
    lines = 0
    for name, held in by_source.items():
        for (tenant, resource), (hold, confirmation) in sorted(held.items()):
            state = (f"confirmed at {confirmation.at}" if confirmation and confirmation.hold == hold.id
                     else "waiting")
            print(f"{escape(name)} {escape(tenant)}/{escape(resource)}: {hold.deleting} of {hold.known} "
                  f"records held since {hold.since} ({state})")
            lines += 1
    if not lines:
        print("no deletions held")
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    from ..sources.held import Confirmation, keys

    found = _sources(args)
    if isinstance(found, int):
        return found
    cfg, (name,) = found
    try:
        held = anyio.run(_holds, cfg.store, [name])[name]
    except StoreError as exc:
        print(f"streamd deletions: {exc}", file=sys.stderr)
        return 1
    chosen = {(t, r): h for (t, r), (h, _) in held.items()
              if args.tenant in (None, t) and args.resource in (None, r)}
    if not chosen:
        print(f"streamd deletions: source {escape(name)} holds no deletions"
              + (" for that tenant and resource" if held else ""), file=sys.stderr)
        return 1
    at = format_time(datetime.now(UTC))
    rows = {keys(t, r)[1]: Confirmation(hold=h.id, at=at) for (t, r), h in chosen.items()}
    try:
        anyio.run(write_state, cfg.store, name, rows)
    except StoreError as exc:
        print(f"streamd deletions: cannot store the confirmation: {exc}", file=sys.stderr)
        return 1
    for (tenant, resource), hold in sorted(chosen.items()):
        print(f"{escape(name)} {escape(tenant)}/{escape(resource)}: {hold.deleting} deletions confirmed; "
              "the daemon makes them at its next listing that still finds the records gone")
    return 0
