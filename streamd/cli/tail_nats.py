"""`streamd tail --nats SINK`: print the shared stream a nats sink publishes into, as
`streamd tail` prints the local feed: each message's body and a newline, which is the
file sink's line of that event (from whichever shard published it).

It connects as the sink does (servers, credentials, TLS from the sink's config) and reads
with an ordered consumer, which the server deletes when it goes: nothing is acked, nothing
is left behind. Where to start: `--from-seq` (a stream sequence), `--since`, or the last
`-n` stream messages; `--subject` narrows the stream server-side, the usual filters
(`--tenant`, `--type`, …) client-side. Without `-f` it stops at the stream's end.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from fnmatch import fnmatchcase

import anyio
import msgspec

from ..config import Match
from ..errors import Retryable
from .common import for_terminal, load_config, match_from, parse_since

IDLE = 1.0  # seconds without a message after which a non-following tail looks again


class _Fields(msgspec.Struct):
    provider: str = ""
    source: str = ""
    tenant: str = ""
    type: str = ""


def _matches(match: Match, body: bytes) -> bool:
    if not (match.provider or match.source or match.entity or match.type or match.tenant):
        return True
    try:
        f = msgspec.json.decode(body, type=_Fields)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    entity = f.type.partition(".")[0]
    source = f.source.rsplit("/", 1)[-1]
    for values, value in ((match.provider, f.provider), (match.source, source),
                          (match.entity, entity), (match.type, f.type), (match.tenant, f.tenant)):
        if values and not any(fnmatchcase(value, v) for v in values):
            return False
    return True


async def tail_nats(args: argparse.Namespace) -> int:
    from nats.js.api import ConsumerConfig, DeliverPolicy

    from ..escape import escape
    from ..sinks.nats import NatsSink
    from ..sinks.nats_config import NatsSinkConfig
    from ..sinks.nats_io import Connection

    cfg = load_config(args.config)
    sink_cfg = cfg.sinks.get(args.nats)
    if not isinstance(sink_cfg, NatsSinkConfig):
        names = [n for n, s in cfg.sinks.items() if isinstance(s, NatsSinkConfig)]
        print(f"streamd tail: no nats sink {escape(args.nats)!r} in the config (nats sinks: "
              f"{', '.join(names) or 'none'})", file=sys.stderr)
        return 2
    sink = NatsSink(args.nats, sink_cfg)
    sink.attach_shard(cfg.daemon.shard)
    try:
        conn = await Connection.open(await anyio.to_thread.run_sync(sink.connect_options))
    except Retryable as exc:
        print(f"streamd tail: {exc}", file=sys.stderr)
        return 1
    out = sys.stdout.buffer
    terminal = sys.stdout.isatty()
    match = match_from(args)
    try:
        info = await conn.stream_info(sink_cfg.stream)
        if info is None:
            print(f"streamd tail: stream {sink_cfg.stream} does not exist", file=sys.stderr)
            return 1
        last = info.state.last_seq
        consumer = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                  opt_start_seq=max(last - max(args.lines, 0) + 1, 1))
        if args.from_seq is not None:
            consumer = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                      opt_start_seq=max(int(args.from_seq), 1))
        elif args.since is not None:
            start = datetime.fromtimestamp(parse_since(args.since) / 1000, UTC)
            consumer = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME,
                                      opt_start_time=start)
        elif args.lines <= 0:
            consumer = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
        if not args.follow and (last == 0 or consumer.deliver_policy == DeliverPolicy.NEW):
            return 0
        sub = await conn.js.subscribe(args.subject or ">", stream=sink_cfg.stream,
                                      ordered_consumer=True, config=consumer)
        while True:
            try:
                msg = await sub.next_msg(timeout=IDLE)
            except TimeoutError:
                if args.follow:
                    continue
                return 0  # nothing from the start point on (or nothing matching --subject)
            if b"\n" in msg.data or b"\r" in msg.data:
                # Not a feed line (streamd's are one line of JSON): whoever else may publish
                # into the stream must not be able to forge lines of this output.
                print(f"streamd tail: stream message {msg.metadata.sequence.stream} holds a line "
                      "break; not a streamd event, skipped", file=sys.stderr)
            elif _matches(match, msg.data):
                line = msg.data + b"\n"
                out.write(for_terminal(line) if terminal else line)
                out.flush()
            if not args.follow and msg.metadata.num_pending == 0:
                return 0
    finally:
        await conn.close()
