from __future__ import annotations

import re

import msgspec

from ...config import SourceConfig
from ...secrets import Secret
from ...sources.polling import check_https, check_poller
from ...units import Duration
from . import wire


class ConnecConfig(SourceConfig, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Your Maestrano app's api id and api key (a secret reference): Maestrano signs its
    # webhooks with them (HTTP Basic), and the poller calls the API with them.
    api_id: str
    api_key: Secret
    # Webhook routes on streamd's listener, as registered with Maestrano. Notifications
    # are also taken at `<notifications_path>/<tenant>`.
    notifications_path: str = wire.NOTIFICATIONS_PATH
    account_webhooks: bool = True
    groups_path: str = wire.GROUPS_PATH
    group_users_path: str = wire.GROUP_USERS_PATH
    # The poller (off by default: the webhooks carry every change). It lists what
    # changed since its cursor, per group and collection.
    poll: bool = False
    api_url: str = "https://api-connec.maestrano.com"
    groups: list[str] = []
    collections: list[str] = msgspec.field(default_factory=lambda: list(wire.COLLECTIONS))
    interval: Duration = Duration(300.0)
    # The filter asks for `updated_at` after the cursor minus this (late commits, skew).
    lookback: Duration = Duration(60.0)
    page_size: int = 100
    # Requests in flight across the poller's groups and collections.
    concurrency: int = 4
    timeout: Duration = Duration(30.0)
    max_tries: int = 8
    ca: str | None = None


_PARAM = re.compile(r"\{([a-z_]+)\}")


def _check_route(name: str, path: str, params: list[str]) -> list[str]:
    if not path.startswith("/") or "//" in path or any(c in path for c in " ?#"):
        return [f"{name}: {path!r} is not a URL path"]
    if _PARAM.findall(path) != params:
        want = " and ".join("{" + p + "}" for p in params) or "no {parameter}"
        return [f"{name}: expected a path holding {want}, got {path!r}"]
    return []


def validate(cfg: ConnecConfig) -> list[str]:
    problems: list[str] = []
    if not cfg.api_id.strip():
        problems.append("api_id: must not be empty")
    problems += _check_route("notifications_path", cfg.notifications_path, [])
    if cfg.account_webhooks:
        problems += _check_route("groups_path", cfg.groups_path, ["id"])
        problems += _check_route("group_users_path", cfg.group_users_path, ["group_id", "id"])
    for i, c in enumerate(cfg.collections):
        if c not in wire.COLLECTIONS:
            problems.append(f"collections[{i}]: unknown collection {c!r} "
                            f"(known: {', '.join(wire.COLLECTIONS)})")
    if len(set(cfg.collections)) != len(cfg.collections):
        problems.append("collections: a collection is listed twice")
    if cfg.poll:
        problems += check_https("api_url", cfg.api_url, "Connec!")
        if not cfg.groups:
            problems.append("groups: name the group ids to poll (poll = true)")
        if not cfg.collections:
            problems.append("collections: name at least one to poll")
    for i, g in enumerate(cfg.groups):
        if not g.strip() or "/" in g or any(c.isspace() for c in g):
            problems.append(f"groups[{i}]: {g!r} is not a group id")
    return problems + check_poller(cfg, wire.MAX_TOP)
