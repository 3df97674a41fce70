"""`type = "http"`: the feed POSTed to an HTTP endpoint as CloudEvents (docs/sinks/http.md).

`format = "batch"` sends each batch as one request, a JSON array of the events'
CloudEvents (`application/cloudevents-batch+json`); `format = "single"` one request
per event (`application/cloudevents+json`), up to `max_in_flight` of a batch at once.

Every request carries an `Idempotency-Key`: the event id (single), or a hash of the
batch's event ids (batch). A retried request carries the same key; so does a batch
redelivered after a crash, because the sink asks its dispatcher for stable batches
(a partial batch's end is committed before it is sent). With `signing_secret`, requests
are signed as Standard Webhooks (`webhook-id` = the idempotency key).

What an answer means: 2xx delivered. 408, 429, 5xx, timeouts and connection failures
are retried (after `Retry-After`, when given). 410 Gone pauses the sink: it keeps
asking every `backoff.max`, as a 410 is as likely an operator's mistake at the
receiver as a wish to stop. 401, 403, 404, 405 and 407 (the endpoint or its
credentials are refused, not the events) and 3xx (streamd does not follow redirects)
are retried too. Any other 4xx is permanent: the dispatcher splits the batch and
dead-letters the refused events, with the status and the start of the answer's body.

Plain `http://` is for a receiver on this machine: to any other host the events and
the credential headers would cross the network in clear text, so the config is refused
unless `allow_http = true` says the network between is trusted (then `check` and the
start of `run` warn). The URL is shown only redacted (`secrets.redact_url`): a receiver
that takes its token in the query string keeps it out of logs, `/readyz` and `check`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import anyio

from .. import __version__
from ..config import SinkConfig
from ..errors import ConfigError, DeliveryError, Permanent, Retryable, SecretError
from ..http_conn import Answer, AnswerError, ConnectFailed, Pool, Target
from ..metrics import Metrics
from ..retry import retry_after_seconds
from ..secrets import Secret, redact, redact_url, split_reference
from ..store import FeedEvent
from ..units import Duration
from .base import Sink, SinkSpec, is_loopback

log = logging.getLogger("streamd.sink")

BATCH_TYPE = "application/cloudevents-batch+json"
SINGLE_TYPE = "application/cloudevents+json"
BODY_KEPT = 500  # bytes of a refusal's body kept for the reason (and the dead letter)
# Headers the sink writes itself: configuring them would break delivery or idempotency.
RESERVED = frozenset({"content-type", "content-length", "host", "transfer-encoding", "connection",
                      "idempotency-key", "webhook-id", "webhook-timestamp", "webhook-signature"})
# Headers whose value is a credential: only as a secret reference, never inline. A name
# is one when it holds any of these (case-insensitive): the standard ones (Authorization,
# Proxy-Authorization, Cookie) and what services name theirs (X-Api-Key, X-Auth-Token,
# X-Hub-Signature, X-Session-Id, X-Client-Secret, X-Csrf-Token, X-Jwt, X-Credential …).
# A substring list errs towards asking for a reference: a harmless header caught by it
# only has to move its value to the environment, a credential missed by it is printed.
SENSITIVE = ("auth", "token", "key", "secret", "signature", "cookie", "session", "passw",
             "credential", "jwt")
# Answers that refuse the endpoint or the credentials, not the events: dead-lettering the
# whole feed over a wrong URL or an expired token would be worse than waiting for a fix.
ENDPOINT_REFUSED = frozenset({401, 403, 404, 405, 407})
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


class HttpSinkConfig(SinkConfig, frozen=True, forbid_unknown_fields=True, kw_only=True):
    url: str
    format: Literal["batch", "single"] = "batch"
    # Extra request headers. A value may be a secret reference ("env:NAME", "file:/path",
    # "credential:NAME"), or text then a space and a reference ("Bearer env:TOKEN").
    headers: dict[str, str] = {}
    batch_max: int = 100
    # The whole request: connecting, sending, and the answer.
    timeout: Duration = Duration(10.0)
    # format = "single": requests of one batch in flight at once (1 keeps the feed's order).
    max_in_flight: int = 1
    # Standard Webhooks signing (webhook-id, webhook-timestamp, webhook-signature).
    signing_secret: Secret | None = None
    # CA bundle the receiver's certificate is verified against (https); none = the system store.
    ca: str | None = None
    # Allow a plain http:// url to a host other than this machine (the events and any
    # credential header then cross the network unencrypted).
    allow_http: bool = False


# ---------------------------------------------------------------- config

def tls_context(ca: str | None) -> ssl.SSLContext:
    """The receiver verified against `ca`, else the system store; there is no way to turn
    verification off."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def signing_key(secret: Secret) -> bytes:
    """The HMAC key: a `whsec_` secret is base64 after its prefix (Standard Webhooks'
    serialization); any other secret is its own UTF-8 bytes. Raises ValueError."""
    value = secret.reveal()
    if value.startswith("whsec_"):
        try:
            key = base64.b64decode(value[len("whsec_"):], validate=True)
        except binascii.Error:
            raise ValueError("a whsec_ secret must be base64 after the prefix") from None
        if not key:
            raise ValueError("a whsec_ secret must not be empty after the prefix")
        return key
    return value.encode()


