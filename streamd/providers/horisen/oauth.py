"""HORISEN's OAuth2 client-credentials grant: one access token, renewed shortly before
`expires_in` runs out or after the API answers 401, one request at a time.

There is no refresh token: the client id and secret get a new access token whenever
one is needed, so nothing is stored (a restart asks for a new one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import httpx

from ...errors import AuthFailed, Unavailable
from ...model.fields import DECODE_ERRORS
from ...retry import retry_after_seconds, retrying
from ...sources import SourceContext
from . import wire
from .config import HorisenConfig

log = logging.getLogger("streamd.source.horisen")
#: The lifetime assumed when the token endpoint gives no `expires_in` [I].
DEFAULT_LIFETIME = 3600.0


@dataclass(frozen=True)
class AccessToken:
    value: str
    obtained_at: float
    expires_at: float


class ClientToken:
    scheme = "Bearer"

    def __init__(self, ctx: SourceContext, cfg: HorisenConfig, http: httpx.AsyncClient,
                 clock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.http = http
        self.clock = clock
        self.token: AccessToken | None = None
        self._lock = anyio.Lock()
        self._grants = ctx.metrics.source_token_grants
        for outcome in ("ok", "refused", "error"):
            self._grants.labels(ctx.name, outcome)

    def _live(self) -> str | None:
        t = self.token
        if t is None:
            return None
        margin = min(self.cfg.refresh_before.seconds, (t.expires_at - t.obtained_at) / 2)
        return t.value if self.clock() < t.expires_at - margin else None

    async def access_token(self) -> str:
        return self._live() or await self.refresh()

    async def refresh(self, failed: str | None = None) -> str:
        """A new access token. `failed` is the one a 401 refused: when another request has
        already replaced it, the replacement is returned instead of asking twice."""
        async with self._lock:
            current = self.token.value if self.token else None
            # Replaced meanwhile by another request, and still live: use that one.
            if failed is not None and current != failed and (live := self._live()):
                return live
            if failed is None and (live := self._live()):
                return live
            return await retrying(
                self._grant, policy=self.cfg.backoff, metrics=self.ctx.metrics,
                retry_on=lambda e: isinstance(e, Unavailable), component=self.ctx.component,
                what="getting an access token", attempts=self.cfg.max_tries)

    async def _grant(self) -> str:
        cfg = self.cfg
        form = {"grant_type": "client_credentials", "client_id": cfg.client_id,
                "client_secret": cfg.client_secret.reveal()}
        try:
            resp = await self.http.post(cfg.token_url, data=form, headers={"Accept": "application/json"})
        except httpx.TimeoutException:
            self._grants.labels(self.ctx.name, "error").inc()
            raise Unavailable(f"token endpoint {cfg.token_url}: timed out") from None
        except httpx.TransportError as exc:
            self._grants.labels(self.ctx.name, "error").inc()
            raise Unavailable(f"token endpoint {cfg.token_url}: {type(exc).__name__}: {exc}") from None
        code = resp.status_code
        if code == 200:
            try:
                tok = wire.token_decoder.decode(resp.content)
            except DECODE_ERRORS as exc:
                self._grants.labels(self.ctx.name, "error").inc()
                raise Unavailable(f"token endpoint: unreadable answer ({exc})") from None
            now = self.clock()
            lifetime = tok.expires_in if tok.expires_in and tok.expires_in > 0 else DEFAULT_LIFETIME
            self.token = AccessToken(tok.access_token, now, now + lifetime)
            self._grants.labels(self.ctx.name, "ok").inc()
            log.info("source %s: new access token, valid %.0fs", self.ctx.name, lifetime)
            return tok.access_token
        if code == 408 or code == 429 or code >= 500:
            self._grants.labels(self.ctx.name, "error").inc()
            raise Unavailable(f"token endpoint answered HTTP {code}",
                              retry_after_seconds(resp.headers.get("retry-after")))
        self._grants.labels(self.ctx.name, "refused").inc()
        try:
            err = wire.token_error_decoder.decode(resp.content)
            why = err.error + (f" ({err.error_description})" if err.error_description else "")
        except DECODE_ERRORS:
            why = "no OAuth2 error in the body"
        raise AuthFailed(f"the token endpoint refused client {cfg.client_id!r}: HTTP {code}, {why}; "
                         "check client_id and client_secret")
