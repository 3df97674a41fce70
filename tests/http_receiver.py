"""A real HTTP receiver on loopback for the http sink's tests and drills.

A Starlette app on uvicorn (optionally over TLS with throwaway certificates) that
records every request (headers, body, arrival time, the status it answered) and whose
answers the test scripts through `knobs`: the next N requests fail with a status
(and a Retry-After), hang past the client's timeout, 400 for bodies holding a marker,
410 for everything, or fail at random from a seed.

In the test's own event loop::

    async with Receiver() as rx:
        ... url = "{rx.url}/hook" ...
        rx.knobs.fail_next = 2             # the next two requests get 500
        await until(lambda: len(rx.events()) == 10)

From a thread, for a test that drives a real `streamd run` (conftest's `background`)::

    rx = Receiver()
    background.start(rx.serve)
    wait_for(lambda: rx.url, 10, "the receiver")

`events()` is what was delivered: the CloudEvents of every request answered 2xx, in
arrival order, batches unpacked. `requests` is everything, answered or not.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

from streamd.certs import Certs
from streamd.simulated import SimulatedServer

from .ports import free_port

BATCH_TYPE = "application/cloudevents-batch+json"


@dataclass
class Knobs:
    """How the receiver answers; change them at any time (from any thread)."""

    status: int = 200  # the answer when nothing below applies
    fail_next: int = 0  # the next N requests get `fail_status`
    fail_status: int = 500
    # Retry-After sent with those failures and with 410; a callable is asked at answer time
    retry_after: str | Callable[[], str] | None = None
    hang_next: int = 0  # the next N requests get no answer for `hang` seconds, then 503
    hang: float = 30.0
    refuse: bytes | None = None  # a body holding these bytes gets `refuse_status`, `refuse_body`
    refuse_status: int = 400
    refuse_body: bytes = b'{"error": "the test receiver refuses this event"}'
    gone: bool = False  # 410 Gone to everything
    # The share of requests failed at random (from `seed`): half 500, 3/10 429 with
    # `chaos_retry_after`, 1/5 a hang of `hang` seconds.
    chaos: float = 0.0
    chaos_retry_after: str = "1"
    seed: int = 0
    latency: float = 0.0  # seconds before answering
    path_latency: dict[str, float] = field(default_factory=dict)  # per path, instead of `latency`


@dataclass
class Request:
    """One request as the receiver saw it. `at` and `answered` are time.monotonic()."""

    n: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int = 0  # 0: never answered (the receiver stopped while holding it)
    answered: float = 0.0
    why: str = ""  # the knob that made the answer: fail, hang, refuse, gone, chaos-…

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def cloudevents(self) -> list[dict[str, Any]]:
        decoded = json.loads(self.body)
        if self.headers.get("content-type", "").startswith(BATCH_TYPE):
            assert isinstance(decoded, list)
            return decoded
        assert isinstance(decoded, dict)
        return [decoded]




class Receiver(SimulatedServer):
    """`certs`: serve https with these (the sink's `ca` is certs.ca). `port` 0: a free
    port outside the ephemeral range (tests/ports.py), kept for the next serve() (a
    restart on the same port)."""

    NAME = "test receiver"

    def __init__(self, certs: Certs | None = None, port: int = 0, knobs: Knobs | None = None) -> None:
        super().__init__(certs, port or free_port())
        self.knobs = knobs or Knobs()
        self.requests: list[Request] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Lock()
        self._rng = random.Random(self.knobs.seed)
        self._closing = anyio.Event()
        self._app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    # ------------------------------------------------------------ what arrived

    def accepted(self, path: str | None = None) -> list[Request]:
        """Requests answered 2xx, in arrival order (optionally only those to `path`)."""
        return [r for r in list(self.requests) if r.ok and (path is None or r.path == path)]

    def events(self, path: str | None = None) -> list[dict[str, Any]]:
        """Every delivered CloudEvent, in arrival order, batches unpacked (duplicates kept)."""
        return [ce for r in self.accepted(path) for ce in r.cloudevents()]

    # ------------------------------------------------------------ answering

    def _decide(self, body: bytes) -> tuple[int, str]:
        k = self.knobs
        with self._lock:
            if k.gone:
                return 410, "gone"
            if k.fail_next > 0:
                k.fail_next -= 1
                return k.fail_status, "fail"
            if k.hang_next > 0:
                k.hang_next -= 1
                return 0, "hang"
            if k.refuse is not None and k.refuse in body:
                return k.refuse_status, "refuse"
            if k.chaos and self._rng.random() < k.chaos:
                roll = self._rng.random()
                return (500, "chaos-500") if roll < 0.5 else (429, "chaos-429") if roll < 0.8 \
                    else (0, "chaos-hang")
            return k.status, ""

    async def _handle(self, request: HttpRequest) -> Response:
        body = await request.body()
        rec = Request(n=len(self.requests), method=request.method, path=request.url.path,
                      headers={k.decode("latin-1").lower(): v.decode("latin-1")
                               for k, v in request.headers.raw},
                      body=body, at=time.monotonic())
        self.requests.append(rec)
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            status, rec.why = self._decide(body)
            k = self.knobs
            if status == 0:  # hang: past the client's timeout, or until the receiver stops
                with anyio.move_on_after(k.hang):
                    await self._closing.wait()
                status = 503
            elif k.path_latency.get(rec.path, k.latency):
                await anyio.sleep(k.path_latency.get(rec.path, k.latency))
            headers = {}
            if rec.why == "chaos-429":
                headers["retry-after"] = k.chaos_retry_after
            elif rec.why in ("fail", "gone") and k.retry_after is not None:
                headers["retry-after"] = k.retry_after() if callable(k.retry_after) else k.retry_after
            content = k.refuse_body if rec.why == "refuse" else b'{"ok": true}' if status < 300 else \
                f'{{"error": "test receiver: {rec.why or status}"}}'.encode()
            rec.status, rec.answered = status, time.monotonic()
            return Response(content, status_code=status, headers=headers, media_type="application/json")
        finally:
            with self._lock:
                self.in_flight -= 1

    # ------------------------------------------------------------ serving

    def _prepare(self) -> None:
        self._closing = anyio.Event()

    def _stopping(self) -> None:
        self._closing.set()  # hung requests answer now, so shutdown is quick
