"""Asteria's part in `streamd demo`: the partner gateway simulator (a websocket over mutual
TLS with throwaway certificates) sending events at `--rate`, with the odd dropped
connection, replay, malformed frame and unknown topic; and its webhook delivering, every
few seconds, a change the websocket already brought (the feed keeps one copy: the demo's
summary counts the duplicates dropped)."""

from __future__ import annotations

import contextlib
import os
import secrets

import anyio
import httpx

from ...sources import DemoSetup, Simulated
from .simulator import AsteriaSimulator, Knobs, send_webhooks, simulator

_SECRET_ENV = "STREAMD_DEMO_WEBHOOK_SECRET"
_HEADER = "x-streamd-webhook-secret"  # the source's default webhook_header


class AsteriaDemo(Simulated[AsteriaSimulator]):
    def __init__(self, setup: DemoSetup) -> None:
        self.certs = setup.directory / "certs"
        super().__init__(setup, simulator(self.certs, Knobs(
            count=0, rate=setup.rate, drop_every=400, replay=10, malformed_every=149,
            unknown_every=211, client_id="streamd-demo", stamp_now=True)))
        # The webhook's secret, for the source table to reference (a config holds no secret).
        self._secret = secrets.token_urlsafe(24)
        os.environ[_SECRET_ENV] = self._secret

    def source_toml(self, backoff: str) -> str:
        return self.sim.source_toml(self.name, webhook_secret=f'"env:{_SECRET_ENV}"', backoff=backoff)

    def banner(self, listener: str) -> list[str]:
        return [f"the Asteria gateway simulator at {self.sim.url} (mutual TLS, throwaway CA in "
                f"{self.certs})"]

    async def activity(self, listener: str) -> None:
        url = f"{listener}/webhooks/{self.name}"
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                await anyio.sleep(3)
                if self.sim.sent:
                    with contextlib.suppress(httpx.HTTPError):  # the listener closes as the demo stops
                        await send_webhooks(url, [self.sim.sent[-1]], header=_HEADER,
                                            secret=self._secret, client=http)
