"""A stand-in for Asteria's normalizing, in a benchmarked `streamd run`
(`bench/ingest.py --no-normalize`): what the rest of the path allows.

Loaded by Python at start when this folder is on PYTHONPATH and STREAMD_STANDIN is set.
It replaces the source's `normalize_frame` with one that reads only what the rest of the
path needs from a frame (its topic, the record's `_id`, `companyId` and `updatedAt`) and
makes one event of it, the payload itself as its data: the same keys, tenants and sizes
reach the store and the sinks, without the mapping, the checks, the entity's JSON or its
digest. Bench-only: the daemon never loads it, and nothing it makes is a real event.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, tzinfo
from typing import Any

if os.environ.get("STREAMD_STANDIN"):
    from streamd.model import Event
    from streamd.model.envelope import format_time
    from streamd.providers.asteria import source, wire

    _ids = wire.decoder(wire.Removed)
    _entity = {topic: (wire.GENERIC.get(wire.split_topic(topic)[0])
                       or wire.FAMILIES[wire.split_topic(topic)[0]][0]) for topic in wire.TOPICS}

    def _stand_in(message: bytes, *, source: str, received_at: datetime, zone: tzinfo | None = None,
                  tenant_of: Any = None) -> list[Event]:
        topic, data = wire.parse_frame(message)
        got = _ids.decode(data)
        key = got.key or ""
        digest = hashlib.sha256(data).hexdigest()
        stamp = got.updatedAt or ""
        op = "deleted" if topic.endswith("_REMOVE") else "updated" if topic.endswith("_UPDATE") else "created"
        return [Event(id=digest[:32], source=source, provider="asteria", tenant=got.companyId or "",
                      entity=_entity[topic], op=op, key=key, time=stamp or format_time(received_at),
                      data=data, version=f"{stamp}#{digest[:16]}", raw=data)]

    source.normalize_frame = _stand_in  # type: ignore[assignment]
