"""The postgres sink's config and its checks (`streamd check`): what `sink` connects with.

Pure of the driver: `streamd check` and a daemon without a postgres sink load this, not
asyncpg. The package's `SPEC` is built from it; `sink` imports it, not the package.
"""

from __future__ import annotations

import os
import re
import ssl
import stat
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from ...config import SinkConfig
from ...secrets import Secret, redact_url
from ...units import Duration
from ..base import is_loopback

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")
# DSN parameters that have a key of their own here.
_OWN_KEYS = {"password": "password or passfile", "passfile": "passfile", "sslmode": "sslmode",
             "sslrootcert": "ca"}
_DSN_PARAMS = {"host", "port", "application_name", "target_session_attrs"}
MAX_CONNECTIONS = 8
_PORT_RE = re.compile(r"^(?:\[[^\]]*\]|[^:\[]*)(?::(.*))?$")  # host, [v6] or host:port


class PostgresSinkConfig(SinkConfig, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # postgresql://USER@HOST[:PORT][,HOST2[:PORT2]]/DATABASE; a unix socket as ?host=/run/postgresql
    dsn: str
    # The user's password, as a secret reference; or `passfile`, a libpq password file.
    password: Secret | None = None
    passfile: str | None = None
    # Created if missing; holds events, entities, sink_offsets, the views and the version.
    schema: str = "streamd"
    # Default: verify-full, or prefer when every host is this machine (loopback, a socket).
    sslmode: SslMode | None = None
    # CA bundle the server's certificate is verified against (verify-ca, verify-full);
    # none = the system store.
    ca: str | None = None
    batch_max: int = 10_000
    # Connections a batch is loaded over: its consecutive parts load at once, and commit
    # one after another in feed order (sink.py says how).
    connections: int = 2
    # Connecting, and each batch's transaction.
    timeout: Duration = Duration(60.0)


def hosts(dsn: str) -> list[str]:
    """The hosts a DSN names: in its netloc (`h1:5432,h2`), or `?host=` (a socket directory)."""
    url = urlsplit(dsn)
    query = dict(parse_qsl(url.query))
    spec = url.netloc.rpartition("@")[2]
    if "host" in query:
        spec = query["host"]
    out = []
    for part in spec.split(","):
        host = unquote(part)
        if host.startswith("["):  # [::1]:5432
            host = host[1:].partition("]")[0]
        elif not host.startswith("/") and host.count(":") == 1:
            host = host.partition(":")[0]
        if host:
            out.append(host)
    return out


def is_local(dsn: str) -> bool:
    """Every host is this machine: loopback, or a unix socket directory."""
    names = hosts(dsn)
    return bool(names) and all(h.startswith("/") or is_loopback(h) for h in names)


def sslmode(cfg: PostgresSinkConfig) -> SslMode:
    if cfg.sslmode is not None:
        return cfg.sslmode
    return "prefer" if is_local(cfg.dsn) else "verify-full"


def tls_context(mode: SslMode, ca: str | None) -> ssl.SSLContext | None:
    """The client TLS context for a verifying or requiring mode; None for the modes the
    driver negotiates itself (disable, allow, prefer: nothing is verified there)."""
    if mode not in ("require", "verify-ca", "verify-full"):
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if mode != "verify-full":
        ctx.check_hostname = False  # verify-ca: the chain, not the name
    if mode == "require":
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def where(dsn: str) -> str:
    """How messages name the server: `user@host:port/db`, not a URL (which `/readyz` and the
    logs would redact down to `***@host`); a validated DSN holds no password."""
    url = urlsplit(dsn)
    query = dict(parse_qsl(url.query))
    netloc = url.netloc if "host" not in query else url.netloc.rstrip("@") + "@" + query["host"]
    return f"{netloc}{url.path}"


def _dsn_problems(dsn: str) -> list[str]:
    try:
        url = urlsplit(dsn)
        params = parse_qsl(url.query, keep_blank_values=True, strict_parsing=bool(url.query))
    except ValueError:
        return ["dsn: expected postgresql://USER@HOST:PORT/DATABASE"]
    if url.scheme not in ("postgresql", "postgres"):
        return [f"dsn: expected postgresql://USER@HOST:PORT/DATABASE, got {redact_url(dsn)!r}"]
    auth = url.netloc.rpartition("@")[0] if "@" in url.netloc else ""
    if ":" in auth:
        # Not echoed: the DSN holds a password, and secrets are never written inline.
        return ["dsn: must not hold a password (a secret written inline); set password = "
                "\"credential:NAME\" (or env:, file:), or passfile"]
    problems = []
    if not auth:
        problems.append("dsn: name the user (postgresql://USER@HOST/DATABASE)")
    if not url.path.strip("/"):
        problems.append("dsn: name the database (postgresql://USER@HOST/DATABASE)")
    if not hosts(dsn):
        problems.append("dsn: name the host (postgresql://USER@HOST/DATABASE, or ?host=/run/postgresql "
                        "for a unix socket)")
    for name, _ in params:
        if name in _OWN_KEYS:
            problems.append(f"dsn: parameter {name} is not taken in the DSN; use the sink's key "
                            f"{_OWN_KEYS[name]}")
        elif name not in _DSN_PARAMS:
            problems.append(f"dsn: parameter {name} is not supported (only {', '.join(sorted(_DSN_PARAMS))})")
    ports = [m.group(1) for spec in url.netloc.rpartition("@")[2].split(",")
             if (m := _PORT_RE.match(spec)) and m.group(1) is not None]
    ports += [p for name, value in params if name == "port" for p in value.split(",")]
    for port in ports:
        if not (port.isdigit() and 1 <= int(port) <= 65535):
            problems.append(f"dsn: port {port!r} is not a number between 1 and 65535")
    return problems


def _passfile_problem(path: str) -> str | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a file"
    if st.st_mode & 0o077:
        # libpq (and asyncpg) ignore such a file: say so now rather than fail to log in.
        return (f"{path} is readable by others than its owner (mode {stat.S_IMODE(st.st_mode):04o}); "
                "chmod 600 it")
    if not os.access(path, os.R_OK):
        return f"{path} is not readable by this user"
    return None


def validate(cfg: PostgresSinkConfig) -> list[str]:
    problems = _dsn_problems(cfg.dsn)
    if cfg.password is not None and cfg.passfile is not None:
        problems.append("password, passfile: set one of them, not both")
    if cfg.passfile is not None:
        problem = _passfile_problem(cfg.passfile)
        if problem:
            problems.append(f"passfile: {problem}")
    if not SCHEMA_RE.match(cfg.schema) or cfg.schema.startswith("pg_"):
        problems.append(f"schema: {cfg.schema!r} is not a schema name streamd uses (lowercase letters, "
                        "digits and '_', not starting with a digit or pg_)")
    mode = sslmode(cfg)
    if cfg.ca is not None:
        if mode not in ("verify-ca", "verify-full"):
            problems.append(f"ca: only used with sslmode verify-ca or verify-full (sslmode is {mode})")
        elif not Path(cfg.ca).is_file():
            problems.append(f"ca: {cfg.ca} is not a readable file")
        else:
            try:
                tls_context(mode, cfg.ca)
            except (ssl.SSLError, OSError) as exc:
                problems.append(f"ca: cannot load {cfg.ca} ({getattr(exc, 'reason', None) or exc})")
    if cfg.timeout.seconds <= 0:
        problems.append("timeout: must be more than 0")
    if not 1 <= cfg.connections <= MAX_CONNECTIONS:
        problems.append(f"connections: must be between 1 and {MAX_CONNECTIONS}, got {cfg.connections}")
    return problems


def warnings(cfg: PostgresSinkConfig) -> list[str]:
    mode = sslmode(cfg)
    if is_local(cfg.dsn) or mode == "verify-full":
        return []
    where = ", ".join(hosts(cfg.dsn))
    if mode == "verify-ca":
        return [f"sslmode: verify-ca to {where}: the certificate is checked, not that it names the host"]
    if mode == "require":
        return [f"sslmode: require to {where}: encrypted, but the server is not verified (anyone "
                "between can pose as it); use verify-full"]
    return [f"sslmode: {mode} to {where}: the events and the password may cross the network "
            "unencrypted; use verify-full"]
