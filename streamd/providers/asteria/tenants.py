"""Which company each Asteria record belongs to, for the changes that do not say.

A `*_REMOVE` body holds only `{"_id": …}`: without this its event would land in no
tenant, a sink matching on tenant would drop every deletion, and a consumer keyed by
tenant could not apply it. So the source keeps the tenant of every record it has seen:

- in `record_tenants` (one narrow row per record: source, entity, key → tenant), written
  in the same commit as the event that told it, so it survives restarts. Until schema 4
  these rows were kept in `entity_state` (filled, when that came in, from the events
  already in the feed); those are still read (`FeedReader.entity_tenants`);
- in a bounded map of the most recently seen records (`Recent`), which also covers the
  events still waiting for their commit (it holds more records than the source keeps
  uncommitted), and spares the store a write for a record whose tenant it already knows.

A change the payload does not place is placed by the map, else by the store; with
neither, its tenant is empty (the feed shows `"tenant": null`) and it is counted in
`streamd_source_tenant_unknown_total`.
"""

from __future__ import annotations

from collections import OrderedDict


class Recent:
    """(entity, key) → tenant for the last `size` records seen, least recent dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._map: OrderedDict[tuple[str, str], str] = OrderedDict()

    def get(self, entity: str, key: str) -> str | None:
        return self._map.get((entity, key))

    def saw(self, entity: str, key: str, tenant: str) -> bool:
        """Remember where a record is; True when the store does not know it yet, as far as
        this map can tell (a new record, one it forgot, or one that moved)."""
        at = (entity, key)
        known = self._map.get(at)
        if known is not None:
            self._map.move_to_end(at)
            if known == tenant:
                return False
        self._map[at] = tenant
        if len(self._map) > self.size:
            self._map.popitem(last=False)
        return True

    def forget(self, entity: str, key: str) -> None:
        self._map.pop((entity, key), None)

    def __len__(self) -> int:
        return len(self._map)
