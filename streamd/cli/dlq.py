"""`streamd dlq list|retry|drop`: the dead letters.

`retry` marks rows; the running daemon picks them up within seconds: a source's
dead letter is normalized again from its raw bytes (after an upgrade that fixed
the cause), a sink's is delivered again. `drop` deletes rows for good. Both are
short transactions that wait for the daemon's writer, never race it.

What a dead letter holds came from outside: `list` prints its name and reason escaped
(`escape.escape`), one line per dead letter. With `--raw`, each payload follows its
line: escaped on one indented line when stdout is a terminal (an ANSI escape in a
payload must not reach it; bytes that are not UTF-8 show as `\\udcXX`), and as its exact
bytes, then a newline, when stdout is a pipe or a file (to feed `jq`, `xxd`, a replay).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

import anyio

from ..errors import StoreError
from ..escape import escape
from ..store import FeedReader
from ..store.reader import DeadLetterRow
from .common import add_db, fmt_ms, store_config


def add_parser(sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    sp = sub.add_parser("dlq", help="list, retry or drop dead letters")
    verbs = sp.add_subparsers(dest="verb", required=True, metavar="VERB")
    ls = with_config(verbs.add_parser("list", help="show dead letters"))
    add_db(ls)
    ls.add_argument("--origin", choices=["source", "sink"])
    ls.add_argument("--name", help="only this source or sink")
    ls.add_argument("--raw", action="store_true", help="print each raw payload too (escaped on a "
                    "terminal, its exact bytes to a pipe or file)")
    ls.add_argument("--limit", type=int, default=100)
    ls.set_defaults(func=cmd_list)
    for verb, help_ in (("retry", "mark dead letters for the daemon to try again"),
                        ("drop", "delete dead letters for good")):
        v = with_config(verbs.add_parser(verb, help=help_))
        add_db(v)
        v.add_argument("ids", nargs="*", type=int, metavar="ID")
        v.add_argument("--all", action="store_true", help="every dead letter (with --name: its)")
        v.add_argument("--name", help="only this source or sink")
        v.set_defaults(func=cmd_change, verb=verb)


def _show(row: DeadLetterRow) -> str:
    where = escape(f"{row.origin} {row.name}")
    seq = f" seq {row.event_seq}" if row.event_seq is not None else ""
    size = len(row.raw) if row.raw is not None else 0
    return (f"{row.id:>6}  {fmt_ms(row.created_ms)}  {where:<24} {escape(row.status):<6} "
            f"tries {row.attempts:<3} {size:>7} B{seq}  {escape(row.reason)}")


def _print_raw(raw: bytes, terminal: bool) -> None:
    if terminal:
        print("        " + escape(raw.decode("utf-8", "surrogateescape")))
        return
    sys.stdout.flush()
    sys.stdout.buffer.write(raw + b"\n")


def cmd_list(args: argparse.Namespace) -> int:
    async def go() -> list[DeadLetterRow]:
        reader = await FeedReader.open(store_config(args))
        try:
            return await reader.dead_letters(origin=args.origin, name=args.name, limit=args.limit)
        finally:
            await reader.close()

    try:
        rows = anyio.run(go)
    except StoreError as exc:
        print(f"streamd dlq: {exc}", file=sys.stderr)
        return 1
    terminal = sys.stdout.isatty()
    for row in rows:
        print(_show(row))
        if args.raw and row.raw is not None:
            _print_raw(row.raw, terminal)
    if not rows:
        print("no dead letters")
    return 0


def cmd_change(args: argparse.Namespace) -> int:
    if not args.ids and not args.all:
        print("streamd dlq: name the dead letters (IDs) or pass --all", file=sys.stderr)
        return 2
    where, params = [], []
    if args.ids:
        where.append("id IN (" + ",".join("?" * len(args.ids)) + ")")
        params.extend(args.ids)
    if args.name:
        where.append("name = ?")
        params.append(args.name)
    cond = " AND ".join(where) or "1=1"
    sql = (f"UPDATE dead_letters SET status = 'retry' WHERE {cond}" if args.verb == "retry"
           else f"DELETE FROM dead_letters WHERE {cond}")
    path = store_config(args).path
    try:
        db = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30.0, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            n = db.execute(sql, params).rowcount
            db.execute("COMMIT")
        finally:
            db.close()
    except sqlite3.Error as exc:
        print(f"streamd dlq: {path}: {exc}", file=sys.stderr)
        return 1
    if args.verb == "retry":
        print(f"{n} dead letters marked for retry; the running daemon takes them within seconds")
    else:
        print(f"{n} dead letters dropped")
    return 0
