from __future__ import annotations

import re
import ssl
from urllib.parse import urlsplit

from ...config import SourceConfig
from ...secrets import Secret, key_file, tls_file_problems
from ...units import Duration, Size
from . import wire


class AsteriaConfig(SourceConfig, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # The partner gateway's websocket, e.g. "wss://partner-gateway.asteria.ai".
    url: str
    # Your client id, sent as `x-asteria-client` at the upgrade.
    client_id: str
    # Asteria is Swedish: its stamps are UTC (`Z`), a due date is the date in Stockholm.
    timezone: str = wire.TIMEZONE
    # Your client certificate (PEM, with any intermediates) and its key: a path, or a
    # secret reference (env:/file:/credential:) whose value is the PEM key.
    cert: str
    key: str
    # CA bundle the gateway's certificate is verified against; none = the system store.
    # The server is always verified: there is no option to turn that off.
    ca: str | None = None
    ping_interval: Duration = Duration(20.0)
    ping_timeout: Duration = Duration(20.0)
    open_timeout: Duration = Duration(10.0)
    # permessage-deflate: off unless asked for (CPU for bandwidth)
    compression: bool = False
    max_message: Size = Size(2**20)
    # Frames per committed batch, and batches waiting for their commit before the reader
    # stops reading the socket (a slow store slows the gateway down, memory stays flat).
    # The window (inflight x batch_max events) keeps the writer busy: 4 x 500 measured
    # 20k events/s end to end, 8 x 500 28k, 8 x 1000 30k at twice the memory growth.
    batch_max: int = 500
    inflight: int = 8
    # A connection that stays up this long, or brings a valid event, resets the backoff.
    healthy_after: Duration = Duration(10.0)
    # Webhooks: POST /webhooks/<source name>, accepted only with this header and secret
    # (what you registered with Asteria). No secret: no webhook route.
    webhook_secret: Secret | None = None
    webhook_header: str = "x-streamd-webhook-secret"


_HEADER = re.compile(r"^[A-Za-z0-9-]+\Z")


def tls_context(cfg: AsteriaConfig) -> ssl.SSLContext:
    """Mutual TLS, TLS >= 1.2, the server verified against `ca` or the system store."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cfg.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with key_file(cfg.key) as keyfile:
        ctx.load_cert_chain(cfg.cert, keyfile)
    return ctx


def validate(cfg: AsteriaConfig) -> list[str]:
    problems = []
    url = urlsplit(cfg.url)
    if url.scheme != "wss" or not url.hostname:
        problems.append(f"url: expected \"wss://host[:port][/path]\", got {cfg.url!r} "
                        "(the gateway is always reached over TLS)")
    if not cfg.client_id:
        problems.append("client_id: must not be empty")
    if not _HEADER.match(cfg.webhook_header):
        problems.append(f"webhook_header: {cfg.webhook_header!r} is not an HTTP header name")
    for name in ("batch_max", "inflight"):
        if getattr(cfg, name) < 1:
            problems.append(f"{name}: must be at least 1")
    return problems + tls_file_problems(
        (("cert", cfg.cert), ("key", cfg.key), ("ca", cfg.ca)), lambda: tls_context(cfg),
        key_hint=", or a secret reference (env:NAME, file:/path, credential:NAME)",
        failed="cert: cannot load the client certificate and key, or the CA")
