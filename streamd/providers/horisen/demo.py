"""HORISEN's part in `streamd demo`: its API simulated (OAuth2 client credentials), five
days of documents with their traffic reports, polled every 10 seconds, and a platform at
work: every few seconds an invoice is issued and an open one is paid."""

from __future__ import annotations

import anyio

from ...sources import DemoSetup, Simulated
from .simulator import HorisenSimulator, Knobs, simulator


class HorisenDemo(Simulated[HorisenSimulator]):
    def __init__(self, setup: DemoSetup) -> None:
        super().__init__(setup, simulator(setup.directory / "horisen", Knobs(days=5, documents_per_day=4)))

    def source_toml(self, backoff: str) -> str:
        return self.sim.source_toml(self.name, interval='"10s"', backoff=backoff)

    def banner(self, listener: str) -> list[str]:
        return [f"the HORISEN API simulator at {self.sim.api_url} (client credentials), polled every 10s"]

    async def activity(self, listener: str) -> None:
        sim = self.sim
        while True:
            await anyio.sleep(6)
            sim.mutate(new=1, paid=1 if any(d["paymentStatus"] == "open" and d["status"] == "approved"
                                             for d in sim.documents().values()) else 0)
