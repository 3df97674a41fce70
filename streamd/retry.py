"""Retries: capped, jittered exponential backoff (tenacity), visible in metrics and health.

Every retry streamd makes goes through `retrying()` (one operation retried until
it succeeds) or `Backoff` (a long-lived loop that resets after a success). Either
way the delay is bounded (`backoff.max`, or a peer's `Retry-After` up to
`RETRY_AFTER_CAP`), and each sleep is counted in `streamd_retries_total` and
shown as `retrying` in `/readyz`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import TypeVar

import anyio
import tenacity

from .config import BackoffPolicy
from .health import Component, State
from .metrics import Metrics

log = logging.getLogger("streamd.retry")

T = TypeVar("T")
_RNG = random.Random()
RETRY_AFTER_CAP = 900.0  # a peer may ask for up to 15 minutes, never more


def delay(policy: BackoffPolicy, attempt: int, retry_after: float | None = None,
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
    """Delays for a long-lived loop (reconnects, polls): grows on failure, resets on success."""

    def __init__(self, policy: BackoffPolicy) -> None:
        self.policy = policy
        self.failures = 0

    def next(self, retry_after: float | None = None) -> float:
        self.failures += 1
        return delay(self.policy, self.failures, retry_after)

    def reset(self) -> None:
        self.failures = 0


class _Wait(tenacity.wait.wait_base):
    def __init__(self, policy: BackoffPolicy) -> None:
        self.policy = policy

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        hint = getattr(exc, "retry_after", None)
        return delay(self.policy, retry_state.attempt_number,
                     float(hint) if isinstance(hint, (int, float)) else None)


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
    `attempts` times (then its last error is raised)."""
    labels = (component.kind, component.name)

    def before_sleep(rs: tenacity.RetryCallState) -> None:
        sleep = rs.next_action.sleep if rs.next_action else 0.0
        exc = rs.outcome.exception() if rs.outcome else None
        reason = f"{what}: {exc}" if exc else what
        metrics.retried(*labels, sleep)
        component.set(State.RETRYING, reason)
        component.beat(sleep + 30.0)
        log.info("%s %s: retry %d in %.1fs: %s", component.kind, component.name,
                 rs.attempt_number, sleep, reason)

    async def attempt() -> T:
        # tenacity awaits only coroutine *functions*; a lambda returning a coroutine would
        # be "called" and its coroutine dropped unawaited. Always hand it one.
        return await op()

    retryer = tenacity.AsyncRetrying(
        sleep=anyio.sleep,
        wait=_Wait(policy),
        retry=tenacity.retry_if_exception(retry_on),
        before_sleep=before_sleep,
        stop=tenacity.stop_after_attempt(attempts) if attempts else tenacity.stop_never,
        reraise=True,
    )
    return await retryer(attempt)
