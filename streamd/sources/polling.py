"""What the pollers share: a GET with a bearer token and bounded retries (`ApiClient`, on
streamd's own keep-alive HTTP/1.1 client, `http_conn`), a gate per peer, bounded fan-out
of requests, following next-page links (`paginate`: on the API's own origin, never in a
loop), URL pieces, the TLS of a provider's API, and the look at stored state that keeps
a changed digest from being taken for a changed record (`changed_values`)."""

from __future__ import annotations

import base64
import codecs
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

import anyio
import httpx

from .. import __version__
from ..config import BackoffPolicy
from ..errors import AuthFailed, PollFailed, Unavailable
from ..health import State
from ..http_conn import Answer, AnswerError, AnswerTooLarge, Client, ConnectFailed
from ..model import Event
from ..retry import Retries, retry_after_seconds, retrying
from ..secrets import Secret
from ..store import EntityState
from ..units import Duration
from .base import SourceContext
from .changes import restamp, same_values

log = logging.getLogger("streamd.source")

T = TypeVar("T")


class Credentials(Protocol):
    """What goes after the `Authorization` scheme, and how to get a new one after a 401
    (`refresh` raises AuthFailed when there is no other)."""

    scheme: str

    async def access_token(self) -> str: ...

    async def refresh(self, failed: str | None = None) -> str: ...


class BasicAuth:
    """HTTP Basic: fixed credentials, so a 401 is final."""

    scheme = "Basic"

    def __init__(self, user: str, password: Secret) -> None:
        self.user = user
        self._password = password

    async def access_token(self) -> str:
        return base64.b64encode(f"{self.user}:{self._password.reveal()}".encode()).decode()

    async def refresh(self, failed: str | None = None) -> str:
        raise AuthFailed(f"the API refused the credentials of {self.user!r} (HTTP 401)")


class Gate:
    """Requests to one peer (an Asperion tenant, say): at most `concurrency` in flight, none
    before a 429's Retry-After has passed."""

    def __init__(self, concurrency: int) -> None:
        self.slots = anyio.Semaphore(concurrency)
        self.not_before = 0.0

    def pause(self, seconds: float) -> None:
        self.not_before = max(self.not_before, anyio.current_time() + seconds)

    async def wait(self) -> None:
        # A loop, not one sleep: another 429 may push `not_before` further while we wait.
        while (left := self.not_before - anyio.current_time()) > 0:  # noqa: ASYNC110
            await anyio.sleep(left)


# The most requests in flight a poller may be configured for (per Asperion tenant, per
# HORISEN platform).
MAX_CONCURRENCY = 64

# The largest answer a poller takes (inflated, when gzip'd): a page of the largest size
# any provider allows is a few MB; an answer beyond this is refused, not held in memory.
ANSWER_LIMIT = 64 * 1024 * 1024


def http_client(tls: ssl.SSLContext, timeout: float) -> httpx.AsyncClient:
    """A poller's HTTP client for its token requests (rare, and forms): the server
    verified, no redirects, no proxy settings taken from the environment."""
    return httpx.AsyncClient(verify=tls, timeout=timeout, follow_redirects=False, trust_env=False,
                             limits=httpx.Limits(max_connections=None, max_keepalive_connections=32))


class PollHealth:
    """A poller's health from its parts' (Asperion: one per tenant and resource): `held`
    while any part holds back what needs the operator (deletions), whatever else happens;
    else `retrying` while any part's polls fail, with the latest reason; `ok` once none does."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.failing: dict[str, str] = {}
        self.held: dict[str, str] = {}

    def fail(self, where: str, reason: str) -> None:
        self.failing[where] = reason
        self.ctx.metrics.source_connected.labels(self.ctx.name).set(0)
        if self.held:
            return
        component = self.ctx.component
        text = f"{where}: {reason}" if where else reason
        if component.state is State.RETRYING:
            component.reason = text  # keep `since`: /readyz measures the whole outage
        else:
            component.set(State.RETRYING, text)

    def hold(self, where: str, reason: str) -> None:
        """`where` holds back something only the operator (or time) may let go: the source
        is unhealthy until `release`, with every held part's reason."""
        self.held[where] = reason
        component = self.ctx.component
        text = "; ".join(f"{w}: {r}" for w, r in sorted(self.held.items()))
        if component.state is State.HELD:
            component.reason = text  # keep `since`
        else:
            component.set(State.HELD, text)

    def release(self, where: str) -> None:
        if self.held.pop(where, None) is None:
            return
        if self.held:
            self.hold(*next(iter(self.held.items())))
        elif self.failing:
            w, reason = next(reversed(self.failing.items()))
            self.ctx.component.set(State.RETRYING, f"{w}: {reason}" if w else reason)
        else:
            self.ctx.component.ok()

    def refused(self, reason: str, retry: str) -> None:
        """The provider refused the credentials: the source is `failed` until `retry` says."""
        self.ctx.component.set(State.FAILED, reason)
        self.ctx.metrics.source_connected.labels(self.ctx.name).set(0)
        log.error("source %s: %s (polling stopped; %s)", self.ctx.name, reason, retry)

    def recovered(self, where: str) -> None:
        self.failing.pop(where, None)
        if not self.failing:
            self.ctx.metrics.source_connected.labels(self.ctx.name).set(1)
            if self.held:
                self.hold(*next(iter(self.held.items())))  # shown again after a `refused`
            else:
                self.ctx.component.ok()