def is_sensitive(header: str) -> bool:
    """Whether a header's name says its value is a credential (see SENSITIVE)."""
    low = header.lower()
    return any(part in low for part in SENSITIVE)


def resolve_header(value: str) -> tuple[str, Secret | None]:
    """A header value as (text, secret): the value sent is text + secret's value.
    Raises SecretError for a reference that cannot be read."""
    split = split_reference(value)
    if split is None:
        return value, None
    before, ref = split
    if ref.startswith("file:") and not Path(ref[5:]).expanduser().is_absolute():
        raise SecretError("a file: reference in headers needs an absolute path (or use credential:)")
    return before, Secret.resolve(ref)


def _header_problems(headers: dict[str, str]) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for name, value in headers.items():
        low = name.lower()
        where = f"headers.{name}"
        if not _TOKEN.match(name):
            problems.append(f"{where}: not a valid header name")
            continue
        if low in seen:
            problems.append(f"{where}: given twice (header names are case-insensitive)")
        seen.add(low)
        if low in RESERVED:
            problems.append(f"{where}: set by the sink itself; it cannot be configured")
            continue
        if any(c in value for c in "\r\n\0"):
            problems.append(f"{where}: a header value cannot hold line breaks")
            continue
        if split_reference(value) is None:
            if is_sensitive(name):
                # Do not echo the value: an inline credential is exactly what must not be printed.
                problems.append(f"{where}: a credential is written as a secret reference "
                                "(\"env:NAME\", \"file:/path\", \"credential:NAME\", or e.g. "
                                "\"Bearer env:NAME\"), never inline; a header is taken for one "
                                f"when its name holds any of: {', '.join(SENSITIVE)}")
            continue
        try:
            resolve_header(value)
        except SecretError as exc:
            problems.append(f"{where}: {exc}")
    return problems


def _validate(cfg: HttpSinkConfig) -> list[str]:
    problems: list[str] = []
    url = urlsplit(cfg.url)
    try:
        url.port  # noqa: B018 - raises ValueError for a port that is no number or out of range
        port_ok = True
    except ValueError:
        port_ok = False
    if url.username is not None or url.password is not None:
        # Not echoed: the URL holds a password, and secrets are never written inline.
        problems.append("url: must not hold credentials (a password written inline); send them "
                        "in `headers` as a secret reference, e.g. Authorization = \"Basic env:NAME\"")
    elif url.scheme not in ("http", "https") or not url.hostname or not port_ok:
        problems.append(f"url: expected an http:// or https:// URL, got {redact_url(cfg.url)!r}")
    elif url.scheme == "http" and not is_loopback(url.hostname) and not cfg.allow_http:
        problems.append(f"url: plain http:// to {url.hostname} would send the events"
                        + (" and the credential headers" if _has_credentials(cfg) else "")
                        + " unencrypted; use https://, or set allow_http = true if the network "
                        "between is trusted (only this machine, localhost, is allowed without)")
    if cfg.allow_http and url.scheme == "https":
        problems.append("allow_http: only used with an http:// url")
    if cfg.ca is not None:
        if url.scheme != "https":
            problems.append("ca: only used with an https:// url")
        elif not Path(cfg.ca).is_file():
            problems.append(f"ca: {cfg.ca} is not a readable file")
        else:
            try:
                tls_context(cfg.ca)
            except (ssl.SSLError, OSError) as exc:
                problems.append(f"ca: cannot load {cfg.ca} ({getattr(exc, 'reason', None) or exc})")
    problems += _header_problems(cfg.headers)
    if cfg.timeout.seconds <= 0:
        problems.append("timeout: must be more than 0")
    if not 1 <= cfg.max_in_flight <= 64:
        problems.append("max_in_flight: must be between 1 and 64")
    elif cfg.max_in_flight > 1 and cfg.format == "batch":
        problems.append("max_in_flight: only format = \"single\" sends requests concurrently (batches "
                        "go one at a time, in feed order); set 1, or raise batch_max instead")
    if cfg.signing_secret is not None:
        try:
            signing_key(cfg.signing_secret)
        except ValueError as exc:
            problems.append(f"signing_secret: {cfg.signing_secret.reference}: {exc}")
    return problems


