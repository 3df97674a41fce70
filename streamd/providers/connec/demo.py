"""Maestrano Connec!'s part in `streamd demo`: its API simulated, polled every 10 seconds,
and a Maestrano customer at work: every few seconds an entity is created and another
changed, and Maestrano's webhook tells streamd's listener (the poller then sees the same
versions, and the feed keeps one copy)."""

from __future__ import annotations

import contextlib

import anyio
import httpx

from ...sources import DemoSetup, Simulated
from . import wire
from .simulator import ConnecSimulator, Knobs, notify, simulator


class ConnecDemo(Simulated[ConnecSimulator]):
    def __init__(self, setup: DemoSetup) -> None:
        super().__init__(setup, simulator(setup.directory / "connec", Knobs(entities=3)))

    def source_toml(self, backoff: str) -> str:
        return self.sim.source_toml(self.name, interval='"10s"', backoff=backoff)

    def banner(self, listener: str) -> list[str]:
        return [f"the Connec! API simulator at {self.sim.api_url}; its webhooks post to "
                f"{listener}{wire.NOTIFICATIONS_PATH}"]

    async def activity(self, listener: str) -> None:
        url = f"{listener}{wire.NOTIFICATIONS_PATH}"
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                await anyio.sleep(5)
                changes = self.sim.mutate(created=1, updated=1)
                with contextlib.suppress(httpx.HTTPError):  # the listener closes as the demo stops
                    await notify(self.sim, url, changes, client=http)
