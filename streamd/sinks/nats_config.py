"""The `nats` sink's configuration and the checks `streamd check` runs on it: servers,
stream, subject template, authentication and TLS, each refused with its key and the
reason, never echoing a secret. The sink itself is `nats.py`.
"""

from __future__ import annotations

import socket
import ssl
from typing import Literal
from urllib.parse import urlsplit

from ..config import SinkConfig
from ..secrets import Secret, is_reference, key_file, tls_file_problems
from ..units import Duration, Size
from .base import is_loopback
from .subjects import Template, covers, valid_pattern

#: JetStream's default limit of messages in one atomic batch (`max_batch_size`).
MAX_BATCH = 1000
CONTENT_TYPE = "application/cloudevents+json"
_STREAM_NAME = r"^[A-Za-z0-9_-]{1,64}\Z"


class NatsSinkConfig(SinkConfig, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # The cluster's servers: "nats://host:4222" or "tls://host:4222", several for a cluster.
    servers: list[str]
    # The stream to publish into; it must exist, unless `create = true`.
    stream: str
    # The subject of each event: tokens of literal text and {provider}, {source}, {tenant},
    # {entity}, {op}, {type}, {shard}; the shard is appended when not in it.
    subject: str = "streamd.{provider}.{tenant}.{entity}"
    # Create the stream when it is missing (with the keys below); an existing one whose
    # config differs from them is refused.
    create: bool = False
    # With create = true: the stream's subjects (default: "<first token of subject>.>"),
    # replicas, storage, max_age (0s: no limit), max_bytes (0: no limit), duplicate_window.
    subjects: list[str] = []
    replicas: int = 3
    storage: Literal["file", "memory"] = "file"
    max_age: Duration = Duration(0.0)
    max_bytes: Size = Size(0)
    duplicate_window: Duration = Duration(120.0)
    # Authentication, at most one way: a .creds file, an nkey seed, a token, or user + password.
    credentials: Secret | None = None
    nkey_seed: Secret | None = None
    token: Secret | None = None
    user: str | None = None
    password: Secret | None = None
    # TLS: the CA the servers are verified against (none: the system store), and a client
    # certificate and key (a path, or for the key a secret reference) for mutual TLS.
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    # Allow plain nats:// to a host other than this machine (events and credentials in clear).
    allow_plain: bool = False
    # Connecting, each JetStream request, and the wait for a batch's ack.
    timeout: Duration = Duration(10.0)
    batch_max: int = MAX_BATCH


# ---------------------------------------------------------------- config

def wants_tls(cfg: NatsSinkConfig) -> bool:
    return (any(s.startswith("tls://") for s in cfg.servers) or cfg.ca is not None
            or cfg.cert is not None)


def tls_context(cfg: NatsSinkConfig) -> ssl.SSLContext:
    """The servers verified against `ca`, else the system store (there is no way to turn
    verification off); the client certificate for mutual TLS when given."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cfg.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.cert is not None and cfg.key is not None:
        with key_file(cfg.key) as keyfile:
            ctx.load_cert_chain(cfg.cert, keyfile)
    return ctx


def stream_subjects(cfg: NatsSinkConfig) -> list[str]:
    return list(cfg.subjects) or [Template.parse(cfg.subject).prefix + ".>"]


def _server_problems(cfg: NatsSinkConfig) -> list[str]:
    import re

    problems: list[str] = []
    if not cfg.servers:
        problems.append("servers: needs at least one server (\"nats://host:4222\")")
    for i, server in enumerate(cfg.servers):
        url = urlsplit(server)
        try:
            port_ok = url.port is None or 0 < url.port < 65536
        except ValueError:
            port_ok = False
        if url.username is not None or url.password is not None:
            problems.append(f"servers[{i}]: must not hold credentials (written inline); use "
                            "credentials, nkey_seed, token or user + password")
        elif url.scheme not in ("nats", "tls") or not url.hostname or not port_ok \
                or url.path not in ("", "/") or url.query:
            problems.append(f"servers[{i}]: expected \"nats://host:port\" or \"tls://host:port\", "
                            f"got {server!r}")
        elif not wants_tls(cfg) and not is_loopback(url.hostname) and not cfg.allow_plain:
            problems.append(f"servers[{i}]: plain nats:// to {url.hostname} would send the events"
                            + (" and the credentials" if _has_auth(cfg) else "")
                            + " unencrypted; use tls:// (and ca), or set allow_plain = true if the "
                            "network between is trusted (only this machine is allowed without)")
    if cfg.allow_plain and wants_tls(cfg):
        problems.append("allow_plain: only used without TLS (no tls:// server, ca or cert)")
    if not re.match(_STREAM_NAME, cfg.stream):
        problems.append(f"stream: {cfg.stream!r} is not a stream name (letters, digits, '_', '-')")
    return problems


def _has_auth(cfg: NatsSinkConfig) -> bool:
    return any(v is not None for v in (cfg.credentials, cfg.nkey_seed, cfg.token, cfg.user))


def _auth_problems(cfg: NatsSinkConfig) -> list[str]:
    problems: list[str] = []
    ways = [n for n, v in (("credentials", cfg.credentials), ("nkey_seed", cfg.nkey_seed),
                           ("token", cfg.token), ("user", cfg.user)) if v is not None]
    if len(ways) > 1:
        problems.append(f"{', '.join(ways)}: set one way to authenticate, not {len(ways)}")
    if cfg.user is not None and cfg.password is None:
        problems.append("password: required with user (a secret reference)")
    if cfg.password is not None and cfg.user is None:
        problems.append("password: only used with user")
    if cfg.user is not None and is_reference(cfg.user):
        problems.append("user: a user name, not a secret reference (the password is the secret)")
    if cfg.credentials is not None and "-----BEGIN NATS USER JWT-----" not in cfg.credentials.reveal():
        problems.append(f"credentials: {cfg.credentials.reference} is not a .creds file (no "
                        "\"-----BEGIN NATS USER JWT-----\" block)")
    if cfg.nkey_seed is not None and not cfg.nkey_seed.reveal().strip().startswith("SU"):
        problems.append(f"nkey_seed: {cfg.nkey_seed.reference} is not a user nkey seed (\"SU…\")")
    return problems


def _tls_problems(cfg: NatsSinkConfig) -> list[str]:
    problems: list[str] = []
    if (cfg.cert is None) != (cfg.key is None):
        problems.append("cert, key: a client certificate needs both (or neither)")
    return problems + tls_file_problems(
        (("ca", cfg.ca), ("cert", cfg.cert), ("key", cfg.key)), lambda: tls_context(cfg),
        key_hint=", or a secret reference",
        failed="ca: cannot load the CA, or the client certificate and key")


def validate_config(cfg: NatsSinkConfig) -> list[str]:
    problems = _server_problems(cfg)
    template = Template.parse(cfg.subject)
    if template.problem:
        problems.append(f"subject: {template.problem}")
    for i, s in enumerate(cfg.subjects):
        if not valid_pattern(s):
            problems.append(f"subjects[{i}]: {s!r} is not a NATS subject")
    if cfg.subjects and not cfg.create:
        problems.append("subjects: only used with create = true (the stream's own subjects)")
    elif cfg.subjects and not template.problem and all(valid_pattern(s) for s in cfg.subjects):
        if not any(covers(s, template.filter("x")) for s in cfg.subjects):
            problems.append(f"subjects: none of {cfg.subjects} covers the subject template "
                            f"{cfg.subject!r}")
    if not 1 <= cfg.replicas <= 5:
        problems.append("replicas: must be between 1 and 5")
    if cfg.max_age.seconds < 0 or cfg.duplicate_window.seconds < 0:
        problems.append("max_age, duplicate_window: must not be negative")
    elif cfg.max_age.seconds and cfg.duplicate_window.seconds > cfg.max_age.seconds:
        problems.append("duplicate_window: must not be longer than max_age")
    problems += _auth_problems(cfg)
    problems += _tls_problems(cfg)
    if cfg.timeout.seconds <= 0:
        problems.append("timeout: must be more than 0")
    if cfg.batch_max > MAX_BATCH:
        problems.append(f"batch_max: at most {MAX_BATCH} (a batch is one JetStream atomic batch, "
                        f"and {MAX_BATCH} messages is the server's default limit)")
    return problems


def config_warnings(cfg: NatsSinkConfig) -> list[str]:
    hosts = [urlsplit(s).hostname or "" for s in cfg.servers]
    remote = [h for h in hosts if not is_loopback(h)]
    if cfg.allow_plain and remote and not wants_tls(cfg):
        what = "the events and the credentials" if _has_auth(cfg) else "the events"
        return [f"servers: plain nats:// to {', '.join(remote)}: {what} cross the network "
                "unencrypted (allow_plain = true)"]
    return []


def default_shard() -> str:
    return socket.gethostname()
