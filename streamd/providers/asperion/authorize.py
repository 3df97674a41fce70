"""`streamd auth <source>` for Asperion: sign in once, keep the tokens in the store.

Without a refresh token it runs the authorization-code flow: it says the authorize URL,
waits on the loopback `redirect_uri` for the browser to come back with a code (and the
`state` it sent), exchanges the code for tokens, and stores them. Given a refresh token
obtained elsewhere, it uses it once (which proves it works and rotates it) and stores
the rotated one. A running daemon takes new tokens from the store as soon as its own are
refused. Tokens are never said.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ...asgi import Server, bind
from ...errors import AuthFailed, AuthorizationFailed, TokenUnavailable
from ...sources import Authorization
from .config import AsperionConfig, tls_context
from .oauth import TokenState, authorize_url, save, token_request


async def authorize(request: Authorization) -> None:
    cfg: AsperionConfig = request.config
    async with httpx.AsyncClient(verify=tls_context(cfg), timeout=cfg.timeout.seconds,
                                 trust_env=False) as http:
        try:
            if request.refresh_token:
                state = await token_request(http, cfg, {"grant_type": "refresh_token",
                                                        "refresh_token": request.refresh_token})
            else:
                state = await _browser_flow(http, request)
        except (AuthFailed, TokenUnavailable) as exc:
            raise AuthorizationFailed(str(exc)) from None
    assert isinstance(state, TokenState)
    await save(request.store, request.source, state)


async def _browser_flow(http: httpx.AsyncClient, request: Authorization) -> Any:
    cfg: AsperionConfig = request.config
    wait = request.timeout
    expected = secrets.token_urlsafe(24)
    redirect = urlsplit(cfg.redirect_uri)
    result: dict[str, Any] = {}
    done = anyio.Event()

    async def callback(req: Request) -> Response:
        q = req.query_params
        if q.get("state") != expected:
            return PlainTextResponse("streamd: unexpected or missing state; ignored\n", status_code=400)
        if "error" in q:
            result["error"] = f"the provider said {q['error']}: {q.get('error_description', '')}".strip()
        elif not q.get("code"):
            result["error"] = "the redirect carried no code"
        else:
            try:
                result["state"] = await token_request(
                    http, cfg, {"grant_type": "authorization_code", "code": q["code"],
                                "redirect_uri": cfg.redirect_uri})
            except (AuthFailed, TokenUnavailable) as exc:  # to the console and the browser
                result["error"] = str(exc)
        done.set()
        if "error" in result:
            return PlainTextResponse(f"streamd: authorization failed: {result['error']}\n", status_code=400)
        return PlainTextResponse("streamd: authorization complete. You can close this window.\n")

    app = Starlette(routes=[Route(redirect.path or "/", callback, methods=["GET"])])
    server = Server(uvicorn.Config(app, lifespan="off", log_config=None, access_log=False))
    host = redirect.hostname or "127.0.0.1"
    try:
        sock = bind(host, redirect.port or 80)
    except OSError as exc:
        raise AuthorizationFailed(f"cannot listen for the redirect on {host}:{redirect.port}: "
                                  f"{exc.strerror}") from None
    request.say("Open this URL in a browser and sign in to Asperion:\n\n  "
                f"{authorize_url(cfg, expected)}\n\nwaiting for the redirect to {cfg.redirect_uri} ...")
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.move_on_after(wait):
            await done.wait()
        server.should_exit = True
    sock.close()
    if "state" in result:
        return result["state"]
    raise AuthorizationFailed(result.get("error") or f"no redirect came back within {wait:.0f}s")
