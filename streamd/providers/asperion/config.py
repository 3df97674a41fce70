from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import msgspec

from ...config import SourceConfig
from ...secrets import Secret
from ...sources.polling import check_https, check_poller, server_tls
from ...units import Duration
from . import wire


class AsperionConfig(SourceConfig, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # The REST API, and the identity server's two OAuth2 endpoints.
    base_url: str = "https://api.asperion.nl/v1"
    authorize_url: str = "https://identity.asperion.nl/connect/authorize"
    token_url: str = "https://identity.asperion.nl/connect/token"
    # The client id Asperion's API support gave you, and its secret (a reference).
    client_id: str
    client_secret: Secret
    # Asperion is Dutch: stamps without an offset are Amsterdam time [I], dates are its dates.
    timezone: str = wire.LOCAL_ZONE
    # Where the identity server sends the browser back to in `streamd auth`: an
    # http://127.0.0.1:<port>/<path> (or localhost) URL registered with Asperion;
    # `streamd auth` listens there for the one redirect.
    redirect_uri: str = "http://127.0.0.1:8976/callback"
    scope: str = "asperion-api offline_access"
    # Administration ids to poll, as numbers (`[1234]`, the ids Asperion shows and
    # `X-Tenant-Id` carries) or strings (`["1234"]`); empty = every administration the
    # token can reach (GET /v1/administrations, listed again every interval).
    tenants: list[str | int] = []
    resources: list[str] = msgspec.field(default_factory=lambda: list(wire.RESOURCES))
    # A poll of each tenant+resource starts this long after the previous one started.
    interval: Duration = Duration(300.0)
    page_size: int = wire.MAX_PAGE_SIZE
    # Requests in flight per tenant (pages of a listing are fetched concurrently once
    # the first page says how many there are).
    concurrency: int = 4
    # One HTTP request, connect to last byte.
    timeout: Duration = Duration(30.0)
    # A request that keeps failing with timeouts or 5xx is tried this often before
    # the listing is abandoned (no deletions) and retried at the next interval.
    max_tries: int = 8
    # A listing that lost more than this share of the records known before it (and more
    # than `mass_delete_min` of them), each confirmed gone by a 404, deletes nothing: an
    # administration whose access was revoked lists empty and answers 404 to every id.
    # The deletions are held, the source is unhealthy, and they wait for `streamd
    # deletions confirm`, or for listings to agree for `mass_delete_confirm_after`.
    mass_delete_share: float = 0.5
    mass_delete_min: int = 5
    # Unset: held deletions wait for the operator, however long the listings agree.
    mass_delete_confirm_after: Duration | None = None
    # Access tokens are refreshed this long before they expire (at most half their lifetime).
    refresh_before: Duration = Duration(60.0)
    # CA bundle the API's and identity server's certificates are verified against;
    # none = the system store. There is no option to turn verification off.
    ca: str | None = None


def tenant_ids(cfg: AsperionConfig) -> list[str]:
    """The configured administrations as `X-Tenant-Id` and the feed's `tenant` write them:
    1234 and "1234" are one administration."""
    return [str(t) if isinstance(t, int) else t.strip() for t in cfg.tenants]


def tls_context(cfg: AsperionConfig) -> ssl.SSLContext:
    return server_tls(cfg.ca)


def validate(cfg: AsperionConfig) -> list[str]:
    problems: list[str] = []
    for name in ("base_url", "authorize_url", "token_url"):
        problems += check_https(name, getattr(cfg, name), "Asperion")
    redirect = urlsplit(cfg.redirect_uri)
    if redirect.scheme not in ("http", "https") or not redirect.hostname or not redirect.port:
        problems.append(f"redirect_uri: expected http://127.0.0.1:<port>/<path>, got {cfg.redirect_uri!r}")
    if not cfg.client_id:
        problems.append("client_id: must not be empty")
    if not cfg.resources:
        problems.append("resources: name at least one of " + ", ".join(wire.RESOURCES))
    for i, res in enumerate(cfg.resources):
        if res not in wire.RESOURCES:
            problems.append(f"resources[{i}]: unknown resource {res!r} (known: {', '.join(wire.RESOURCES)})")
    if len(set(cfg.resources)) != len(cfg.resources):
        problems.append("resources: a resource is listed twice")
    for i, tenant in enumerate(cfg.tenants):
        if isinstance(tenant, int):
            if tenant < 1:
                problems.append(f"tenants[{i}]: {tenant} is not an administration id (one is 1 or more)")
        elif not tenant.strip() or any(c in tenant for c in "\r\n"):
            problems.append(f"tenants[{i}]: {tenant!r} is not an administration id")
    if not 0 < cfg.mass_delete_share <= 1:
        problems.append("mass_delete_share: must be more than 0 and at most 1 (1: hold none for their share)")
    if cfg.mass_delete_min < 0:
        problems.append("mass_delete_min: must be 0 or more")
    ids = tenant_ids(cfg)
    if len(set(ids)) != len(ids):
        problems.append("tenants: an administration is listed twice")
    return problems + check_poller(cfg, wire.MAX_PAGE_SIZE)
