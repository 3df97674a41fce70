"""OAuth2 for Asperion: the authorization-code grant (`streamd auth`), then refresh tokens
that rotate on every use.

A rotated refresh token is the one credential that cannot be got back: the identity
server refuses the old one as soon as it has answered. So the new pair is committed
to the store (fsync) *before* the access token is used, and the request and that
commit run shielded from cancellation: a SIGTERM waits for them. What no client can
close is the moment between the server's answer and the fsync: a power cut or SIGKILL
exactly then loses the new token (see docs/providers/asperion.md). So that it is never
a mystery, a rotation is recorded before it is asked for (`oauth.rotation`: a
fingerprint of the token being spent, never the token) and cleared in the commit of
its answer. A start that finds the record of a rotation of the very token it holds
knows the last run died inside one; if the server then refuses the token, the source
says exactly that (`TokenLost`, counted in `streamd_source_refresh_tokens_lost_total`).
Access tokens are stored beside it, so a restart reuses a live access token
instead of spending a rotation.

The state lives in `source_state` under `secret.oauth` (never shown by `streamd status`),
encrypted by the store when `[store] secrets_key` is set: this module only sees values.
A stored token the store cannot decrypt (another key, no key) is a refused credential:
the source stops with the store's reason until the key is right or `streamd auth` runs.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx
import msgspec

from ...config import StoreConfig
from ...errors import AuthFailed, SecretUnreadable, TokenLost, TokenUnavailable
from ...model import format_time
from ...model.fields import DECODE_ERRORS
from ...retry import retry_after_seconds, retrying
from ...sources import SourceContext
from ...store import SECRET_PREFIX, Batch, write_state
from . import wire
from .config import AsperionConfig

log = logging.getLogger("streamd.source.asperion")

TOKEN_KEY = SECRET_PREFIX + "oauth"
#: A rotation asked for and not yet committed: {"spending": fingerprint, "since": time}.
ROTATION_KEY = "oauth.rotation"


def fingerprint(refresh_token: str) -> str:
    """What the rotation record keeps of a refresh token: enough to recognise it, nothing
    to use (a salted hash of a token with 256 random bits)."""
    return hashlib.sha256(b"streamd refresh token\0" + refresh_token.encode()).hexdigest()[:16]


class TokenState(msgspec.Struct, frozen=True, kw_only=True):
    refresh_token: str
    access_token: str | None = None
    expires_at: float = 0.0  # unix time the access token expires
    obtained_at: float = 0.0


def authorize_url(cfg: AsperionConfig, state: str) -> str:
    query = urlencode({"client_id": cfg.client_id, "scope": cfg.scope, "response_type": "code",
                       "redirect_uri": cfg.redirect_uri, "state": state})
    sep = "&" if "?" in cfg.authorize_url else "?"
    return f"{cfg.authorize_url}{sep}{query}"


async def token_request(http: httpx.AsyncClient, cfg: AsperionConfig, form: dict[str, str],
                        now: float | None = None) -> TokenState:
    """One POST to the token endpoint. Raises AuthFailed when refused, TokenUnavailable when
    worth retrying. Error messages carry the server's error code, never a token."""
    body = {**form, "client_id": cfg.client_id, "client_secret": cfg.client_secret.reveal()}
    try:
        resp = await http.post(cfg.token_url, data=body, headers={"Accept": "application/json"})
    except httpx.TimeoutException:
        raise TokenUnavailable(f"token endpoint {cfg.token_url}: timed out") from None
    except httpx.TransportError as exc:
        raise TokenUnavailable(f"token endpoint {cfg.token_url}: {type(exc).__name__}: {exc}") from None
    if resp.status_code == 200:
        try:
            tok = wire.token_decoder.decode(resp.content)
        except DECODE_ERRORS as exc:
            raise TokenUnavailable(f"token endpoint: unreadable answer ({exc})") from None
        got = time.time() if now is None else now
        refresh = tok.refresh_token or form.get("refresh_token")
        if not refresh:
            raise AuthFailed("the token endpoint gave no refresh token (is offline_access in scope?)")
        return TokenState(refresh_token=refresh, access_token=tok.access_token,
                          expires_at=got + (tok.expires_in if tok.expires_in else 3600.0),
                          obtained_at=got)
    if resp.status_code == 429 or resp.status_code >= 500:
        raise TokenUnavailable(f"token endpoint answered HTTP {resp.status_code}",
                               retry_after_seconds(resp.headers.get("retry-after")))
    try:
        err = wire.token_error_decoder.decode(resp.content)
        why = err.error + (f" ({err.error_description})" if err.error_description else "")
    except DECODE_ERRORS:
        why = "no OAuth2 error in the body"
    raise AuthFailed(f"token endpoint refused the {form.get('grant_type')} grant: "
                     f"HTTP {resp.status_code}, {why}")


def _token_state(value: Any) -> TokenState | None:
    if value is None:
        return None
    try:
        return msgspec.convert(value, TokenState)
    except msgspec.ValidationError:
        return None


async def save(store: StoreConfig, source: str, state: TokenState) -> None:
    """Write tokens into the feed database from outside the daemon (`streamd auth`). SQLite's
    lock makes this safe while the daemon runs; it picks the new token up when its own fails.
    A record of a rotation the daemon never finished goes: it was of another token."""
    await write_state(store, source, {TOKEN_KEY: state, ROTATION_KEY: None})


