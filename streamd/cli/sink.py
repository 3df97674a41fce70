"""`streamd sink reset NAME --to-seq N`: move a sink's offset, to deliver again (backwards)
or to skip (forwards).

Only with the daemon stopped: a running daemon holds each sink's offset in memory and
would write its own back. The offset, the sink's partial-batch marker and what the sink
remembers of the events after N (`sink_state`: the sftp sink's documents) change in one
short transaction, so the sink decides again as it did then. What the sink itself checks
at start still applies: the file sink resumes after the last line its file holds, and the
sftp sink skips a file already there with the same document, so to deliver those again,
move the file(s) away too. A sink that keeps its own offset (postgres, in its database)
is told by a marker left here, and moves that offset too at the next start.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import Any

import anyio

from .common import add_db, store_config
from .status import _live


def add_parser(sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    sp = sub.add_parser("sink", help="reset a sink's offset (with the daemon stopped)")
    verbs = sp.add_subparsers(dest="verb", required=True, metavar="VERB")
    reset = with_config(verbs.add_parser("reset", help="set a sink's offset: it delivers from N+1"))
    add_db(reset)
    reset.add_argument("name", help="the sink ([sinks.<name>])")
    reset.add_argument("--to-seq", type=int, required=True, metavar="N",
                       help="the last seq the sink counts as delivered (0: from the start)")
    reset.set_defaults(func=cmd_reset)


def _running(meta: dict[str, str]) -> str | None:
    """Why the daemon looks alive, or None."""
    pid = meta.get("daemon.pid", "")
    if pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            pid = ""
        except PermissionError:
            pass  # alive, another user's
    listen = meta.get("daemon.admin") or meta.get("daemon.http", "")
    if listen and anyio.run(_live, listen) is not None:
        return f"it answers at {listen}"
    if pid.isdigit():
        return f"pid {pid} is alive"
    return None


def _forget_after(db: sqlite3.Connection, sink: str, seq: int) -> int:
    """Take back a sink's state entries made by events after `seq` (each entry's first item
    is its event's seq); returns how many keys changed."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sink_state'").fetchone():
        return 0  # a feed from before sinks kept state
    rows = db.execute("SELECT key, value FROM sink_state WHERE sink = ? AND seq > ?", (sink, seq)).fetchall()
    for key, value in rows:
        kept = [entry for entry in json.loads(value) if entry[0] <= seq]
        if kept:
            db.execute("UPDATE sink_state SET seq = ?, value = ? WHERE sink = ? AND key = ?",
                       (seq, json.dumps(kept, separators=(",", ":")).encode(), sink, key))
        else:
            db.execute("DELETE FROM sink_state WHERE sink = ? AND key = ?", (sink, key))
    return len(rows)


def cmd_reset(args: argparse.Namespace) -> int:
    if args.to_seq < 0:
        print("streamd sink: --to-seq must be 0 or more", file=sys.stderr)
        return 2
    cfg_sinks: set[str] | None = None
    if not getattr(args, "db", None):
        from .common import load_config

        cfg_sinks = set(load_config(args.config).sinks)
    if cfg_sinks is not None and args.name not in cfg_sinks:
        known = ", ".join(sorted(cfg_sinks)) or "-"
        print(f"streamd sink: no sink {args.name!r} in the config (sinks: {known})", file=sys.stderr)
        return 2
    path = store_config(args).path
    try:
        db = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30.0, isolation_level=None)
    except sqlite3.Error as exc:
        print(f"streamd sink: {path}: {exc}", file=sys.stderr)
        return 1
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        why = _running(meta)
        if why is not None:
            print(f"streamd sink: the daemon is running ({why}); stop it first "
                  "(systemctl stop streamd): it keeps sink offsets in memory", file=sys.stderr)
            return 1
        db.execute("BEGIN IMMEDIATE")
        head = db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        first = db.execute("SELECT coalesce(min(seq), 0) FROM events").fetchone()[0]
        row = db.execute("SELECT seq FROM sink_offsets WHERE sink = ?", (args.name,)).fetchone()
        if args.to_seq > head:
            db.execute("ROLLBACK")
            print(f"streamd sink: --to-seq {args.to_seq} is past the feed's head ({head})", file=sys.stderr)
            return 2
        db.execute("INSERT INTO sink_offsets (sink, seq, updated) VALUES (?, ?, ?) ON CONFLICT (sink)"
                   " DO UPDATE SET seq = excluded.seq, updated = excluded.updated",
                   (args.name, args.to_seq, int(time.time() * 1000)))
        db.execute("DELETE FROM meta WHERE key = ?", (f"sink.{args.name}.batch_upto",))
        # For a sink that keeps its own offset: the dispatcher moves that one at the next start.
        db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                   "value = excluded.value", (f"sink.{args.name}.reset", str(args.to_seq)))
        forgotten = _forget_after(db, args.name, args.to_seq)
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        print(f"streamd sink: {path}: {exc}", file=sys.stderr)
        return 1
    finally:
        db.close()
    was = "none" if row is None else str(row[0])
    print(f"sink {args.name}: offset {was} -> {args.to_seq}; at the next start it delivers "
          f"seq {args.to_seq + 1}..{head} ({max(head - args.to_seq, 0)} events)")
    if forgotten:
        print(f"sink {args.name}: forgot what it delivered after seq {args.to_seq} for {forgotten} keys")
    if first and args.to_seq + 1 < first:
        print(f"note: events before seq {first} are no longer retained; it starts at {first}")
    return 0