async def poll_every(ctx: SourceContext, health: PollHealth, poll: Callable[[], Awaitable[None]], *,
                     interval: float, policy: BackoffPolicy, where: str = "",
                     complete: Callable[[], None] = lambda: None) -> None:
    """Run `poll` every `interval` (from the start of one to the start of the next), and
    after a `PollFailed` again after a capped backoff (never longer than `interval`).
    Counts polls, their duration and failures; returns only by an exception."""
    m, name = ctx.metrics, ctx.name
    retries = Retries(policy, metrics=m, component=ctx.component, cap=interval,
                      mark=lambda reason: health.fail(where, reason), logger=log, level=logging.WARNING,
                      fields={"where": f" of {where}" if where else ""},
                      message="source %(name)s: poll%(where)s failed (%(reason)s); "
                              "retry %(attempt)d in %(wait).1fs")
    while True:
        started = anyio.current_time()
        t0 = time.perf_counter()
        try:
            await poll()
        except PollFailed as exc:
            m.source_polls.labels(name, "failed").inc()
            m.source_reconnects.labels(name).inc()
            await retries.pause(str(exc))
            continue
        retries.reset()
        m.source_polls.labels(name, "complete").inc()
        m.source_poll_duration.labels(name).observe(time.perf_counter() - t0)
        m.source_last_poll.labels(name).set(time.time())
        complete()
        health.recovered(where)
        await anyio.sleep(max(0.0, started + interval - anyio.current_time()))


