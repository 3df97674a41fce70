"""What `/readyz` and the systemd watchdog know: the state of every component.

Each component (the store writer, every source, every sink) owns a `Component`
and says what it is doing: `ok`, `retrying` (since when, and why), `failed`,
`paused`. Readiness tolerates `retrying` for a grace period (the component's
backoff cap), so a single reconnect does not flap `/readyz`.

Loops the watchdog guards (the writer and each sink dispatcher) also promise to
come back: `beat(within=s)` says "I will beat again within s seconds". A loop that
misses its own promise is wedged, and the daemon stops sending WATCHDOG=1, so
systemd restarts it.

A reason is often an exception's text, and an HTTP library's names the URL it failed
on: reasons are kept with URLs redacted (`secrets.redact`), so a query token never
reaches `/readyz` or `streamd status`. They are kept unescaped (the JSON of `/readyz`
carries them as they are); every text rendering escapes them (`escape.escape`).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from .secrets import redact


class State(enum.StrEnum):
    STARTING = "starting"
    OK = "ok"
    RETRYING = "retrying"
    PAUSED = "paused"
    HELD = "held"  # running, but holding back what it must not do alone (deletions); unhealthy
    FAILED = "failed"
    STOPPED = "stopped"


class Component:
    def __init__(self, kind: str, name: str, *, grace: float, watched: bool,
                 clock: Callable[[], float]) -> None:
        self.kind = kind
        self.name = name
        self.grace = grace
        self.watched = watched
        self._clock = clock
        self.state = State.STARTING
        self._reason = ""
        self.since = clock()
        self.deadline = clock() + 3600.0 if watched else float("inf")

    @property
    def reason(self) -> str:
        return self._reason

    @reason.setter
    def reason(self, text: str) -> None:
        self._reason = redact(text)

    def set(self, state: State, reason: str = "") -> None:
        if state is not self.state:
            self.since = self._clock()
        self.state = state
        self.reason = reason

    def ok(self) -> None:
        self.set(State.OK)

    def beat(self, within: float) -> None:
        self.deadline = self._clock() + within

    def healthy(self, now: float) -> bool:
        if self.state is State.OK:
            return True
        if self.state is State.RETRYING:
            return now - self.since <= self.grace
        return False

    def describe(self, now: float) -> str:
        if self.state is State.OK:
            return "ok"
        text = f"{self.state.value} for {now - self.since:.0f}s"
        return f"{text}: {self.reason}" if self.reason else text


class Health:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.components: dict[tuple[str, str], Component] = {}

    def now(self) -> float:
        return self._clock()

    def add(self, kind: str, name: str, *, grace: float = 0.0, watched: bool = False) -> Component:
        c = Component(kind, name, grace=grace, watched=watched, clock=self._clock)
        self.components[(kind, name)] = c
        return c

    def get(self, kind: str, name: str) -> Component:
        return self.components[(kind, name)]

    def report(self) -> tuple[bool, list[str]]:
        """(ready, one line per component), unhealthy ones first."""
        now = self._clock()
        bad: list[str] = []
        good: list[str] = []
        for c in self.components.values():
            line = f"{c.kind} {c.name}: {c.describe(now)}"
            (good if c.healthy(now) else bad).append(line)
        return not bad, bad + good

    def wedged(self) -> list[str]:
        """Watched loops that missed their own promise to beat again."""
        now = self._clock()
        return [f"{c.kind} {c.name}" for c in self.components.values()
                if c.watched and now > c.deadline]
