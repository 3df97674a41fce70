"""The demo's webhook receiver: what the `http` sink posts to (docs/sinks/http.md).

Plain HTTP on loopback. Every POST to `PATH` carries CloudEvents: a batch
(`application/cloudevents-batch+json`, a JSON array) or one event. With a signing
secret, the Standard Webhooks signature is checked first, as a real receiver would:
a request with a missing or wrong signature is answered 401 (the sink retries it) and
its events are not taken. Otherwise the answer is 200, and the receiver keeps what a
receiver deduplicating on event ids would: the ids it has, and how many arrived again
(at-least-once delivery: a batch retried after a failure or a crash).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..secrets import Secret
from ..simulated import SimulatedServer
from ..sinks.http import BATCH_TYPE, signing_key

PATH = "/events"
TOLERANCE = 300.0  # seconds a signature's timestamp may be off (Standard Webhooks' replay window)


class DemoReceiver(SimulatedServer):
    """`secret`: the sink's `signing_secret` (its Secret), or None to take unsigned requests."""

    NAME = "demo receiver"

    def __init__(self, secret: Secret | None = None) -> None:
        super().__init__(None)
        self._key = signing_key(secret) if secret is not None else None
        self.requests = 0
        self.bad_signatures = 0
        self.ids: set[str] = set()  # every event id taken
        self.redeliveries = 0  # events taken whose id was already there
        self._app = Starlette(routes=[Route(PATH, self._handle, methods=["POST"])])

    @property
    def endpoint(self) -> str:
        return self.url + PATH

    def sink_toml(self, name: str, **extra: str) -> str:
        """A `[sinks.<name>]` table posting here; `extra` adds keys, values already TOML."""
        lines = [f"[sinks.{name}]", 'type = "http"', f"url = {json.dumps(self.endpoint)}"]
        lines += [f"{k} = {v}" for k, v in extra.items()]
        return "\n".join(lines) + "\n"

    def _signed(self, request: Request, body: bytes) -> bool:
        if self._key is None:
            return True
        h = request.headers
        msg_id, stamp, given = h.get("webhook-id"), h.get("webhook-timestamp", ""), h.get("webhook-signature")
        if not msg_id or not given or not stamp.isdigit() or abs(time.time() - int(stamp)) > TOLERANCE:
            return False
        mac = hmac.new(self._key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
        expected = base64.b64encode(mac).decode()
        return any(version == "v1" and hmac.compare_digest(sig, expected)
                   for version, _, sig in (s.partition(",") for s in given.split(" ")))

    async def _handle(self, request: Request) -> Response:
        self.requests += 1
        body = await request.body()
        if not self._signed(request, body):
            self.bad_signatures += 1
            return Response(b'{"error": "bad signature"}', 401, media_type="application/json")
        try:
            decoded = json.loads(body)
            events = decoded if request.headers.get("content-type", "").startswith(BATCH_TYPE) \
                else [decoded]
            ids = [str(e["id"]) for e in events]
        except (ValueError, TypeError, KeyError):
            return Response(b'{"error": "not CloudEvents"}', 400, media_type="application/json")
        for event_id in ids:
            if event_id in self.ids:
                self.redeliveries += 1
            self.ids.add(event_id)
        return Response(b'{"ok": true}', 200, media_type="application/json")
