"""The simulated Asperion identity server: `/connect/authorize` and `/connect/token`, and
the tokens they issue (the API checks bearer tokens here).

The authorize step needs no user: a known client gets its code at once. Refresh
tokens rotate on *every* use and a spent one is refused with `invalid_grant` [I: the
strictest reading of "may rotate"]; codes live `CODE_TTL` seconds [I]; access tokens
`knobs.token_ttl` seconds (`expires_in` says at least 1).
"""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

import anyio
import msgspec
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ...simulated import AccessTokens

SCOPE = "asperion-api offline_access"  # granted to every token [D, seed]
CODE_TTL = 60.0  # seconds an authorization code can be exchanged [I]
_enc = msgspec.json.Encoder()


def _oauth_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_enc.encode(body), status_code=status, headers=headers, media_type="application/json")


def _oauth_error(status: int, error: str, description: str | None = None) -> Response:
    body = {"error": error} if description is None else {"error": error, "error_description": description}
    return _oauth_json(body, status, {"Cache-Control": "no-store"})


class Knobs(Protocol):
    """What the identity server reads of the simulator's knobs (`simulator.Knobs`), at
    each request, so a test may change them while it runs."""

    @property
    def client_id(self) -> str: ...
    @property
    def client_secret(self) -> str: ...
    @property
    def token_ttl(self) -> float: ...
    @property
    def refresh_answer_delay(self) -> float: ...


class Identity:
    def __init__(self, knobs: Knobs) -> None:
        self.knobs = knobs  # client id and secret, token lifetime: read at each request
        self.refreshes = 0  # successful refresh_token grants
        self.refused_refreshes = 0  # refresh_token grants refused (spent or unknown)
        self.unanswered = 0  # refresh tokens rotated whose answer `refresh_answer_delay` holds
        self._codes: dict[str, tuple[str, str, float]] = {}  # code -> client_id, redirect_uri, expiry
        self.access = AccessTokens()
        self._refresh: dict[str, bool] = {}  # refresh token -> still unused
        # Every token handed out, for tests that look for them where they must not be.
        self.issued: list[str] = []

    def new_refresh_token(self) -> str:
        token = secrets.token_urlsafe(32)
        self._refresh[token] = True
        self.issued.append(token)
        return token

    def refresh_token_valid(self, token: str) -> bool:
        return self._refresh.get(token, False)

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is expired from now on."""
        self.access.expire_all()

    def bearer_valid(self, headers: Headers) -> bool:
        return self.access.valid(headers)

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != self.knobs.client_id:
            return _oauth_error(400, "invalid_client")
        if q.get("response_type") != "code":
            return _oauth_error(400, "unsupported_response_type")
        redirect = q.get("redirect_uri", "")
        parts = urlsplit(redirect)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return _oauth_error(400, "invalid_request", "redirect_uri must be an http(s) URL")
        code, now = secrets.token_urlsafe(24), time.monotonic()
        self._codes = {c: issued for c, issued in self._codes.items() if issued[2] > now}
        self._codes[code] = (self.knobs.client_id, redirect, now + CODE_TTL)
        query = parse_qsl(parts.query, keep_blank_values=True) + [("code", code)]
        if "state" in q:
            query.append(("state", q["state"]))
        return RedirectResponse(urlunsplit(parts._replace(query=urlencode(query))), status_code=302)

    async def token(self, request: Request) -> Response:
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/x-www-form-urlencoded":
            return _oauth_error(400, "invalid_request", "expected application/x-www-form-urlencoded")
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        client_id, secret = form.get("client_id"), form.get("client_secret", "")
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode()
                user, _, password = decoded.partition(":")
            except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
                return _oauth_error(401, "invalid_client")
            client_id, secret = unquote_plus(user), unquote_plus(password)
        if client_id != self.knobs.client_id or not secrets.compare_digest(
                secret.encode(), self.knobs.client_secret.encode()):
            return _oauth_error(401, "invalid_client")
        grant = form.get("grant_type")
        if grant == "authorization_code":
            issued = self._codes.pop(form.get("code", ""), None)
            if issued is None or issued[0] != client_id or issued[2] < time.monotonic():
                return _oauth_error(400, "invalid_grant", "unknown, used or expired code")
            if form.get("redirect_uri") != issued[1]:
                return _oauth_error(400, "invalid_grant", "redirect_uri does not match the authorize request")
        elif grant == "refresh_token":
            unused = self._refresh.get(form.get("refresh_token", ""))
            if not unused:
                self.refused_refreshes += 1
                return _oauth_error(400, "invalid_grant", "unknown refresh token" if unused is None
                                    else "refresh token already used")
            self._refresh[form["refresh_token"]] = False  # rotation: this one is spent
            self.refreshes += 1
        else:
            return _oauth_error(400, "unsupported_grant_type")
        access = self.access.issue(self.knobs.token_ttl)
        self.issued.append(access)
        answer = _oauth_json({"access_token": access, "expires_in": max(1, int(self.knobs.token_ttl)),
                              "token_type": "Bearer", "refresh_token": self.new_refresh_token(),
                              "scope": SCOPE}, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
        if grant == "refresh_token" and self.knobs.refresh_answer_delay > 0:
            self.unanswered += 1  # the old token is spent: a client that dies now loses the new one
            try:
                await anyio.sleep(self.knobs.refresh_answer_delay)
            finally:
                self.unanswered -= 1
        return answer
