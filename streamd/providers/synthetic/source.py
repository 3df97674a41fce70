"""The synthetic source: generates records at `rate`, and takes them by webhook."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta

import anyio
from anyio.abc import TaskStatus

from ...errors import Rejected
from ...model import Event
from ...sources import SourceContext, WebhookReply, WebhookRequest, json_reply
from ...store import Batch, DeadLetter
from . import wire
from .config import SyntheticConfig
from .normalize import normalize, split

log = logging.getLogger("streamd.source.synthetic")


class SyntheticSource:
    def __init__(self, ctx: SourceContext, cfg: SyntheticConfig) -> None:
        self.name = ctx.name
        self.ctx = ctx
        self.cfg = cfg
        if cfg.webhook:
            ctx.webhook(f"/webhooks/{ctx.name}", self.handle, auth=self.auth)

    def renormalize(self, raw: bytes, context: Mapping[str, str], received_at: datetime) -> list[Event]:
        return [normalize(raw, source=self.name, received_at=received_at)]

    def _normalize_all(self, records: list[bytes], received_at: datetime,
                       context: Mapping[str, str]) -> tuple[list[Event], list[DeadLetter]]:
        events: list[Event] = []
        rejects: list[DeadLetter] = []
        for raw in records:
            try:
                events.append(normalize(raw, source=self.name, received_at=received_at))
            except Rejected as exc:
                rejects.append(self.ctx.dead_letter(exc.reason, raw, context))
        return events, rejects

    # ------------------------------------------------------------------ generator

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        cfg = self.cfg
        progress = await self.ctx.progress()
        n = int(progress.get("next", 0))
        epoch_text = progress.get("epoch")
        epoch = (datetime.fromisoformat(epoch_text) if isinstance(epoch_text, str)
                 else wire.epoch_now(self.ctx.now()))
        self.ctx.metrics.source_connected.labels(self.name).set(1)
        self.ctx.component.ok()
        task_status.started()
        if not cfg.generate:
            await anyio.sleep_forever()
        next_at = anyio.current_time()
        step = timedelta(seconds=1 / cfg.rate) if cfg.rate > 0 else timedelta(milliseconds=1)
        while not cfg.count or n < cfg.count:
            k = cfg.batch if not cfg.count else min(cfg.batch, cfg.count - n)
            records = [wire.record(cfg.seed, i, list(cfg.tenants), epoch, step=step,
                                   malformed=self._malformed(i))
                       for i in range(n, n + k)]
            self.ctx.received(k)
            events, rejects = self._normalize_all(records, self.ctx.now(), {"via": "generator"})
            # Progress commits with the events it produced: a crash replays from `next`.
            await self.ctx.submit(Batch(events=events, dead_letters=rejects,
                                        progress={"next": n + k, "epoch": epoch.isoformat()}))
            n += k
            if cfg.rate > 0:
                next_at += k / cfg.rate
                await anyio.sleep(max(next_at - anyio.current_time(), 0.0))
            else:
                await anyio.lowlevel.checkpoint()
        log.info("source %s: generated all %d records", self.name, n)
        await anyio.sleep_forever()

    def _malformed(self, i: int) -> bool:
        every = self.cfg.reject_every
        return bool(every) and i % every == every - 1

    # ------------------------------------------------------------------ webhook

    def auth(self, headers: Mapping[str, str]) -> WebhookReply | None:
        """Before the body is read: the bearer token, compared in constant time."""
        assert self.cfg.token is not None  # config validation requires it with webhook = true
        got = headers.get("authorization", "")
        want = "Bearer " + self.cfg.token.reveal()
        if hmac.compare_digest(got.encode(), want.encode()):
            return None
        return json_reply(401, error="missing or wrong bearer token")

    async def handle(self, req: WebhookRequest) -> WebhookReply:
        ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return json_reply(415, error="content-type must be application/json")
        received_at = self.ctx.now()
        context = {"via": "webhook"}
        try:
            records = split(req.body)
        except Rejected as exc:
            self.ctx.received()
            await self.ctx.submit(Batch(dead_letters=[self.ctx.dead_letter(exc.reason, req.body,
                                                                           context)]))
            return json_reply(400, error=exc.reason)
        self.ctx.received(len(records))
        events, rejects = self._normalize_all(records, received_at, context)
        done = await self.ctx.submit(Batch(events=events, dead_letters=rejects))
        # 2xx only now: the events are committed (invariant 2).
        return json_reply(200, appended=done.appended, duplicates=done.duplicates,
                          rejected=len(rejects), ids=[e.id for e in events])
