"""The event envelope: CloudEvents 1.0, JSON, one per line. Pure code, no I/O, no clock.

Event id
--------
`id` is derived, never random, so that the same change seen twice (a websocket
replay, the same change by webhook, a re-poll, a crash replay) gets the same id
and the store drops the second one::

    id = hex(sha256(netstring("streamd-event/1") + netstring(provider) + netstring(tenant)
                    + netstring(entity) + netstring(key) + netstring(version))[:16])

where `netstring(s)` is `len(utf8(s)) ":" utf8(s) ","` (length-prefixed, so no
field can bleed into the next), and `version` is
- the provider's own update stamp (e.g. Asteria `updatedAt`), canonical
  (`canonical.stamp`: an instant in UTC, however the provider wrote it), followed by `#`
  and the first 16 hex of the entity's digest, when there is a stamp: stamps have
  millisecond precision, and two different changes within one millisecond must not
  share an id (the second would be dropped as a duplicate);
- else `content_version(data)`: `"sha256:"` and the first 32 hex of the digest;
- for a deletion, `"deleted:" + stamp` (the stamp may be empty).
The digest is of the entity's values, not of its JSON (`canonical`): the same record
written `100.0` or `100`, or decoded by a streamd whose model has grown a field since,
has the same id. 128 bits of SHA-256: 32 lowercase hex characters.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Literal

import msgspec

from ..errors import Rejected
from .canonical import stamp
from .check import digest, walked
from .entities import Entity

Op = Literal["created", "updated", "deleted"]
OPS: tuple[Op, ...] = ("created", "updated", "deleted")
SPECVERSION = "1.0"
DATACONTENTTYPE = "application/json"

_encoder = msgspec.json.Encoder(decimal_format="string")


def _netstring(s: str) -> bytes:
    b = s.encode("utf-8")
    return b"%d:%s," % (len(b), b)


#: The hash state after the fixed prefix, copied per id rather than hashed again.
_ID_PREFIX = hashlib.sha256(_netstring("streamd-event/1"))


def event_id(provider: str, tenant: str, entity: str, key: str, version: str) -> str:
    # One update of the five netstrings joined: the same bytes hashed as five updates,
    # without a hash call per part (this runs for every event). The netstrings are built
    # as text when it is ASCII (nearly always: then a length in characters is one in
    # bytes), which costs half of encoding each part and formatting bytes.
    text = (f"{len(provider)}:{provider},{len(tenant)}:{tenant},{len(entity)}:{entity},"
            f"{len(key)}:{key},{len(version)}:{version},")
    if text.isascii():
        joined = text.encode()
    else:
        p, t, e, k, v = (s.encode() for s in (provider, tenant, entity, key, version))
        joined = b"%d:%s,%d:%s,%d:%s,%d:%s,%d:%s," % (len(p), p, len(t), t, len(e), e, len(k), k,
                                                      len(v), v)
    h = _ID_PREFIX.copy()
    h.update(joined)
    return h.digest()[:16].hex()


def encode_data(data: Entity | None) -> bytes:
    return _encoder.encode(data)


def dedupe_bucket(version: str) -> str:
    """Where an id lives in the store's dedupe index. Same id ⇒ same version ⇒ same
    bucket, so dedupe stays exact; and a version that is a provider timestamp buckets by
    its second, so recent events share a small part of the index instead of touching
    pages all over it (2-3x faster appends on a big feed, see docs/benchmarks.md)."""
    if version.startswith("deleted:"):
        version = version[8:]
    return version[:19] if version[:1].isdigit() else ""


def content_version(data: Entity) -> str:
    """The version of a record that has no update stamp: the digest of its values."""
    return _content_version(digest(data))


def _content_version(values: str) -> str:
    return "sha256:" + values[:32]


#: ".000Z" … ".999Z": the end of every `format_time`, made once.
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))
_instants = msgspec.json.Encoder()


def format_time(t: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, as Asteria writes it: 2020-06-26T08:12:44.119Z."""
    offset = t.utcoffset()
    if offset is None:
        t = t.replace(tzinfo=UTC)
    elif offset:
        t = t.astimezone(UTC)
    # msgspec writes `"YYYY-MM-DDTHH:MM:SS…`: its seconds and a looked-up ending cost a
    # tenth of `isoformat(timespec="milliseconds")`, which ran for every event.
    return _instants.encode(t)[1:20].decode() + _MILLIS[t.microsecond // 1000]


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One change, normalized, as a source submits it. `seq` is assigned at commit."""

    id: str
    source: str  # the streamd source name from the config ("partner-1")
    provider: str
    tenant: str
    entity: str
    op: Op
    key: str
    time: str  # RFC 3339 UTC, see format_time
    data: bytes  # the entity as JSON, or b"null" for a deletion with no known state
    version: str = ""  # what the id was derived from (a stamp, "sha256:…", "deleted:…")
    raw: bytes | None = None  # the wire payload it came from, for audit and re-normalization

    @property
    def type(self) -> str:
        return f"{self.entity}.{self.op}"


def make_event(
    *,
    provider: str,
    source: str,
    tenant: str,
    entity: str,
    op: Op,
    key: str,
    time: datetime,
    data: Entity | None,
    version: str | None = None,
    raw: bytes | None = None,
) -> Event:
    """Build an event; the id comes from `version`, or from the content when there is none.
    Raises `Rejected` for an entity the feed must not carry (see `check`)."""
    canon = b""
    if data is not None:
        try:
            data, canon = walked(data)  # checked, and its values' canonical JSON: one walk
        except Rejected as exc:
            raise Rejected(f"{entity} {key}: {exc.reason}") from None
    body = encode_data(data)
    if op == "deleted":
        ver = "deleted:" + stamp(version or "")
    elif data is None:
        raise Rejected(f"{entity} {key}: a {op} event needs data")
    elif version:
        ver = f"{stamp(version)}#{hashlib.sha256(canon).hexdigest()[:16]}"
    else:
        ver = _content_version(hashlib.sha256(canon).hexdigest())
    return Event(
        id=event_id(provider, tenant, entity, key, ver),
        source=source,
        provider=provider,
        tenant=tenant,
        entity=entity,
        op=op,
        key=key,
        time=format_time(time),
        data=body,
        version=ver,
        raw=raw,
    )


class CloudEvent(msgspec.Struct, frozen=True):
    """The line format. Field order is the wire order; keep it stable."""

    specversion: str
    id: str
    source: str
    type: str
    subject: str
    time: str
    datacontenttype: str
    seq: int
    provider: str
    tenant: str | None  # null: not known (an event's empty tenant)
    entity: str
    data: msgspec.Raw


def cloudevent(
    *, seq: int, id: str, source: str, provider: str, tenant: str, entity: str, op: str,
    key: str, time: str, data: bytes,
) -> CloudEvent:
    return CloudEvent(
        specversion=SPECVERSION,
        id=id,
        source=f"/{provider}/{source}",
        type=f"{entity}.{op}",
        subject=f"{entity}/{key}",
        time=time,
        datacontenttype=DATACONTENTTYPE,
        seq=seq,
        provider=provider,
        tenant=tenant or None,
        entity=entity,
        data=msgspec.Raw(data),
    )


def render_line(ce: CloudEvent) -> bytes:
    """One feed line, newline-terminated. The file sink, stdout and `streamd tail` all
    print exactly these bytes."""
    return _encoder.encode(ce) + b"\n"
