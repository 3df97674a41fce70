"""`streamd auth SOURCE`: authorize streamd at a source's provider once (e.g. Asperion's OAuth2).

The sign-in itself is the provider's (`ProviderSpec.authorize`, e.g.
`providers/asperion/authorize.py`): without options a browser flow, or with
`--refresh-token TOKEN` (or `-` to read it from stdin, which keeps it out of `ps`) an
import of a token obtained elsewhere. Either way the credentials end in the feed
database, where a running daemon takes them up as soon as its own are refused; no
restart is needed. Tokens are never printed. This module imports no provider.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio

from ..errors import EX_CONFIG, EX_FAILURE, AuthorizationFailed, StoreError
from ..escape import escape


def add_parser(sub: Any, with_config: Any) -> None:
    sp = with_config(sub.add_parser("auth", help="authorize a source at its provider once (OAuth2 sign-in)"))
    sp.add_argument("source", help="the [sources.<name>] to authorize")
    sp.add_argument("--refresh-token", metavar="TOKEN",
                    help="import this refresh token instead of running the browser flow ('-': read stdin)")
    sp.add_argument("--timeout", type=float, default=600.0,
                    help="seconds to wait for the browser to come back (default 600)")
    sp.set_defaults(func=cmd_auth)


def cmd_auth(args: argparse.Namespace) -> int:
    from ..providers import provider_spec
    from ..sources import Authorization
    from .common import load_config

    cfg = load_config(args.config)
    src = cfg.sources.get(args.source)
    if src is None:
        print(f"streamd auth: no [sources.{args.source}] in {cfg.origin}", file=sys.stderr)
        return EX_CONFIG
    authorize = provider_spec(src.provider).authorize
    if authorize is None:
        print(f"streamd auth: source {args.source} (provider {src.provider}) has no OAuth2 "
              "authorization to run", file=sys.stderr)
        return EX_CONFIG
    token = args.refresh_token
    if token == "-":
        token = sys.stdin.readline().strip()
        if not token:
            print("streamd auth: no refresh token on stdin", file=sys.stderr)
            return 2
    request = Authorization(store=cfg.store, source=args.source, config=src, refresh_token=token,
                            timeout=args.timeout, say=lambda text: print(text, flush=True))
    try:
        anyio.run(authorize, request)
    except AuthorizationFailed as exc:
        # It may quote the identity server's error_description, or the redirect's `error`.
        print(f"streamd auth: {escape(str(exc))}", file=sys.stderr)
        return EX_FAILURE
    except StoreError as exc:
        print(f"streamd auth: cannot store the tokens: {exc}", file=sys.stderr)
        return EX_FAILURE
    print(f"streamd auth: {args.source} authorized; tokens stored in {cfg.store.path}")
    return 0