def _has_credentials(cfg: HttpSinkConfig) -> bool:
    return any(split_reference(v) is not None or is_sensitive(k) for k, v in cfg.headers.items())


def _warnings(cfg: HttpSinkConfig) -> list[str]:
    url = urlsplit(cfg.url)
    if cfg.allow_http and url.scheme == "http" and url.hostname and not is_loopback(url.hostname):
        what = "the events and the credential headers" if _has_credentials(cfg) else "the events"
        return [f"url: plain http:// to {url.hostname}: {what} cross the network unencrypted "
                "(allow_http = true)"]
    return []


# ---------------------------------------------------------------- the sink

def batch_key(events: Sequence[FeedEvent]) -> str:
    """A batch's idempotency key: the same events, the same key."""
    return hashlib.sha256(",".join(e.id for e in events).encode()).hexdigest()[:32]


def _line(event: FeedEvent) -> bytes:
    return event.line[:-1] if event.line.endswith(b"\n") else event.line


def _combine(errors: list[DeliveryError], tried: int) -> DeliveryError:
    """One error for the requests of a batch that failed: retryable if any was (the batch
    is tried again whole; the ones that went through are not sent again), else permanent."""
    more = f" (and {len(errors) - 1} more of {tried} requests)" if len(errors) > 1 else ""
    retryable = [e for e in errors if isinstance(e, Retryable)]
    if retryable:
        hints = [e.retry_after for e in retryable if e.retry_after is not None]
        return Retryable(f"{retryable[0]}{more}", retry_after=max(hints) if hints else None)
    return Permanent(f"{errors[0]}{more}")


