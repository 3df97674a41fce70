from __future__ import annotations

import string

from ...config import SourceConfig
from ...secrets import Secret
from ...sources.polling import check_https, check_poller
from ...units import Duration
from . import wire


class HorisenConfig(SourceConfig, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # The token endpoint (https://accounts<sep><your platform domain>/oauth2/access-token)
    # and the API's base (https://api<sep><your platform domain>).
    token_url: str
    api_url: str
    # The API account HORISEN's support created for streamd, and its secret (a reference).
    client_id: str
    client_secret: Secret
    # The feed's `tenant` for this platform; none = the client id.
    tenant: str | None = None
    # HORISEN is Swiss: a date stamped with an offset is the date in Zurich (its stamps
    # without one are UTC, as documented).
    timezone: str = wire.TIMEZONE
    # A poll starts this long after the previous one started.
    interval: Duration = Duration(600.0)
    # Documents dated (documentDate) up to this long ago are listed; a payment made to an
    # older invoice is not seen.
    window: Duration = Duration(90 * 86400.0)
    # After the first poll, a poll lists only documents whose statusDt is at most this long
    # before the newest statusDt the last poll saw (late commits, clock skew)...
    lookback: Duration = Duration(3600.0)
    # ...and every `full_every` the whole window again, without that filter.
    full_every: Duration = Duration(86400.0)
    # After that listing, one page of the open documents: a payment is seen at this poll
    # whether HORISEN moves statusDt, only paymentStatusDate, or neither (`payments`).
    payment_check: bool = True
    # Only documents with this paymentStatus ("open") in the listing above (the payment
    # check still sees an invoice leave it when it is paid).
    payment_status: str | None = None
    page_size: int = 100
    # Fetch each new invoice's traffic reports and attach them to its `created` event.
    traffic_reports: bool = True
    traffic_reports_path: str = wire.TRAFFIC_REPORTS_PATH
    # Requests in flight (traffic reports of a page's new invoices are fetched concurrently).
    # A poll is one request per new invoice, each a round trip: the time of a first sync
    # is its requests x the round trip / this. A 429 pauses them all (`Gate`).
    concurrency: int = 16
    # One HTTP request, connect to last byte.
    timeout: Duration = Duration(30.0)
    # A request that keeps failing with timeouts or 5xx is tried this often before the
    # poll is abandoned and retried.
    max_tries: int = 8
    # Polls an invoice whose traffic reports answer 404 INVOICE_NOTFOUND is held back and
    # tried again, before it goes to dead letters.
    report_tries: int = 12
    # The access token is renewed this long before it expires (at most half its lifetime).
    refresh_before: Duration = Duration(60.0)
    # CA bundle the API's certificate is verified against; none = the system store.
    ca: str | None = None

    @property
    def feed_tenant(self) -> str:
        return self.tenant or self.client_id


def traffic_path_fields(path: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(path) if f is not None]


def validate(cfg: HorisenConfig) -> list[str]:
    problems: list[str] = []
    for name in ("token_url", "api_url"):
        problems += check_https(name, getattr(cfg, name), "HORISEN")
    if not cfg.client_id.strip():
        problems.append("client_id: must not be empty")
    if cfg.tenant is not None and not cfg.tenant.strip():
        problems.append("tenant: must not be empty (leave it out to use the client id)")
    if cfg.report_tries < 1:
        problems.append("report_tries: must be at least 1")
    if cfg.window.seconds < 86400:
        problems.append("window: must be at least 1d (documents are listed by documentDate)")
    if cfg.payment_status is not None and not cfg.payment_status.strip():
        problems.append("payment_status: must not be empty (leave it out to list every document)")
    try:
        fields = traffic_path_fields(cfg.traffic_reports_path)
    except ValueError as exc:
        problems.append(f"traffic_reports_path: {exc}")
    else:
        if fields != ["invoice_id"] or not cfg.traffic_reports_path.startswith("/"):
            problems.append("traffic_reports_path: expected a path starting with / holding "
                            f"{{invoice_id}} once, got {cfg.traffic_reports_path!r}")
    return problems + check_poller(cfg, wire.MAX_PAGE_SIZE)
