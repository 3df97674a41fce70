"""The one retry step (`retry.Retries.pause`) and `retrying()`, without sockets: a real
metrics registry and a real health component, waits of milliseconds."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

import anyio
import pytest

from streamd.config import BackoffPolicy
from streamd.health import Health, State
from streamd.metrics import Metrics
from streamd.retry import BEAT_SLACK, RETRY_AFTER_CAP, Retries, delay, retrying
from streamd.units import Duration

from .test_store import sample

pytestmark = pytest.mark.anyio
TINY = BackoffPolicy(min=Duration(0.001), max=Duration(0.004))
SLOW = BackoffPolicy(min=Duration(2.0), max=Duration(60.0))


def parts() -> tuple[Metrics, Health]:
    return Metrics(), Health()


# ---------------------------------------------------------------- the delays, by data

@pytest.mark.parametrize(("attempt", "low", "high"), [
    (1, 1.0, 2.0),     # cap = min: half of it, up to all of it
    (2, 2.0, 4.0),
    (5, 16.0, 32.0),
    (6, 30.0, 60.0),   # capped at max
    (40, 30.0, 60.0),
    (5000, 30.0, 60.0),  # 2^4999 is past a float: still the cap, never an overflow
])
def test_delays_grow_with_jitter_up_to_the_cap(attempt: int, low: float, high: float) -> None:
    waits = [delay(SLOW, attempt) for _ in range(200)]
    assert all(low <= w <= high for w in waits)
    assert max(waits) - min(waits) > (high - low) / 2, "jittered, not in lockstep"


@pytest.mark.parametrize(("retry_after", "at_least"), [
    (None, 1.0), (0.0, 1.0), (-5.0, 1.0), (30.0, 30.0), (10_000.0, RETRY_AFTER_CAP)])
def test_a_peers_retry_after_lengthens_the_wait_up_to_its_cap(retry_after: float | None,
                                                            at_least: float) -> None:
    wait = delay(SLOW, 1, retry_after)
    assert at_least <= wait <= max(at_least, 2.0)


# ---------------------------------------------------------------- the step

async def test_a_retry_is_backed_off_marked_counted_promised_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    metrics, health = parts()
    c = health.add("sink", "out", watched=True)
    retries = Retries(TINY, metrics=metrics, component=c, level=logging.WARNING,
                      message="%(kind)s %(name)s: %(reason)s; retry %(attempt)d in %(wait).3fs")
    caplog.set_level(logging.INFO, logger="streamd.retry")
    before = anyio.current_time()
    waits = [await retries.pause("receiver busy"), await retries.pause("receiver still busy")]
    assert anyio.current_time() - before >= sum(waits)
    assert all(w <= TINY.max.seconds for w in waits)
    assert c.state is State.RETRYING and c.reason == "receiver still busy"
    assert c.deadline > health.now() + BEAT_SLACK - 1, "the watchdog is promised the wait and more"
    assert sample(metrics, "streamd_retries_total", component="sink", name="out") == 2
    assert sample(metrics, "streamd_retry_wait_seconds_total", component="sink",
                  name="out") == pytest.approx(sum(waits))
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f"sink out: receiver busy; retry 1 in {waits[0]:.3f}s"),
        ("WARNING", f"sink out: receiver still busy; retry 2 in {waits[1]:.3f}s")]


async def test_an_outage_keeps_its_since_however_many_retries_it_takes() -> None:
    metrics, _ = parts()
    now = [100.0]
    c = Health(clock=lambda: now[0]).add("source", "gw")
    retries = Retries(TINY, metrics=metrics, component=c, message="%(reason)s")
    await retries.pause("connection lost")
    now[0] = 250.0
    await retries.pause("cannot connect")
    assert c.since == 100.0 and c.describe(now[0]) == "retrying for 150s: cannot connect"


async def test_reset_after_a_success_starts_the_delays_over() -> None:
    metrics, health = parts()
    retries = Retries(TINY, metrics=metrics, component=health.add("source", "s"), message="-")
    for _ in range(3):
        await retries.pause("down")
    assert retries.failures == 3
    retries.reset()
    assert retries.failures == 0
    await retries.pause("down again")
    assert retries.failures == 1


async def test_the_cap_bounds_every_wait_a_peers_retry_after_included() -> None:
    metrics, health = parts()
    retries = Retries(SLOW, metrics=metrics, component=health.add("source", "poller"),
                      message="-", cap=0.01)
    assert await retries.pause("HTTP 429", retry_after=600.0) == 0.01


async def test_how_a_retry_is_marked_is_the_loops_to_say() -> None:
    metrics, health = parts()
    left = health.add("sink", "poison")
    left.ok()
    await Retries(TINY, metrics=metrics, component=left, message="-", mark=False).pause("refused")
    assert left.state is State.OK, "mark=False leaves the component as it was"
    assert sample(metrics, "streamd_retries_total", component="sink", name="poison") == 1

    told: list[str] = []
    custom = health.add("source", "poller")
    await Retries(TINY, metrics=metrics, component=custom, message="-", mark=told.append).pause("HTTP 503")
    assert told == ["HTTP 503"] and custom.state is State.STARTING


async def test_a_reason_is_logged_as_it_is_whatever_it_holds(caplog: pytest.LogCaptureFixture) -> None:
    metrics, health = parts()
    caplog.set_level(logging.INFO, logger="streamd.retry")
    retries = Retries(TINY, metrics=metrics, component=health.add("source", "ap"),
                      message="source %(name)s: poll%(where)s failed (%(reason)s)",
                      fields={"where": " of {tenant}/%s"})
    await retries.pause("100% of {0} %(name)s")
    assert caplog.records[0].getMessage() == "source ap: poll of {tenant}/%s failed (100% of {0} %(name)s)"


async def test_the_exception_is_logged_with_its_traceback_when_given(
        caplog: pytest.LogCaptureFixture) -> None:
    metrics, health = parts()
    caplog.set_level(logging.INFO, logger="streamd.retry")
    error = ValueError("boom")
    try:
        raise error
    except ValueError as exc:
        await Retries(TINY, metrics=metrics, component=health.add("source", "s"), level=logging.ERROR,
                      message="%(kind)s %(name)s crashed").pause("crashed", exc_info=exc)
    record = caplog.records[0]
    assert record.levelname == "ERROR" and record.exc_info is not None and record.exc_info[1] is error


# ---------------------------------------------------------------- retrying()

class Busy(Exception):
    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("busy")
        self.retry_after = retry_after


async def test_retrying_runs_until_success_counting_each_retry() -> None:
    metrics, health = parts()
    c = health.add("sink", "out")
    calls = 0

    async def op() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise Busy()
        return "done"

    assert await retrying(op, policy=TINY, retry_on=lambda e: isinstance(e, Busy), metrics=metrics,
                          component=c, what="delivering") == "done"
    assert calls == 4 and sample(metrics, "streamd_retries_total", component="sink", name="out") == 3
    assert c.state is State.RETRYING and c.reason == "delivering: busy"


async def test_retrying_waits_are_bounded_by_the_policy_and_each_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    """Past the cap the waits stop growing: eight retries of a 1–4 ms policy, each logged with
    its wait, each at most `max`, their sum the metric's."""
    metrics, health = parts()
    caplog.set_level(logging.INFO, logger="streamd.retry")
    calls = 0

    async def op() -> None:
        nonlocal calls
        calls += 1
        if calls <= 8:
            raise Busy()

    await retrying(op, policy=TINY, retry_on=lambda e: isinstance(e, Busy), metrics=metrics,
                   component=health.add("sink", "out"), what="delivering")
    logged = [cast(Mapping[str, Any], r.args) for r in caplog.records]
    assert [a["attempt"] for a in logged] == list(range(1, 9))
    slept = [float(a["wait"]) for a in logged]
    assert all(TINY.min.seconds / 2 <= w <= TINY.max.seconds for w in slept)
    assert all(w >= TINY.max.seconds / 2 for w in slept[2:]), "from the 3rd retry on, at the cap"
    assert sample(metrics, "streamd_retries_total", component="sink", name="out") == 8
    assert sample(metrics, "streamd_retry_wait_seconds_total", component="sink",
                  name="out") == pytest.approx(sum(slept))