class Tokens:
    """The source's access token: refreshed shortly before expiry or after a 401, one
    refresh at a time (two concurrent refreshes with one rotating token lock us out)."""

    scheme = "Bearer"

    def __init__(self, ctx: SourceContext, cfg: AsperionConfig, http: httpx.AsyncClient,
                 clock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.http = http
        self.clock = clock
        self.state: TokenState | None = None
        self._lock = anyio.Lock()
        self._grants = ctx.metrics.source_token_grants
        for outcome in ("ok", "refused", "error"):
            self._grants.labels(ctx.name, outcome)
        self._lost = ctx.metrics.source_tokens_lost.labels(ctx.name)
        # Fingerprints of the rotations this process recorded; and whether the token we
        # hold is one whose rotation an earlier process recorded and never finished.
        self._begun: set[str] = set()
        self.interrupted = False
        self._lost_seen: set[str] = set()

    async def _progress(self) -> dict[str, Any]:
        try:
            return await self.ctx.progress()
        except SecretUnreadable as exc:
            raise AuthFailed(str(exc)) from None

    async def stored(self) -> TokenState | None:
        """The stored tokens, None if there are none; AuthFailed if they cannot be decrypted."""
        return _token_state((await self._progress()).get(TOKEN_KEY))

    async def load(self) -> bool:
        """Take the stored tokens if they differ from ours (e.g. `streamd auth` ran)."""
        progress = await self._progress()
        stored = _token_state(progress.get(TOKEN_KEY))
        if stored is None or (self.state and stored.refresh_token == self.state.refresh_token):
            return False
        self.state = stored
        rotation = progress.get(ROTATION_KEY)
        spent = fingerprint(stored.refresh_token)
        self.interrupted = (isinstance(rotation, dict) and rotation.get("spending") == spent
                            and spent not in self._begun)
        if self.interrupted:
            log.warning("source %s: the last run stopped while rotating the stored refresh token "
                        "(since %s); using it: the identity server may have spent it",
                        self.ctx.name, rotation.get("since") if isinstance(rotation, dict) else "?")
        return True

    def _live(self) -> str | None:
        s = self.state
        if not s or not s.access_token:
            return None
        margin = min(self.cfg.refresh_before.seconds, (s.expires_at - s.obtained_at) / 2)
        return s.access_token if self.clock() < s.expires_at - margin else None

    async def access_token(self) -> str:
        return self._live() or await self.refresh()

    async def refresh(self, failed: str | None = None) -> str:
        """A fresh access token. `failed` is the token a 401 refused: if another request has
        already replaced it, that replacement is returned instead of refreshing twice."""
        async with self._lock:
            current = self.state.access_token if self.state else None
            # Replaced meanwhile by another request, and still live: use that one.
            if failed is not None and current != failed and (live := self._live()):
                return live
            if failed is None and (live := self._live()):
                return live
            return await retrying(
                self._refresh_once, policy=self.cfg.backoff, metrics=self.ctx.metrics,
                retry_on=lambda e: isinstance(e, TokenUnavailable), component=self.ctx.component,
                what="refreshing the access token", attempts=self.cfg.max_tries)

    async def _refresh_once(self) -> str:
        if self.state is None:
            await self.load()
        if self.state is None:
            raise AuthFailed(f"no refresh token stored: run `streamd auth {self.ctx.name}`")
        old = self.state.refresh_token
        spending = fingerprint(old)
        # Shielded: once the server has rotated the token, the answer must reach the store.
        with anyio.CancelScope(shield=True):
            if spending not in self._begun:  # once per token, not per retry
                await self.ctx.submit(Batch(progress={ROTATION_KEY: {
                    "spending": spending, "since": format_time(datetime.fromtimestamp(self.clock(), UTC))}}))
                self._begun.add(spending)
            try:
                new = await token_request(self.http, self.cfg,
                                          {"grant_type": "refresh_token", "refresh_token": old},
                                          now=self.clock())
            except AuthFailed:
                self._grants.labels(self.ctx.name, "refused").inc()
                # `streamd auth` may have stored a new token while ours was dying.
                if await self.load():
                    log.info("source %s: using the refresh token stored by `streamd auth`", self.ctx.name)
                    raise TokenUnavailable("retrying with the newly stored refresh token", 0.0) from None
                if self.interrupted:
                    if spending not in self._lost_seen:  # counted once, however often retried
                        self._lost_seen.add(spending)
                        self._lost.inc()
                    raise TokenLost("the refresh token was spent by a crash during its rotation: run "
                                    f"`streamd auth {self.ctx.name}`") from None
                raise
            except TokenUnavailable:
                self._grants.labels(self.ctx.name, "error").inc()
                raise
            await self.ctx.submit(Batch(progress={TOKEN_KEY: new, ROTATION_KEY: None}))
        self.interrupted = False
        self._grants.labels(self.ctx.name, "ok").inc()
        self.state = new
        rotated = "rotated" if new.refresh_token != old else "not rotated"
        log.info("source %s: access token refreshed (refresh token %s), valid %.0fs",
                 self.ctx.name, rotated, new.expires_at - new.obtained_at)
        assert new.access_token is not None
        return new.access_token
