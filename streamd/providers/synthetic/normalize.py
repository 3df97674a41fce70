"""Synthetic wire record → unified event. Pure: bytes and `received_at` in, events out,
or `Rejected` with a reason. No sockets, no clock. Its records are unified entities
already; an invoice's kind and status still go through `model/rules.py`, as for every
provider (a negative invoice is a credit note)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from ...errors import Rejected
from ...model import Entity, Event, Invoice, entity_type, make_event, rules
from ...model.fields import DECODE_ERRORS

PROVIDER = "synthetic"


class WireRecord(msgspec.Struct, forbid_unknown_fields=True):
    tenant: str
    entity: str
    op: Literal["created", "updated", "deleted"]
    key: str
    data: msgspec.Raw = msgspec.Raw(b"null")
    version: str | None = None
    time: datetime | None = None


_record = msgspec.json.Decoder(WireRecord)
_batch = msgspec.json.Decoder(list[msgspec.Raw])


def split(body: bytes) -> list[bytes]:
    """A webhook body: one record, or a JSON array of them. Each record's own bytes are
    kept, so one bad record goes to dead letters alone."""
    stripped = body.lstrip()
    if stripped.startswith(b"["):
        try:
            return [bytes(r) for r in _batch.decode(body)]
        except (msgspec.DecodeError, RecursionError) as exc:
            raise Rejected(f"body is not a JSON array of records: {exc}") from None
    return [body]


def normalize(raw: bytes, *, source: str, received_at: datetime) -> Event:
    try:
        rec = _record.decode(raw)
    except DECODE_ERRORS as exc:
        raise Rejected(f"not a synthetic record: {exc}") from None
    if not rec.tenant or not rec.key or not rec.entity:
        raise Rejected("tenant, entity and key must not be empty")
    data: Entity | None = None
    if bytes(rec.data) != b"null":
        try:
            data = msgspec.json.decode(rec.data, type=entity_type(rec.entity))  # type: ignore[assignment]
        except DECODE_ERRORS as exc:
            raise Rejected(f"{rec.entity} {rec.key}: {exc}") from None
        if isinstance(data, Invoice):
            data = rules.unified(data)
    elif rec.op != "deleted":
        raise Rejected(f"{rec.entity} {rec.key}: a {rec.op} record needs data")
    return make_event(provider=PROVIDER, source=source, tenant=rec.tenant, entity=rec.entity,
                      op=rec.op, key=rec.key, time=rec.time or received_at, data=data,
                      version=rec.version, raw=raw)
