"""`streamd status`: the feed head, each source's last progress and live state, each
sink's offset and lag, and the dead letters. Live states come from the running
daemon's /readyz; the rest is read from the database.

A state's reason and a progress value may hold a provider's text: the text output
escapes every value it prints (`escape.escape`; progress, being JSON, with
`escape_json`), and `--json` is escaped by being JSON (and `escape_json`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import anyio
import msgspec

from ..errors import StoreError
from ..escape import escape, escape_json
from ..store import FeedReader
from ..web import parse_listen
from .common import fmt_ms


def add_parser(sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    sp = with_config(sub.add_parser("status", help="feed head, sources, sinks, dead letters"))
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=run)


async def _live(listen: str) -> dict[str, Any] | None:
    host, port = parse_listen(listen)
    if not port:
        return None
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/readyz"
    # Here, not with the module: every command's parser imports this one, and `streamd
    # run` with no poller would otherwise keep httpx resident for nothing.
    import httpx

    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            r = await client.get(url, headers={"accept": "application/json"})
        body: dict[str, Any] = r.json()
        return body
    except (httpx.HTTPError, ValueError):
        return None


async def gather(args: argparse.Namespace) -> dict[str, Any]:
    from .common import load_config

    cfg = load_config(args.config)
    reader = await FeedReader.open(cfg.store)
    try:
        head = await reader.head()
        first = await reader.first_seq()
        offsets = await reader.offsets()
        progress = await reader.all_progress()
        dlq = await reader.dead_letter_counts()
        meta = await reader.meta()
        lags: dict[str, dict[str, Any]] = {}
        for name, sink in cfg.sinks.items():
            off = offsets.get(name)
            received = await reader.received_at(off + 1) if off is not None and off < head else None
            lags[name] = {"type": sink.type, "offset": off, "lag_events": head - (off or 0),
                          "oldest_pending": fmt_ms(received)}
    finally:
        await reader.close()
    # Where the daemon said it listens (it may have bound port 0, or 0.0.0.0).
    listen = (meta.get("daemon.admin") or meta.get("daemon.http") or cfg.http.admin_listen
              or cfg.http.listen)
    live = await _live(listen)
    states: dict[str, str] = {}
    for line in (live or {}).get("components", []):
        kind_name, _, state = line.partition(": ")
        states[kind_name] = state
    return {
        "store": cfg.store.path, "head": head, "retained": max(head - first + 1, 0),
        "daemon": (("ready" if live.get("ready") else "running, not ready")
                   + f" at {listen} (pid {meta.get('daemon.pid', '?')}, streamd "
                   f"{meta.get('daemon.version', '?')}, started {meta.get('daemon.started', '?')})")
        if live else f"not reachable at {listen}",
        "sources": {name: {"provider": s.provider,
                           "state": states.get(f"source {name}", "-"),
                           "progress": progress.get(name, ({}, 0))[0],
                           "progress_updated": fmt_ms(progress.get(name, ({}, 0))[1])}
                    for name, s in cfg.sources.items()},
        "sinks": {name: {**lag, "state": states.get(f"sink {name}", "-")}
                  for name, lag in lags.items()},
        "dead_letters": {f"{o} {n}": c for (o, n), c in sorted(dlq.items())},
        "stale_offsets": sorted(set(offsets) - set(cfg.sinks)),
    }


def _print(s: dict[str, Any]) -> None:
    print(f"feed     {escape(s['store'])}: head {s['head']}, {s['retained']} events retained")
    print(f"daemon   {escape(s['daemon'])}")
    print("sources")
    for name, src in s["sources"].items():
        prog = escape_json(msgspec.json.encode(src["progress"]).decode()) if src["progress"] else "-"
        if len(prog) > 60:
            prog = prog[:57] + "..."
        print(f"  {name:<20} {src['provider']:<10} {escape(src['state']):<24} progress {prog} "
              f"(at {src['progress_updated']})")
    print("sinks")
    for name, snk in s["sinks"].items():
        off = "-" if snk["offset"] is None else snk["offset"]
        print(f"  {name:<20} {snk['type']:<10} {escape(snk['state']):<24} offset {off}, lag "
              f"{snk['lag_events']} events (oldest pending {snk['oldest_pending']})")
    total = sum(s["dead_letters"].values())
    detail = ", ".join(f"{escape(k)}: {v}" for k, v in s["dead_letters"].items())
    print(f"dead letters {total}" + (f" ({detail})" if detail else ""))
    if s["stale_offsets"]:
        print("note: offsets kept for sinks no longer configured: "
              f"{', '.join(escape(o) for o in s['stale_offsets'])}"
              " (ignored by retention; they are used again if the sink comes back)")


def run(args: argparse.Namespace) -> int:
    try:
        s = anyio.run(gather, args)
    except StoreError as exc:
        print(f"streamd status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(escape_json(msgspec.json.format(msgspec.json.encode(s), indent=2).decode()))
    else:
        _print(s)
    return 0
