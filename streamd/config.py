"""`config.toml` decoded into frozen msgspec Structs, refused whole before anything starts.

Every problem is reported with the key's path (`sinks.feed.keep: expected int, got
str`); every table is checked, each reporting its first problem. Sources and sinks
are tables keyed by a name of your choice; the `provider` / `type` key picks the
Struct that decodes the rest, from the registries in `streamd.providers` and
`streamd.sinks`. Relative paths are relative to the
config file's directory. Secret values are only ever references (see `secrets`).
"""

from __future__ import annotations

import re
import socket
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo

import msgspec

from .errors import ConfigError
from .escape import escape_json
from .secrets import Secret, SecretError, is_reference, shown
from .units import Duration, Size

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
SHARD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
OPS = ("created", "updated", "deleted")


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
    cache: Size = Size(32 * 2**20)
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
        return ZoneInfo(self.timezone)  # checked by `parse`; zoneinfo caches each zone


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


class _TopLevel(_Base, frozen=True):
    store: dict[str, Any] = {}
    http: dict[str, Any] = {}
    daemon: dict[str, Any] = {}
    sources: dict[str, dict[str, Any]] = {}
    sinks: dict[str, dict[str, Any]] = {}


def _dec_hook_for(base: Path | None) -> Callable[[type, Any], Any]:
    def dec_hook(type_: type, obj: Any) -> Any:
        if type_ is Duration:
            return Duration.parse(obj)
        if type_ is Size:
            return Size.parse(obj)
        if type_ is Secret:
            try:
                return Secret.resolve(obj, base_dir=base)
            except SecretError as exc:
                raise ValueError(str(exc)) from None
        raise NotImplementedError(f"cannot decode {type_!r}")

    return dec_hook


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, (Duration, Size)):
        return str(obj)
    if isinstance(obj, Secret):
        return obj.reference  # `_shown` prints every reference as <redacted …>
    raise NotImplementedError(f"cannot encode {type(obj)!r}")


_PATH_RE = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def _describe(exc: msgspec.ValidationError, prefix: str) -> str:
    """Turn msgspec's "Expected `int`, got `str` - at `$.a.b`" into "a.b: expected int, got str"."""
    m = _PATH_RE.match(str(exc))
    assert m is not None
    msg, path = m.group("msg"), (m.group("path") or "")
    key = prefix + path  # path starts with "." or "[" or is empty
    for pattern, repl in (
        (r"^Object contains unknown field `([^`]*)`$", "unknown key"),
        (r"^Object missing required field `([^`]*)`$", "missing required key"),
    ):
        fm = re.match(pattern, msg)
        if fm:
            key = f"{key}.{fm.group(1)}" if key else fm.group(1)
            msg = repl
            break
    else:
        msg = msg.replace("`", "")
        msg = msg[:1].lower() + msg[1:]
    return f"{key.lstrip('.')}: {msg}" if key else msg


T = TypeVar("T")


def convert(obj: Any, type_: type[T], prefix: str, problems: list[str],
            base: Path | None = None) -> T | None:
    try:
        return msgspec.convert(obj, type_, dec_hook=_dec_hook_for(base), strict=True)
    except msgspec.ValidationError as exc:
        problems.append(_describe(exc, prefix))
        return None


def _resolve_path(base: Path, value: str) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _check_listen(key: str, listen: str, problems: list[str]) -> None:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        problems.append(f"{key}: expected \"host:port\", got {listen!r}")


def _check_http(http: HttpConfig, problems: list[str]) -> None:
    _check_listen("http.listen", http.listen, problems)
    if http.admin_listen:
        _check_listen("http.admin_listen", http.admin_listen, problems)
        if http.admin_listen == http.listen and not http.listen.endswith(":0"):
            problems.append("http.admin_listen: must differ from http.listen")
    if http.max_connections < 2:
        problems.append("http.max_connections: must be at least 2")
    if not 1 <= http.max_unauthenticated <= http.max_connections:
        problems.append("http.max_unauthenticated: must be between 1 and http.max_connections")
    for key in ("header_timeout", "body_timeout", "keepalive_timeout", "commit_timeout"):
        if getattr(http, key).seconds <= 0:
            problems.append(f"http.{key}: must be more than 0s")


def _check_backoff(where: str, backoff: BackoffPolicy, problems: list[str]) -> None:
    if backoff.min.seconds < 0.001:
        problems.append(f"{where}.backoff.min: must be at least 1ms (a retry loop needs a pause)")
    if backoff.max.seconds < backoff.min.seconds:
        problems.append(f"{where}.backoff.max: must not be less than backoff.min")


def _check_timezone(where: str, name: str, problems: list[str]) -> None:
    try:
        ZoneInfo(name)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        problems.append(f"{where}.timezone: {name!r} is not a time zone of the IANA database "
                        "(e.g. \"Europe/Stockholm\", \"UTC\")")


def _check_match(where: str, match: Match, known_providers: set[str], problems: list[str]) -> None:
    for p in match.provider:
        if not any(ch in p for ch in "*?[") and p not in known_providers:
            problems.append(
                f"{where}.match.provider: unknown provider {p!r} "
                f"(known: {', '.join(sorted(known_providers))})"
            )
    for t in match.type:
        entity, dot, op = t.partition(".")
        if not dot or not entity or (op not in OPS and op != "*"):
            problems.append(
                f"{where}.match.type: {t!r} is not \"<entity>.<created|updated|deleted|*>\""
            )


