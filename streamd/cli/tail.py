"""`streamd tail`: print the feed, exactly the file sink's lines, and follow it with -f.

It reads the database directly, so it works while the daemon runs (WAL readers
never block the writer) and when it does not.

A line is JSON, so the C0 controls in provider data (line breaks, ANSI escapes) are
already escaped in it. On a terminal the rest of what `escape.escape` refuses (C1
controls, DEL, line separators, bidi overrides) is written as `\\uXXXX` too
(`escape_json`: the same JSON value); to a pipe or a file the lines are the feed's own
bytes, exactly the file sink's.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

import anyio

from ..config import Match
from ..errors import StoreError
from ..store import FeedReader
from .common import add_db, add_filters, for_terminal, match_from, parse_since, store_config

POLL = 0.2
READ = 1000


def add_parser(sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    sp = with_config(sub.add_parser("tail", help="print the feed (and follow it with -f)"))
    add_db(sp)
    sp.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    sp.add_argument("-n", "--lines", type=int, default=10, metavar="N",
                    help="start with the last N matching events (default 10)")
    sp.add_argument("--from-seq", type=int, metavar="SEQ", help="start at this seq (0: everything)")
    sp.add_argument("--since", metavar="TIME",
                    help="start with events committed since TIME (RFC 3339, or '15m' ago)")
    add_filters(sp)
    sp.add_argument("--nats", metavar="SINK",
                    help="print the NATS stream this nats sink publishes into (all shards), not "
                         "the local feed; --from-seq is then a stream sequence")
    sp.add_argument("--subject", metavar="FILTER",
                    help="with --nats: only messages on these subjects (e.g. 'fin.acme.>')")
    sp.set_defaults(func=run)


async def _start_after(reader: FeedReader, args: argparse.Namespace, match: Match) -> int:
    if args.from_seq is not None:
        return max(int(args.from_seq) - 1, 0)
    if args.since is not None:
        return await reader.seq_at(parse_since(args.since))
    if args.lines <= 0:
        return await reader.head()
    seq = await reader.nth_last_seq(args.lines, match)
    return seq - 1 if seq is not None else 0


async def _tail(args: argparse.Namespace) -> None:
    reader = await FeedReader.open(store_config(args))
    out = sys.stdout.buffer
    terminal = sys.stdout.isatty()
    match = match_from(args)
    try:
        after = await _start_after(reader, args, match)
        while True:
            head = await reader.head()
            while after < head:
                upto = min(head, after + 20 * READ)
                events = await reader.read(after, upto, READ, match)
                if events:
                    out.write(b"".join(for_terminal(e.line) if terminal else e.line
                                       for e in events))
                after = events[-1].seq if len(events) == READ else upto
            out.flush()
            if not args.follow:
                return
            await anyio.sleep(POLL)
    finally:
        await reader.close()


def run(args: argparse.Namespace) -> int:
    if args.subject and not args.nats:
        print("streamd tail: --subject is for --nats", file=sys.stderr)
        return 2
    try:
        if args.nats:
            from .tail_nats import tail_nats

            return int(anyio.run(tail_nats, args))
        anyio.run(_tail, args)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # The reader went away (`streamd tail | head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except StoreError as exc:
        print(f"streamd tail: {exc}", file=sys.stderr)
        return 1
    return 0
