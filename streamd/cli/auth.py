"""`streamd auth SOURCE`: authorize streamd at an OAuth2 provider (Asperion) once.

Without options it runs the authorization-code flow: it prints the authorize URL,
waits on the loopback `redirect_uri` for the browser to come back with a code,
exchanges the code for tokens, and stores them in the feed database. With
`--refresh-token TOKEN` (or `-` to read it from stdin, which keeps it out of `ps`)
it imports a refresh token obtained elsewhere: the token is used once (which proves
it works and rotates it) and the rotated one is stored. A running daemon takes new
tokens from the store as soon as its own are refused; no restart is needed.
Tokens are never printed.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..asgi import Server, bind
from ..errors import EX_CONFIG, EX_FAILURE, AuthFailed, StoreError, TokenUnavailable
from ..escape import escape

log = logging.getLogger("streamd.auth")


def add_parser(sub: Any, with_config: Any) -> None:
    sp = with_config(sub.add_parser("auth", help="authorize a source at its OAuth2 provider (Asperion)"))
    sp.add_argument("source", help="the [sources.<name>] to authorize")
    sp.add_argument("--refresh-token", metavar="TOKEN",
                    help="import this refresh token instead of running the browser flow ('-': read stdin)")
    sp.add_argument("--timeout", type=float, default=600.0,
                    help="seconds to wait for the browser to come back (default 600)")
    sp.set_defaults(func=cmd_auth)


def cmd_auth(args: argparse.Namespace) -> int:
    from ..providers.asperion.config import AsperionConfig
    from . import load_config

    cfg = load_config(args.config)
    src = cfg.sources.get(args.source)
    if src is None:
        print(f"streamd auth: no [sources.{args.source}] in {cfg.origin}", file=sys.stderr)
        return EX_CONFIG
    if not isinstance(src, AsperionConfig):
        print(f"streamd auth: source {args.source} (provider {src.provider}) has no OAuth2 "
              "authorization to run", file=sys.stderr)
        return EX_CONFIG
    token = args.refresh_token
    if token == "-":
        token = sys.stdin.readline().strip()
        if not token:
            print("streamd auth: no refresh token on stdin", file=sys.stderr)
            return 2
    try:
        anyio.run(_auth, cfg.store, args.source, src, token, args.timeout)
    except _Failed as exc:
        # It may quote the identity server's error_description, or the redirect's `error`.
        print(f"streamd auth: {escape(str(exc))}", file=sys.stderr)
        return EX_FAILURE
    except StoreError as exc:
        print(f"streamd auth: cannot store the tokens: {exc}", file=sys.stderr)
        return EX_FAILURE
    print(f"streamd auth: {args.source} authorized; tokens stored in {cfg.store.path}")
    return 0


class _Failed(Exception):
    pass


async def _auth(store: Any, name: str, cfg: Any, refresh_token: str | None, wait: float) -> None:
    from ..providers.asperion.config import tls_context
    from ..providers.asperion.oauth import TokenState, save, token_request

    async with httpx.AsyncClient(verify=tls_context(cfg), timeout=cfg.timeout.seconds,
                                 trust_env=False) as http:
        try:
            if refresh_token:
                state = await token_request(http, cfg, {"grant_type": "refresh_token",
                                                        "refresh_token": refresh_token})
            else:
                state = await _browser_flow(http, cfg, wait)
        except (AuthFailed, TokenUnavailable) as exc:
            raise _Failed(str(exc)) from None
    assert isinstance(state, TokenState)
    await save(store, name, state)


async def _browser_flow(http: httpx.AsyncClient, cfg: Any, wait: float) -> Any:
    from ..providers.asperion.oauth import authorize_url, token_request

    expected = secrets.token_urlsafe(24)
    redirect = urlsplit(cfg.redirect_uri)
    result: dict[str, Any] = {}
    done = anyio.Event()

    async def callback(request: Request) -> Response:
        q = request.query_params
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
        raise _Failed(f"cannot listen for the redirect on {host}:{redirect.port}: {exc.strerror}") from None
    print("Open this URL in a browser and sign in to Asperion:\n\n  "
          f"{authorize_url(cfg, expected)}\n\nwaiting for the redirect to {cfg.redirect_uri} ...",
          flush=True)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.move_on_after(wait):
            await done.wait()
        server.should_exit = True
    sock.close()
    if "state" in result:
        return result["state"]
    raise _Failed(result.get("error") or f"no redirect came back within {wait:.0f}s")
