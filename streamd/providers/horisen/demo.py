"""HORISEN's part in `streamd demo`: its API simulated (OAuth2 client credentials), five
days of documents with their traffic reports, polled every 10 seconds, and a platform at
work: every few seconds an invoice is issued and an open one is paid."""

from __future__ import annotations

from typing import Any

import anyio
from anyio.abc import TaskStatus

from ...config import StoreConfig
from ...sources import DemoSetup
from .simulator import Knobs, simulator


class HorisenDemo:
    def __init__(self, setup: DemoSetup) -> None:
        self.name = setup.name
        self.sim = simulator(setup.directory / "horisen", Knobs(days=5, documents_per_day=4))

    async def serve(self, *, task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        await self.sim.serve(task_status=task_status)

    def source_toml(self, backoff: str) -> str:
        return self.sim.source_toml(self.name, interval='"10s"', backoff=backoff)

    async def prepare(self, store: StoreConfig) -> None:
        return

    def banner(self, listener: str) -> list[str]:
        return [f"the HORISEN API simulator at {self.sim.api_url} (client credentials), polled every 10s"]

    async def activity(self, listener: str) -> None:
        sim = self.sim
        while True:
            await anyio.sleep(6)
            sim.mutate(new=1, paid=1 if any(d["paymentStatus"] == "open" and d["status"] == "approved"
                                             for d in sim.documents().values()) else 0)