class HttpSink(Sink):
    def __init__(self, name: str, cfg: HttpSinkConfig) -> None:
        self.name = name
        self.cfg = cfg
        # Batches redelivered after a crash must be the same batches: their key says so.
        self.stable_batches = cfg.format == "batch"
        self.url = redact_url(cfg.url)  # for messages: the query may hold a token
        for warning in _warnings(cfg):
            log.warning("sink %s: %s", name, warning)
        self._headers = {"user-agent": f"streamd/{__version__}"}
        for header, value in cfg.headers.items():
            try:
                text, secret = resolve_header(value)
            except SecretError as exc:
                raise ConfigError(f"sinks.{name}.headers.{header}: {exc}") from None
            self._headers[header.lower()] = text + (secret.reveal() if secret else "")
        self._key = signing_key(cfg.signing_secret) if cfg.signing_secret is not None else None
        self._pool: Pool | None = None
        self._metrics: Metrics | None = None
        # Events of the batch being delivered that went through in an attempt that failed
        # as a whole (format = "single"): the retry does not send them again.
        self._sent: set[str] = set()
        self._gone = False
        self.requests = 0

    def __repr__(self) -> str:
        return f"HttpSink({self.name!r}, {self.url}, format={self.cfg.format})"

    def attach_metrics(self, metrics: Metrics) -> None:
        self._metrics = metrics
        metrics.sink_http_requests.labels(self.name, "error")  # the family, from the first scrape

    async def _http(self) -> Pool:
        if self._pool is None:
            n = self.cfg.max_in_flight if self.cfg.format == "single" else 1
            # Loading a CA bundle reads files: not on the event loop.
            tls = await anyio.to_thread.run_sync(tls_context, self.cfg.ca)
            if self._pool is None:
                self._pool = Pool(Target.parse(self.cfg.url, tls), n, keep=BODY_KEPT)
        return self._pool

    async def recover(self) -> int:
        return 0  # a receiver cannot be asked what it holds; its idempotency keys dedupe

    async def aclose(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.aclose()

    # ------------------------------------------------------------ delivery

    async def deliver(self, events: Sequence[FeedEvent]) -> None:
        if self.cfg.format == "batch":
            body = b"[" + b",".join(_line(e) for e in events) + b"]"
            await self._post(body, batch_key(events), BATCH_TYPE)
            return
        todo = [e for e in events if e.id not in self._sent]
        if self.cfg.max_in_flight == 1 or len(todo) < 2:
            for e in todo:
                await self._send_one(e)
        else:
            await self._concurrently(todo)
        self._sent.difference_update(e.id for e in events)

    async def _send_one(self, event: FeedEvent) -> None:
        await self._post(_line(event), event.id, SINGLE_TYPE)
        self._sent.add(event.id)
        if len(self._sent) > 10 * self.cfg.batch_max:  # only ever a batch's worth; a bound anyway
            self._sent.clear()

    async def _concurrently(self, events: Sequence[FeedEvent]) -> None:
        """Up to max_in_flight requests at once; after a failure no new one starts."""
        errors: list[DeliveryError] = []
        slots = anyio.Semaphore(self.cfg.max_in_flight)
        tried = 0

        async def one(event: FeedEvent) -> None:
            try:
                await self._send_one(event)
            except DeliveryError as exc:
                errors.append(exc)
            finally:
                slots.release()

        async with anyio.create_task_group() as tg:
            for event in events:
                await slots.acquire()
                if errors:
                    slots.release()
                    break
                tried += 1
                tg.start_soon(one, event)
        if errors:
            raise _combine(errors, tried)

    def _count(self, code: str) -> None:
        self.requests += 1
        if self._metrics is not None:
            self._metrics.sink_http_requests.labels(self.name, code).inc()

    def _signed(self, headers: dict[str, str], key: str, body: bytes) -> None:
        if self._key is None:
            return
        stamp = str(int(time.time()))
        mac = hmac.new(self._key, f"{key}.{stamp}.".encode() + body, hashlib.sha256).digest()
        headers["webhook-id"] = key
        headers["webhook-timestamp"] = stamp
        headers["webhook-signature"] = "v1," + base64.b64encode(mac).decode()

    async def _post(self, body: bytes, key: str, content_type: str) -> None:
        headers = {**self._headers, "content-type": content_type, "idempotency-key": key}
        self._signed(headers, key, body)
        pool = await self._http()
        try:
            # The whole answer is read (so the connection is kept); only its start is kept.
            with anyio.fail_after(self.cfg.timeout.seconds):
                answer = await pool.request(body, headers)
        except TimeoutError:
            self._count("error")
            raise Retryable(f"no answer from {self.url} within {self.cfg.timeout}") from None
        except (OSError, AnswerError, anyio.BrokenResourceError, anyio.EndOfStream,
                anyio.ClosedResourceError) as exc:
            self._count("error")
            raise Retryable(f"{self.url}: {_describe(exc)}") from None
        self._count(str(answer.status))
        self._judge(answer)

    def _judge(self, answer: Answer) -> None:
        status, head = answer.status, answer.head
        if 200 <= status < 300:
            if self._gone:
                self._gone = False
                log.warning("sink %s: the receiver takes deliveries again", self.name)
            return
        text = " ".join(head.decode("utf-8", "replace").split())
        said = f"receiver answered {status} {answer.reason}".rstrip() + (f": {text}" if text else "")
        hint = retry_after_seconds(answer.headers.get("retry-after"))
        if status == 410:
            every = self.cfg.backoff.max
            if not self._gone:
                self._gone = True
                log.warning("sink %s: receiver answered 410 Gone; paused, asking again every %s",
                            self.name, every)
            raise Retryable(f"receiver answered 410 Gone: paused until it takes deliveries again "
                            f"(asking every {every}; the offset holds)",
                            retry_after=max(every.seconds, hint or 0.0))
        after = f" (Retry-After {hint:.0f}s)" if hint else ""
        if status in (408, 429) or status >= 500:
            raise Retryable(said + after, retry_after=hint)
        if status in ENDPOINT_REFUSED:
            raise Retryable(f"{said}{after}; the endpoint or its credentials are refused, not the "
                            "events: retrying until that is fixed", retry_after=hint)
        if 400 <= status < 500:
            raise Permanent(said)
        if 300 <= status < 400:
            where = answer.headers.get("location")
            raise Retryable(f"{said}; redirects are not followed"
                            + (f": set url to {where}" if where else ""), retry_after=hint)
        raise Retryable(said + after, retry_after=hint)


def _describe(exc: BaseException) -> str:
    text = redact(str(exc)) or type(exc).__name__
    if isinstance(exc, ConnectFailed | ssl.SSLError):
        return f"cannot connect: {text}"
    if isinstance(exc, AnswerError):
        return text
    return f"{type(exc).__name__}: {text}" if str(exc) else text


def _build(name: str, cfg: HttpSinkConfig) -> HttpSink:
    return HttpSink(name, cfg)


SPEC = SinkSpec(config=HttpSinkConfig, build=_build, validate=_validate, warnings=_warnings,
                path_fields=("ca",))