def _check_secrets_key(store: StoreConfig, problems: list[str]) -> None:
    from .store.sealed import parse_key

    for name in ("secrets_key", "secrets_key_previous"):
        secret: Secret | None = getattr(store, name)
        if secret is None:
            continue
        try:
            parse_key(secret.reveal())
        except ValueError as exc:  # the message never quotes the key
            problems.append(f"store.{name}: {secret.reference}: {exc}")
    if store.secrets_key_previous is not None and store.secrets_key is None:
        problems.append("store.secrets_key_previous: only decrypts during a rotation; "
                        "store.secrets_key (the new key) must be set too")


def parse(text: str, *, origin: str = "<string>", base_dir: Path | None = None) -> Config:
    """Decode and validate a whole config; raise `ConfigError` listing every problem."""
    from .providers import PROVIDERS, provider_spec
    from .sinks import SINKS, sink_spec

    base = base_dir if base_dir is not None else Path.cwd()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from None
    problems: list[str] = []
    top = convert(raw, _TopLevel, "", problems)
    if top is None:
        raise ConfigError(problems)
    # Each section on its own, so a mistake in one does not hide those in the others.
    store_cfg = convert(top.store, StoreConfig, "store", problems, base)
    http = convert(top.http, HttpConfig, "http", problems, base)
    daemon = convert(top.daemon, DaemonConfig, "daemon", problems, base)

    sources: dict[str, SourceConfig] = {}
    for name, table in top.sources.items():
        where = f"sources.{name}"
        if not NAME_RE.match(name):
            problems.append(f"{where}: a source name is lowercase letters, digits, '-' and '_'")
            continue
        provider = table.get("provider")
        if not isinstance(provider, str):
            problems.append(f"{where}.provider: missing required key (one of: {', '.join(PROVIDERS)})")
            continue
        if provider not in PROVIDERS:
            problems.append(
                f"{where}.provider: unknown provider {provider!r} (known: {', '.join(PROVIDERS)})"
            )
            continue
        spec = provider_spec(provider)
        cfg = convert(table, spec.config, where, problems, base)
        if cfg is not None:
            cfg = _with_paths(cfg, spec.path_fields, base)
            _check_backoff(where, cfg.backoff, problems)
            _check_timezone(where, cfg.timezone, problems)
            problems.extend(f"{where}.{p}" for p in spec.validate(cfg))
            sources[name] = cfg

    sinks: dict[str, SinkConfig] = {}
    for name, table in top.sinks.items():
        where = f"sinks.{name}"
        if not NAME_RE.match(name):
            problems.append(f"{where}: a sink name is lowercase letters, digits, '-' and '_'")
            continue
        kind = table.get("type")
        if not isinstance(kind, str):
            problems.append(f"{where}.type: missing required key (one of: {', '.join(SINKS)})")
            continue
        if kind not in SINKS:
            problems.append(f"{where}.type: unknown sink type {kind!r} (known: {', '.join(SINKS)})")
            continue
        sspec = sink_spec(kind)
        scfg = convert(table, sspec.config, where, problems, base)
        if scfg is not None:
            scfg = _with_paths(scfg, sspec.path_fields, base)
            _check_match(where, scfg.match, set(PROVIDERS), problems)
            _check_backoff(where, scfg.backoff, problems)
            if scfg.batch_max < 1:
                problems.append(f"{where}.batch_max: must be at least 1")
            if scfg.max_tries < 1:
                problems.append(f"{where}.max_tries: must be at least 1")
            problems.extend(f"{where}.{p}" for p in sspec.validate(scfg))
            sinks[name] = scfg

    if http is not None:
        _check_http(http, problems)
    if daemon is not None and not SHARD_RE.match(daemon.shard):
        problems.append(f"daemon.shard: {daemon.shard!r} is not a shard name (letters, digits, "
                        "'.', '_' and '-', at most 63; the default is the host name)")
    if store_cfg is not None:
        if store_cfg.commit_max_events < 1:
            problems.append("store.commit_max_events: must be at least 1")
        if store_cfg.queue_batches < 1:
            problems.append("store.queue_batches: must be at least 1")
        _check_secrets_key(store_cfg, problems)
    if problems or store_cfg is None or http is None or daemon is None:
        raise ConfigError(problems)
    store = msgspec.structs.replace(store_cfg, path=_resolve_path(base, store_cfg.path))
    return Config(store=store, http=http, daemon=daemon, sources=sources, sinks=sinks, origin=origin)


_C = TypeVar("_C", bound=msgspec.Struct)


def _with_paths(cfg: _C, fields: tuple[str, ...], base: Path) -> _C:
    changes = {}
    for f in fields:
        value = getattr(cfg, f, None)
        if not value:
            continue
        if value.startswith("file:"):  # a path-or-secret field (a TLS key) given as file:
            changes[f] = "file:" + _resolve_path(base, value[5:])
        elif not is_reference(value):
            changes[f] = _resolve_path(base, value)
    return msgspec.structs.replace(cfg, **changes) if changes else cfg


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read config file ({exc.__class__.__name__})") from None
    return parse(text, origin=str(p), base_dir=p.resolve().parent)


def _shown(value: Any) -> Any:
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, dict):
        return {k: _shown(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shown(v) for v in value]
    return value


def to_builtins(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain data, fit to be shown: every string goes through
    `secrets.shown`, so a secret is only its reference (`<redacted env:NAME>`, also in a
    header value or a path-or-secret field), key material is never printed, and URLs
    have their password and query values redacted."""
    out: dict[str, Any] = _shown(msgspec.to_builtins(cfg, enc_hook=_enc_hook))
    return out


def render(cfg: Config) -> str:
    """`to_builtins` as indented JSON, safe on a terminal (see `escape.escape_json`)."""
    return escape_json(msgspec.json.format(msgspec.json.encode(to_builtins(cfg)), indent=2).decode())



def no_checks(_: Any) -> list[str]:
    return []