class Response:
    """An API's answer, with the names the providers read on httpx's (`status_code`,
    `reason_phrase`, `headers`, `content`, `text`): their error descriptions are unchanged."""

    __slots__ = ("content", "headers", "reason_phrase", "status_code")

    def __init__(self, answer: Answer) -> None:
        self.status_code = answer.status
        self.reason_phrase = answer.reason
        self.headers = answer.headers  # lower-case names
        self.content = answer.head  # the whole body

    @property
    def text(self) -> str:
        """The body decoded as httpx does: the Content-Type's charset when Python knows it,
        else UTF-8; what does not decode is replaced."""
        charset = "utf-8"
        for param in self.headers.get("content-type", "").split(";")[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "charset":
                try:
                    charset = codecs.lookup(value.strip().strip("'\"")).name
                except LookupError:
                    pass
        return self.content.decode(charset, "replace")


class ApiClient:
    """GETs for one source: the credentials (a new access token once after a 401; a second
    401 is `AuthFailed`), a `Gate`, and `max_tries` tries for timeouts, connection errors, 408,
    429 (after its Retry-After, for everything behind the gate) and 5xx. Any other
    answer but 200 (and the codes a caller takes itself) is `PollFailed`, with the
    provider's own description of the error (`describe`); so is an answer larger than
    ANSWER_LIMIT. Each request, connect to last byte, within `timeout`.

    The requests go on keep-alive connections of streamd's own HTTP/1.1 client (a pool
    per origin, at most 32 kept open between requests; in flight, what the gates let
    through): httpx cost 5× its CPU per request, and the HORISEN poll, one request per
    invoice, was CPU-bound on it (docs/benchmarks.md). Use it as `async with`."""

    def __init__(self, ctx: SourceContext, tls: ssl.SSLContext, tokens: Credentials, *, timeout: float,
                 policy: BackoffPolicy, max_tries: int, describe: Callable[[Response], str]) -> None:
        self.ctx = ctx
        self.http = Client(tls, limit=ANSWER_LIMIT)
        self.tokens = tokens
        self.timeout = timeout
        self.policy = policy
        self.max_tries = max_tries
        self.describe = describe

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.http.aclose()

    async def get(self, url: str, params: Mapping[str, str] | None = None, *, gate: Gate,
                  headers: Mapping[str, str] | None = None, passthrough: Collection[int] = (),
                  what: str = "") -> Response:
        """The answer, when it is 200 or one of `passthrough`."""
        name, http, tokens = self.ctx.name, self.http, self.tokens
        requests = self.ctx.metrics.source_requests
        path = url_path(url)

        async def attempt() -> Response:
            # "Twice" is within one try: a 401 on a token got just now. A later try (after a
            # 429 or a 5xx, maybe seconds on) may find that token expired or revoked meanwhile.
            renewed = False
            while True:
                async with gate.slots:
                    await gate.wait()
                    # The token after the wait for a slot and a Retry-After: it may not
                    # outlive a long wait.
                    token = await tokens.access_token()
                    sent = {"Authorization": f"{tokens.scheme} {token}", "Accept": "application/json",
                            "User-Agent": USER_AGENT, **(headers or {})}
                    try:
                        with anyio.fail_after(self.timeout):
                            resp = Response(await http.get(url, params, sent))
                    except TimeoutError:
                        requests.labels(name, "error").inc()
                        raise Unavailable(f"{path}: timed out") from None
                    except AnswerTooLarge as exc:
                        requests.labels(name, "error").inc()
                        raise PollFailed(f"{path}: {exc}; refused") from None
                    except (OSError, AnswerError, anyio.BrokenResourceError, anyio.EndOfStream,
                            anyio.ClosedResourceError) as exc:
                        requests.labels(name, "error").inc()
                        raise Unavailable(f"{path}: {_failure(exc)}") from None
                code = resp.status_code
                requests.labels(name, str(code)).inc()
                if code == 200 or code in passthrough:
                    return resp
                if code == 401:
                    if renewed:
                        raise AuthFailed(f"the API refused a new access token (HTTP 401 twice on "
                                         f"{path}: {self.describe(resp)})")
                    renewed = True
                    log.info("source %s: HTTP 401 on %s; getting a new access token", name, path)
                    await tokens.refresh(failed=token)
                    continue
                if code == 429:
                    wait = retry_after_seconds(resp.headers.get("retry-after"))
                    gate.pause(wait if wait is not None else self.policy.min.seconds)
                    raise Unavailable(f"{path}: HTTP 429 (rate limited, Retry-After "
                                      f"{resp.headers.get('retry-after', '-')})", wait)
                if code == 408 or code >= 500:
                    raise Unavailable(f"{path}: HTTP {code}: {self.describe(resp)}")
                raise PollFailed(f"{path}: HTTP {code}: {self.describe(resp)}")

        # The first try outside tenacity: setting up its retryer cost about as much CPU as
        # the request itself, and nearly every request succeeds at once.
        try:
            return await attempt()
        except Unavailable as exc:
            failed = [exc]

        async def again() -> Response:
            if failed:
                raise failed.pop()  # the first try's failure: the retryer's backoff starts from it
            return await attempt()

        try:
            return await retrying(again, policy=self.policy, metrics=self.ctx.metrics,
                                  retry_on=lambda e: isinstance(e, Unavailable),
                                  component=self.ctx.component, what=what or path,
                                  attempts=self.max_tries)
        except Unavailable as exc:
            raise PollFailed(f"gave up after {self.max_tries} tries: {exc}") from None


USER_AGENT = f"streamd/{__version__}"


def _failure(exc: BaseException) -> str:
    """A failed request's reason, as httpx's exceptions named it."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ConnectFailed | ssl.SSLError):
        return f"ConnectError: {text}"
    if isinstance(exc, AnswerError):
        return f"RemoteProtocolError: {text}"
    return f"ReadError: {text}" if str(exc) else f"ReadError: {type(exc).__name__}"


async def changed_values(ctx: SourceContext, tenant: str, entity: str, differing: Sequence[Event],
                         known: dict[str, str]) -> tuple[list[Event], list[EntityState]]:
    """Of records whose digest differs from their emitted version's, the events of those
    whose values changed, and every one's new state. A record whose stored state holds
    the same values under another digest (an older streamd's) emits nothing: it is
    restamped (`sources.changes`), so the next listing compares digests alone. `known`
    (key → version) is updated."""
    stored = await ctx.reader.entity_data(ctx.name, tenant, entity, [ev.key for ev in differing])
    events: list[Event] = []
    states: list[EntityState] = []
    for ev in differing:
        version = ev.version
        if same_values(stored.get(ev.key), entity, ev.version):
            version = restamp(known[ev.key], ev.version)
        else:
            events.append(ev)
        states.append(EntityState(tenant, entity, ev.key, version, ev.data))
        known[ev.key] = version
    return events, states


async def fan_out(jobs: Iterable[T], workers: int, job: Callable[[T], Awaitable[None]], *,
                  prefer: type[Exception] | None = None) -> None:
    """Run `job` over `jobs`, `workers` at a time. After a failure no new job starts, the
    ones in flight finish (their requests are not cut off mid-way), and the error that
    decides what happens next is raised: the first of type `prefer` (an authorization
    failure, say), else the first."""
    pending = iter(jobs)
    errors: list[Exception] = []

    async def worker() -> None:
        for item in pending:
            if errors:
                return
            try:
                await job(item)
            except Exception as exc:
                errors.append(exc)
                return

    async with anyio.create_task_group() as tg:
        for _ in range(max(1, workers)):
            tg.start_soon(worker)
    if errors:
        raise next((e for e in errors if prefer is not None and isinstance(e, prefer)), errors[0])


P = TypeVar("P")


async def paginate(url: str | None, fetch: Callable[[str, dict[str, str] | None], Awaitable[P]],
                   next_of: Callable[[P], str | None], take: Callable[[P], Awaitable[None]], *,
                   base: str, params: dict[str, str] | None = None, limit: int | None = None,
                   what: str = "the next page") -> None:
    """Fetch `url` (with `params`; a next URL is complete), hand the page to `take`, then
    follow the URL `next_of` finds in it, until there is none. A URL is followed only on
    `base`'s origin (the credentials go with every request), never twice (a server that
    hands out the same page again would be paged forever), and at most `limit` of them:
    otherwise `PollFailed`, and the listing is incomplete."""
    followed: set[str] = set()
    home = origin(base)
    while url is not None:
        if origin(url) != home:
            scheme, host, port = home
            raise PollFailed(f"{what} {url} leaves {scheme}://{host}:{port}; not followed "
                             "(the credentials would go with it)")
        if url in followed:
            raise PollFailed(f"pagination loops: {what} {url} was already fetched")
        if limit is not None and len(followed) > limit:
            raise PollFailed(f"pagination does not end: {what} {url} after {len(followed)} pages "
                             f"(at most {limit} expected)")
        followed.add(url)
        page = await fetch(url, params)
        params = None
        await take(page)
        url = next_of(page)


def origin(url: str) -> tuple[str, str, int | None]:
    u = urlsplit(url)
    return u.scheme, (u.hostname or "").lower(), u.port or (443 if u.scheme == "https" else 80)


def url_path(url: str) -> str:
    return urlsplit(url).path


def server_tls(ca: str | None) -> ssl.SSLContext:
    """TLS for a provider's API: the server verified against `ca`, else the system store.
    There is no way to turn verification off."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def check_https(name: str, value: str, provider: str) -> list[str]:
    url = urlsplit(value)
    if url.scheme != "https" or not url.hostname:
        return [f"{name}: expected an https:// URL, got {value!r} ({provider} is only reached over TLS)"]
    return []


class PollerConfig(Protocol):
    """What every polling source's config has (Asperion, HORISEN, Connec!)."""

    @property
    def page_size(self) -> int: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def max_tries(self) -> int: ...
    @property
    def interval(self) -> Duration: ...
    @property
    def timeout(self) -> Duration: ...
    @property
    def ca(self) -> str | None: ...


def check_poller(cfg: PollerConfig, max_page_size: int) -> list[str]:
    """The checks every poller's config shares: paging, workers, tries, interval, timeout, CA."""
    problems: list[str] = []
    if not 1 <= cfg.page_size <= max_page_size:
        problems.append(f"page_size: must be between 1 and {max_page_size}")
    if not 1 <= cfg.concurrency <= MAX_CONCURRENCY:
        # One task and one connection per request in flight: a slip of the keyboard
        # (`concurrency = 16000`) would open thousands against the provider.
        problems.append(f"concurrency: must be between 1 and {MAX_CONCURRENCY}")
    if cfg.max_tries < 1:
        problems.append("max_tries: must be at least 1")
    if cfg.interval.seconds < 0.1:
        problems.append("interval: must be at least 100ms")
    if cfg.timeout.seconds <= 0:
        problems.append("timeout: must be positive")
    return problems + check_ca(cfg.ca)


def check_ca(ca: str | None) -> list[str]:
    if ca is None:
        return []
    if not Path(ca).is_file():
        return [f"ca: {ca} is not a readable file"]
    try:
        server_tls(ca)
    except (ssl.SSLError, OSError) as exc:
        return [f"ca: cannot load {ca} ({getattr(exc, 'reason', None) or exc})"]
    return []
