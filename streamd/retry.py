"""Retries: capped, jittered exponential backoff, visible in metrics, health and the log.

Every retry streamd makes is one step, `Retries.pause`: back off (a capped, jittered delay,
at least a peer's `Retry-After` up to `RETRY_AFTER_CAP`), mark the component `retrying`,
count the retry in `streamd_retries_total`, promise the watchdog to come back, log it,
sleep. Two shapes use it:

- a long-lived loop (a reconnect, a poll, a supervised restart, a commit) keeps one
  `Retries`, calls `pause` after a failure and `reset` after a success, as websockets'
  `connect.__aiter__` keeps its `backoff()` generator;
- `retrying()` runs one operation until it succeeds, and `retry_on` decides, for each
  error, whether it is worth another try (websockets' `process_exception`).

What differs between loops is said where the loop builds its `Retries` (the log level and
message, a cap such as a poller's interval, how the component is marked), never copied.
A component marked `retrying` while already retrying keeps its `since` (`Component.set`),
so /readyz measures the whole outage, however many retries it takes.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import TypeVar

import anyio

from . import config
from .health import Component, State
from .metrics import Metrics

log = logging.getLogger("streamd.retry")

T = TypeVar("T")
_RNG = random.Random()
RETRY_AFTER_CAP = 900.0  # a peer may ask for up to 15 minutes, never more
# A loop about to sleep `wait` promises the watchdog to beat again within wait + this:
# room for the step after the sleep to reach its own beat.
BEAT_SLACK = 60.0


def delay(policy: config.Backoff, attempt: int, retry_after: float | None = None,
          rng: random.Random | None = None) -> float:
    """Wait before retry number `attempt` (1-based): equal jitter over a capped exponential,
    so waits grow but two clients never retry in lockstep; at least `retry_after`."""
    r = rng or _RNG
    cap = min(policy.max.seconds, policy.min.seconds * (2.0 ** min(attempt - 1, 30)))
    wait = cap / 2 + r.uniform(0, cap / 2)
    if retry_after is not None and retry_after > 0:
        wait = max(wait, min(retry_after, RETRY_AFTER_CAP))
    return wait


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Backoff:
    """The delays of one loop's retries (websockets' `backoff()`): each failure's longer,
    up to the policy's cap, until `reset` after a success."""

    def __init__(self, policy: config.Backoff) -> None:
        self.policy = policy
        self.failures = 0

    def next(self, retry_after: float | None = None) -> float:
        self.failures += 1
        return delay(self.policy, self.failures, retry_after)

    def reset(self) -> None:
        self.failures = 0


class Retries:
    """The retries of one loop, each one the same step (`pause`).

    `message` is a %-style template over `kind`, `name` (the component's), `reason`,
    `attempt` (1-based since the last `reset`), `wait` and `fields`: the data stays out of
    the template, so a reason holding `%` or `{` is logged as it is. `mark` says how a retry
    shows: True marks the component `retrying` with the reason; a callable is called with
    the reason instead (a poller's `PollHealth.fail`, which knows what else it holds);
    False leaves the component as it is (one refused event retried while the sink goes on).
    `cap` bounds every wait, a peer's `Retry-After` included (a poller never waits past
    its next poll)."""

    def __init__(self, policy: config.Backoff, *, metrics: Metrics, component: Component,
                 message: str, logger: logging.Logger = log, level: int = logging.INFO,
                 mark: bool | Callable[[str], None] = True, cap: float | None = None,
                 fields: Mapping[str, object] | None = None) -> None:
        self._backoff = Backoff(policy)
        self._metrics = metrics
        self._component = component
        self._message = message
        self._logger = logger
        self._level = level
        self._mark = mark
        self._cap = cap
        self._fields = dict(fields or {})

    @property
    def failures(self) -> int:
        """Retries since the last `reset`."""
        return self._backoff.failures

    def reset(self) -> None:
        """After a success: the next failure waits the shortest delay again."""
        self._backoff.reset()

    async def pause(self, reason: str, *, retry_after: float | None = None,
                    exc_info: BaseException | None = None) -> float:
        """Back off, mark, count, log, sleep. Returns the wait slept."""
        wait = self._backoff.next(retry_after)
        if self._cap is not None:
            wait = min(self._cap, wait)
        c = self._component
        if self._mark is True:
            c.set(State.RETRYING, reason)
        elif self._mark:
            self._mark(reason)
        self._metrics.retried(c.kind, c.name, wait)
        c.beat(wait + BEAT_SLACK)
        self._logger.log(self._level, self._message, {
            **self._fields, "kind": c.kind, "name": c.name, "reason": reason,
            "attempt": self._backoff.failures, "wait": wait}, exc_info=exc_info)
        await anyio.sleep(wait)
        return wait


async def retrying(
    op: Callable[[], Awaitable[T]],
    *,
    policy: config.Backoff,
    retry_on: Callable[[BaseException], bool],
    metrics: Metrics,
    component: Component,
    what: str,
    attempts: int | None = None,
) -> T:
    """Run `op` until it succeeds, raises something `retry_on` refuses, or has failed
    `attempts` times (then its last error is raised). An error's `retry_after` (seconds)
    lengthens the wait before the next try. Cancellation is never an error to decide on:
    it goes straight through."""
    retries = Retries(policy, metrics=metrics, component=component,
                      message="%(kind)s %(name)s: retry %(attempt)d in %(wait).1fs: %(reason)s")
    while True:
        try:
            return await op()
        except Exception as exc:
            if not retry_on(exc) or (attempts and retries.failures + 1 >= attempts):
                raise
            hint = getattr(exc, "retry_after", None)
            await retries.pause(f"{what}: {exc}",
                                retry_after=float(hint) if isinstance(hint, (int, float)) else None)
