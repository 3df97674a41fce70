"""`config.toml` read into the Structs of `config`, refused whole before anything starts.

Every problem is reported with the key's path (`sinks.feed.keep: expected int, got
str`); every table is checked, each reporting its first problem. The `provider` /
`type` key of a `[sources.<name>]` / `[sinks.<name>]` table picks the Struct that
decodes the rest, from the registries in `streamd.providers` and `streamd.sinks`: so
this module sits above them, and only the command line (and tests) import it; the
daemon is handed a `Config`. Relative paths are relative to the config file's
directory. Secret values are only ever references (see `secrets`).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import msgspec

from .config import (
    BackoffPolicy,
    Config,
    DaemonConfig,
    HttpConfig,
    Match,
    SinkConfig,
    SourceConfig,
    StoreConfig,
)
from .errors import ConfigError, SecretError
from .escape import escape_json
from .model import OPS
from .providers import PROVIDERS, provider_spec
from .secrets import Secret, is_reference, shown
from .sinks import SINKS, sink_spec
from .store.sealed import parse_key
from .units import Duration, Size

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")
SHARD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")


class _TopLevel(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The sections, each left raw: decoded one by one, so one's mistake hides no other's."""

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
