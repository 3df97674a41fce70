"""Retries: capped, jittered exponential backoff (tenacity), visible in metrics, health and the log.

Every retry streamd makes is one step: back off (tenacity's exponential waits, capped at
the policy's `max`, at least a peer's `Retry-After` up to `RETRY_AFTER_CAP`), mark the
component `retrying`, count the retry in `streamd_retries_total`, promise the watchdog to
come back, log it, sleep (anyio's, so a stop cancels the wait). `Retries` holds that step
once; two shapes use it:

- a long-lived loop (a reconnect, a poll, a supervised restart, a commit) keeps one
  `Retries`, calls `pause` after a failure and `reset` after a success, as websockets'
  `connect.__aiter__` keeps its `backoff()` generator;
- `retrying()` runs one operation until it succeeds: a tenacity `AsyncRetrying` whose
  `before_sleep` is the step, and `retry_on` decides, for each error, whether it is worth
  another try (websockets' `process_exception`).

What differs between loops is said where the loop builds its `Retries` (the log level and
message, a cap such as a poller's interval, how the component is marked), never copied.
A component marked `retrying` while already retrying keeps its `since` (`Component.set`),
so /readyz measures the whole outage, however many retries it takes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import TypeVar

import anyio
import tenacity

from .config import BackoffPolicy
from .health import Component, State
from .metrics import Metrics

log = logging.getLogger("streamd.retry")

T = TypeVar("T")
RETRY_AFTER_CAP = 900.0  # a peer may ask for up to 15 minutes, never more
# A loop about to sleep `wait` promises the watchdog to beat again within wait + this:
# room for the step after the sleep to reach its own beat.
BEAT_SLACK = 60.0


def waits(policy: BackoffPolicy) -> tenacity.wait.wait_base:
    """The policy's waits as tenacity's strategy: equal jitter over a capped exponential.
    The n-th wait is cap/2 plus a random part up to cap/2, cap = min(max, min * 2^(n-1)),
    so waits grow but two clients never retry in lockstep, and none is longer than `max`
    (tenacity answers an exponent past a float's range with the cap, never an error)."""
    half_min, half_max = policy.min.seconds / 2, policy.max.seconds / 2
    return (tenacity.wait_exponential(multiplier=half_min, max=half_max)
            + tenacity.wait_random_exponential(multiplier=half_min, max=half_max))


def at_least_retry_after(wait: float, retry_after: float | None) -> float:
    """`wait`, lengthened to a peer's `retry_after` (seconds) up to `RETRY_AFTER_CAP`."""
    if retry_after is not None and retry_after > 0:
        return max(wait, min(retry_after, RETRY_AFTER_CAP))
    return wait


def delay(policy: BackoffPolicy, attempt: int, retry_after: float | None = None) -> float:
    """The wait before retry number `attempt` (1-based), as `Retries` and `retrying()`
    compute it."""
    state = tenacity.RetryCallState(tenacity.AsyncRetrying(), None, (), {})
    state.attempt_number = attempt
    return at_least_retry_after(waits(policy)(state), retry_after)


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


def _retry_after_of(exc: BaseException | None) -> float | None:
    hint = getattr(exc, "retry_after", None)
    return float(hint) if isinstance(hint, (int, float)) else None


class Retries:
    """The retries of one loop, each one the same step.

    `message` is a %-style template over `kind`, `name` (the component's), `reason`,
    `attempt` (1-based since the last `reset`), `wait` and `fields`: the data stays out of
    the template, so a reason holding `%` or `{` is logged as it is (and escaped by the log
    formatter, as every record is). `mark` says how a retry shows: True marks the component
    `retrying` with the reason; a callable is called with the reason instead (a poller's
    `PollHealth.fail`, which knows what else it holds); False leaves the component as it is
    (one refused event retried while the sink goes on). `cap` bounds every wait, a peer's
    `Retry-After` included (a poller never waits past its next poll)."""

    def __init__(self, policy: BackoffPolicy, *, metrics: Metrics, component: Component,
                 message: str, logger: logging.Logger = log, level: int = logging.INFO,
                 mark: bool | Callable[[str], None] = True, cap: float | None = None,
                 fields: Mapping[str, object] | None = None) -> None:
        self._waits = waits(policy)
        self._metrics = metrics
        self._component = component
        self._message = message
        self._logger = logger
        self._level = level
        self._mark = mark
        self._cap = cap
        self._fields = dict(fields or {})
        # A long-lived loop's failures, in the shape tenacity's strategies read.
        self._state = tenacity.RetryCallState(tenacity.AsyncRetrying(), None, (), {})
        self._state.attempt_number = 0

    @property
    def failures(self) -> int:
        """Retries since the last `reset`."""
        return self._state.attempt_number

    def reset(self) -> None:
        """After a success: the next failure waits the shortest delay again."""
        self._state.attempt_number = 0

    def _wait(self, state: tenacity.RetryCallState, retry_after: float | None) -> float:
        wait = at_least_retry_after(self._waits(state), retry_after)
        return wait if self._cap is None else min(self._cap, wait)

    def _step(self, reason: str, attempt: int, wait: float,
              exc_info: BaseException | None = None) -> None:
        """Mark, count, promise, log: everything a retry does before its sleep."""
        c = self._component
        if self._mark is True:
            c.set(State.RETRYING, reason)
        elif self._mark:
            self._mark(reason)
        self._metrics.retried(c.kind, c.name, wait)
        c.beat(wait + BEAT_SLACK)
        self._logger.log(self._level, self._message, {
            **self._fields, "kind": c.kind, "name": c.name, "reason": reason,
            "attempt": attempt, "wait": wait}, exc_info=exc_info)

    async def pause(self, reason: str, *, retry_after: float | None = None,
                    exc_info: BaseException | None = None) -> float:
        """Back off, mark, count, log, sleep. Returns the wait slept."""
        self._state.attempt_number += 1
        wait = self._wait(self._state, retry_after)
        self._step(reason, self._state.attempt_number, wait, exc_info)
        await anyio.sleep(wait)
        return wait

    async def call(self, op: Callable[[], Awaitable[T]], *, retry_on: Callable[[BaseException], bool],
                   what: str, attempts: int | None = None) -> T:
        """`retrying()` with this loop's step (see there)."""

        def wait(rs: tenacity.RetryCallState) -> float:
            return self._wait(rs, _retry_after_of(rs.outcome.exception() if rs.outcome else None))

        def before_sleep(rs: tenacity.RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            self._step(f"{what}: {exc}" if exc else what, rs.attempt_number, rs.upcoming_sleep)

        def worth_another(exc: BaseException) -> bool:
            # tenacity catches BaseException: a cancelled attempt (a stop mid-delivery) is no
            # failure of the peer, and must not reach `retry_on`, which may count failures.
            return isinstance(exc, Exception) and retry_on(exc)

        async def attempt() -> T:
            # tenacity awaits only coroutine *functions*; a lambda returning a coroutine would
            # be "called" and its coroutine dropped unawaited. Always hand it one.
            return await op()

        retryer = tenacity.AsyncRetrying(
            sleep=anyio.sleep,
            wait=wait,
            retry=tenacity.retry_if_exception(worth_another),
            before_sleep=before_sleep,
            stop=tenacity.stop_after_attempt(attempts) if attempts else tenacity.stop_never,
            reraise=True,
        )
        return await retryer(attempt)


async def retrying(
    op: Callable[[], Awaitable[T]],
    *,
    policy: BackoffPolicy,
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
    return await retries.call(op, retry_on=retry_on, what=what, attempts=attempts)