async def test_retrying_gives_up_after_its_attempts_with_the_last_error() -> None:
    metrics, health = parts()
    offered: list[BaseException] = []

    def retry_on(exc: BaseException) -> bool:
        offered.append(exc)
        return True

    errors = iter([Busy(), Busy(), Busy(), Busy()])

    async def op() -> None:
        raise next(errors)

    with pytest.raises(Busy) as caught:
        await retrying(op, policy=TINY, retry_on=retry_on, metrics=metrics,
                       component=health.add("source", "api"), what="GET", attempts=3)
    assert len(offered) == 3 and caught.value is offered[-1], "every failure decided on, the last raised"
    assert sample(metrics, "streamd_retries_total", component="source", name="api") == 2


async def test_retrying_raises_at_once_what_retry_on_refuses() -> None:
    metrics, health = parts()

    async def op() -> None:
        raise KeyError("fatal")

    with pytest.raises(KeyError):
        await retrying(op, policy=TINY, retry_on=lambda e: isinstance(e, Busy), metrics=metrics,
                       component=health.add("source", "api"), what="GET")
    assert sample(metrics, "streamd_retries_total", component="source", name="api") == 0


async def test_retrying_waits_at_least_an_errors_retry_after() -> None:
    metrics, health = parts()
    calls = 0

    async def op() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Busy(retry_after=0.05)

    await retrying(op, policy=TINY, retry_on=lambda e: isinstance(e, Busy), metrics=metrics,
                   component=health.add("sink", "out"), what="delivering")
    assert sample(metrics, "streamd_retry_wait_seconds_total", component="sink", name="out") >= 0.05


async def test_a_cancelled_attempt_is_not_an_error_to_decide_on() -> None:
    """A stop cancels an attempt in flight: that is no failure of the peer, and must not be
    counted as one (a sink's `retry_on` counts failures and gives up draining)."""
    metrics, health = parts()
    offered: list[BaseException] = []
    started = anyio.Event()

    async def op() -> None:
        started.set()
        await anyio.sleep_forever()

    def retry_on(exc: BaseException) -> bool:
        offered.append(exc)
        return False

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: retrying(op, policy=TINY, retry_on=retry_on, metrics=metrics,
                                       component=health.add("sink", "out"), what="delivering"))
        await started.wait()
        tg.cancel_scope.cancel()
    assert offered == []
