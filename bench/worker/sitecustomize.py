"""A PROTOTYPE, for measuring only: Asteria's normalizing in worker processes
(`bench/ingest.py --normalize-worker`). Not how streamd runs, and not a design to ship.

Loaded by Python at start when this folder is on PYTHONPATH and STREAMD_WORKER is set.
It replaces the Asteria source's committer (`_commit_frames`): each batch of frames is
normalized in one of anyio's worker processes (`anyio.to_process`, as many as the
machine has cores), up to STREAMD_WORKER_DEPTH batches (3) at a time, while the event
loop reads, commits and delivers; the events come back as msgpack and are placed in
their tenants, in order, on the loop (the workers know no tenants: a frame whose
tenant its payload does not say is normalized again there, as the source does). What
it answers: how far a second interpreter would take the path on this machine, and at
what cost in CPU and memory. Bench-only: the daemon never loads it.
"""

from __future__ import annotations

import os

if os.environ.get("STREAMD_WORKER"):
    import sys
    from datetime import datetime, tzinfo
    from functools import partial
    from typing import Any

    import anyio
    import anyio.to_process
    import msgspec

    from streamd.errors import Rejected
    from streamd.model import Event
    from streamd.providers.asteria import source
    from streamd.providers.asteria.normalize import normalize_frame, tenant_unknown
    from streamd.sources.window import CommitWindow
    from streamd.store import Batch

    _DEPTH = int(os.environ.get("STREAMD_WORKER_DEPTH", "3"))
    _encoder = msgspec.msgpack.Encoder()
    _decoder = msgspec.msgpack.Decoder(list[list[Event] | str])

    def _work(frames: list[bytes], name: str, received_at: datetime, zone: tzinfo) -> bytes:
        """In a worker: each frame's events, or the reason it is refused."""
        out: list[list[Event] | str] = []
        for data in frames:
            try:
                out.append(normalize_frame(data, source=name, received_at=received_at, zone=zone))
            except Rejected as exc:
                out.append(exc.reason)
        return _encoder.encode(out)

    class _Slot:
        def __init__(self, frames: list[bytes], received_at: datetime) -> None:
            self.frames, self.received_at = frames, received_at
            self.done = anyio.Event()
            self.blob = b""

    async def _placed(self: Any, slot: _Slot) -> Batch:
        events: list[Event] = []
        states: list[Any] = []
        rejects: list[Any] = []
        name, zone, tenant_of = self.name, self._zone, self.recent.get
        for data, got in zip(slot.frames, _decoder.decode(slot.blob), strict=True):
            if isinstance(got, str):
                rejects.append(self.ctx.dead_letter(got, data, {"via": "websocket"}))
                continue
            again = partial(normalize_frame, data, source=name, received_at=slot.received_at, zone=zone,
                            tenant_of=tenant_of)
            try:
                if any(map(tenant_unknown, got)):
                    got = again()
                    if any(map(tenant_unknown, got)):
                        got = await self._placed(got, again)
            except Rejected as exc:
                rejects.append(self.ctx.dead_letter(exc.reason, data, {"via": "websocket"}))
                continue
            events += got
            states += self._states(got)
        return Batch(events=events, record_tenants=states, dead_letters=rejects)

    async def _commit_frames(self: Any, frames: Any) -> None:
        main = sys.modules["__main__"]
        if str(getattr(main, "__file__", "")).endswith("__main__.py"):
            main.__file__ = None  # `python -m streamd`: anyio would run it again in each worker
        window = CommitWindow(self.ctx.enqueue, self.cfg.inflight)
        received = self.ctx.metrics.source_received.labels(self.name)
        send, receive = anyio.create_memory_object_stream[_Slot](_DEPTH)

        async def work(slot: _Slot) -> None:
            slot.blob = await anyio.to_process.run_sync(_work, slot.frames, self.name, slot.received_at,
                                                         self._zone, cancellable=True)
            slot.done.set()

        async def commit() -> None:
            async with receive:
                async for slot in receive:
                    await slot.done.wait()
                    batch = await _placed(self, slot)
                    self._valid_since_open = self._valid_since_open or bool(batch.events)
                    await window.add(batch)

        async with anyio.create_task_group() as tg:
            tg.start_soon(commit)
            async with send:
                async for first in frames:
                    batch = [first]
                    while len(batch) < self.cfg.batch_max:
                        try:
                            batch.append(frames.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    received.inc(len(batch))
                    slot = _Slot(batch, self.ctx.now())
                    tg.start_soon(work, slot)
                    await send.send(slot)
        await window.settle()

    source.AsteriaSource._commit_frames = _commit_frames  # type: ignore[method-assign]
