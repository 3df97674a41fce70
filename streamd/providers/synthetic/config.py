from __future__ import annotations

import msgspec

from ...config import SourceConfig
from ...secrets import Secret


class SyntheticConfig(SourceConfig, frozen=True, forbid_unknown_fields=True, kw_only=True):
    tenants: list[str] = msgspec.field(default_factory=lambda: ["acme"])
    # Generate records (parties, invoices, payments) at `rate` per second; 0 = as fast as
    # the store takes them. `count` stops after that many records; 0 = never stop.
    generate: bool = True
    rate: float = 20.0
    count: int = 0
    batch: int = 50
    seed: int = 1
    # Every n-th generated record is malformed (shows the dead-letter path); 0 = never.
    reject_every: int = 0
    # POST /webhooks/<name> takes records (one, or a JSON array); `token` is the bearer
    # token it requires (a secret reference): required, as no webhook is open to anyone.
    webhook: bool = False
    token: Secret | None = None


def validate(cfg: SyntheticConfig) -> list[str]:
    problems = []
    if not cfg.tenants:
        problems.append("tenants: needs at least one tenant")
    if cfg.rate < 0:
        problems.append("rate: must be 0 (unthrottled) or more")
    if cfg.batch < 1:
        problems.append("batch: must be at least 1")
    if cfg.reject_every < 0:
        problems.append("reject_every: must be 0 (never) or more")
    if cfg.count < 0:
        problems.append("count: must be 0 (endless) or more")
    if cfg.webhook and cfg.token is None:
        problems.append("token: required with webhook = true (a secret reference, e.g. "
                        "\"env:STREAMD_WEBHOOK_TOKEN\"): a webhook without one would take "
                        "events from anyone")
    return problems
