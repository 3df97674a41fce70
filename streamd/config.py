"""The shape of `config.toml`: frozen msgspec Structs, what every part of streamd is given.

Only the shape lives here, with the defaults; every module may import it. Reading a
file into it (decoding, validating each table against its provider's or sink kind's
Struct, resolving paths and secrets, printing it redacted) is `configfile`, which sits
above the provider and sink registries it consults. Sources and sinks are tables keyed
by a name of your choice; each provider's and sink kind's Struct extends `SourceConfig`
or `SinkConfig`. Secret values are only ever references (see `secrets`).
"""

from __future__ import annotations

import socket
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgspec

from .secrets import Secret
from .units import Duration, Size


class _Base(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class StoreConfig(_Base, frozen=True):
    path: str = "feed.db"
    synchronous: Literal["full", "normal"] = "full"
    retention: Duration = Duration(30 * 86400)
    # Keep each event's raw wire payload beside it (audit, re-normalization).
    keep_raw: bool = True
    # WAL size that triggers a checkpoint: larger = fewer rewrites of hot index pages.
    checkpoint_every: Size = Size(64 * 2**20)
    # The writer's SQLite page cache. 8 MiB: appends on a 1,000,000-event feed measured no
    # slower than with 32 MiB (the dedupe index is bucketed by time, its hot part is small),
    # and 24 MB less of issue 18's 100 MB peak (docs/benchmarks.md).
    cache: Size = Size(8 * 2**20)
    # Group commit: a commit holds at most this many events, or waits this long for more.
    commit_max_events: int = 5000
    commit_linger: Duration = Duration(0.002)
    # Submitted batches waiting for the writer; a full queue slows the sources down.
    queue_batches: int = 64
    # Encrypts the credentials sources keep in the store (store/sealed.py): 32 random
    # bytes in base64. `_previous` only decrypts, during a key rotation.
    secrets_key: Secret | None = None
    secrets_key_previous: Secret | None = None


class HttpConfig(_Base, frozen=True):
    """The webhook listener faces whoever can reach it: every limit here bounds what a
    caller without credentials can hold (docs/security.md)."""

    listen: str = "127.0.0.1:9464"
    # Serve /metrics, /healthz and /readyz here instead of on `listen` ("" = on `listen`).
    admin_listen: str = ""
    # Largest webhook body accepted; larger requests get 413.
    body_limit: Size = Size(2**20)
    # A webhook whose events are not committed within this time gets 503 (the sender retries).
    commit_timeout: Duration = Duration(10.0)
    # Open connections at most; when full, the oldest idle one is closed to make room.
    max_connections: int = 1024
    # Connections that have not yet sent an authenticated request, at most; beyond it the
    # oldest idle one of them is closed.
    max_unauthenticated: int = 256
    # A new connection must have sent a whole request head (line and headers) within this.
    header_timeout: Duration = Duration(10.0)
    # An authenticated request must have sent its whole body within this.
    body_timeout: Duration = Duration(20.0)
    # After an answer, the next request head must arrive within this, or the connection closes.
    keepalive_timeout: Duration = Duration(5.0)
    # On shutdown, a request still sending its body gets this long, then 503.
    drain_grace: Duration = Duration(3.0)


class DaemonConfig(_Base, frozen=True):
    shutdown_timeout: Duration = Duration(30.0)
    # This host's name among the streamd hosts that publish into one NATS stream: in every
    # subject and header the nats sink sends, and in /metrics (streamd_shard_info).
    shard: str = msgspec.field(default_factory=socket.gethostname)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"


class BackoffPolicy(_Base, frozen=True):
    """Capped, jittered exponential backoff: the n-th wait is random between cap/2 and cap,
    where cap = min(max, min * 2^(n-1)); a peer's Retry-After may lengthen it (up to 15 min)."""

    min: Duration = Duration(0.5)
    max: Duration = Duration(60.0)


class Match(_Base, frozen=True):
    """Which events a sink takes. Within a key, any value may match (globs allowed: "invoice.*");
    across keys, all must. An empty list matches everything."""

    provider: list[str] = []
    source: list[str] = []
    entity: list[str] = []
    type: list[str] = []
    tenant: list[str] = []
    # false: leave out forecasts (an invoice whose `forecast` is true, Asteria's expected
    # invoices); true: only forecasts; unset: both.
    forecast: bool | None = None


class SourceConfig(_Base, frozen=True):
    """What every `[sources.<name>]` table has; each provider's Struct extends it."""

    provider: str
    backoff: BackoffPolicy = BackoffPolicy()
    # The provider's business time zone (IANA name): a date in the feed is the date there
    # (docs/model.md, "Dates"). Each provider's Struct sets its documented default.
    timezone: str = "UTC"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # checked by `configfile.parse`; zoneinfo caches each zone


class SinkConfig(_Base, frozen=True):
    """What every `[sinks.<name>]` table has; each sink kind's Struct extends it."""

    type: str
    match: Match = Match()
    # Where a sink with no offset yet starts: the oldest retained event, or the head.
    start: Literal["beginning", "end"] = "beginning"
    batch_max: int = 500
    # With fewer than batch_max events waiting, wait up to this long for more first.
    batch_linger: Duration = Duration(0.0)
    # A batch failing with a permanent error is split; a single event that fails
    # this many times goes to dead letters and the sink moves on.
    max_tries: int = 5
    backoff: BackoffPolicy = BackoffPolicy()
    # A delivery still running after this long counts as wedged: streamd stops feeding
    # systemd's watchdog, so systemd restarts it. (A stuck write cannot be safely
    # abandoned and retried: the stuck thread might still write later.)
    stall_after: Duration = Duration(120.0)


class Config(_Base, frozen=True):
    store: StoreConfig = StoreConfig()
    http: HttpConfig = HttpConfig()
    daemon: DaemonConfig = DaemonConfig()
    sources: dict[str, SourceConfig] = {}
    sinks: dict[str, SinkConfig] = {}
    # Where the file was read from; relative paths were resolved against its directory.
    origin: str = ""


def no_checks(_: Any) -> list[str]:
    return []

