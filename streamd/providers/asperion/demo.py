"""Asperion's part in `streamd demo`: its API and identity server simulated (HTTPS, OAuth2
with rotating refresh tokens), polled every 10 seconds, the tokens a sign-in would have
left already in the store, and a user at work: every few seconds a debtor, invoice or
article is added, changed (an invoice paid) or removed; the next poll turns that into
events."""

from __future__ import annotations

import anyio

from ...config import StoreConfig
from ...sources import DemoSetup, Simulated
from .oauth import TokenState, save
from .simulator import AsperionSimulator, Knobs, simulator


class AsperionDemo(Simulated[AsperionSimulator]):
    def __init__(self, setup: DemoSetup) -> None:
        super().__init__(setup, simulator(setup.directory / "asperion", Knobs(records=10)))

    def source_toml(self, backoff: str) -> str:
        return self.sim.source_toml(self.name, interval='"10s"', backoff=backoff)

    async def prepare(self, store: StoreConfig) -> None:
        # What `streamd auth` would leave behind after signing in.
        await save(store, self.name, TokenState(refresh_token=self.sim.issue_refresh_token()))

    def banner(self, listener: str) -> list[str]:
        return [f"the Asperion API simulator at {self.sim.base_url} (OAuth2, TLS 1.3), polled every 10s"]

    async def activity(self, listener: str) -> None:
        while True:
            await anyio.sleep(4)
            self.sim.mutate(1, 2, 1)
