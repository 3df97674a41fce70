"""The Connec! source: Maestrano's webhooks, and an optional changed-since poller.

Webhooks, on the daemon's listener, HTTP Basic with the app's api id and key (compared
in constant time; 401 `{"error": "Invalid credentials"}` otherwise):

- `POST <notifications_path>[/<tenant>]`: a body keyed by collection, each entity one
  event. An entity that does not normalize goes to dead letters with its own bytes;
  the rest of the body commits. 2xx only after the commit (invariant 2).
- `DELETE <groups_path>` / `DELETE <group_users_path>`: `group` / `user` `deleted`.

The poller (`poll = true`) lists each group's collections with
`$filter=updated_at gt '<cursor − lookback>'`, `$orderby=updated_at asc`, following
`pagination.next`. Every page's events commit as they come; the cursor (the newest
`updated_at` seen) commits with the last page's, once the listing saw as many entities
as the API counted. When it saw fewer (an entity changed mid-listing and offset paging
skipped another), the cursor moves only to just before the first page's newest stamp,
and the listing runs again from there (up to three times in one poll). Events are keyed
by (entity, `updated_at`, content), so what the webhook and the poller both bring, and
the overlap of two polls, is appended once. The listing and its cursor arithmetic are the
pure `changes`; here are the requests and the commits.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus

from ...errors import AuthFailed, PollFailed, Rejected
from ...health import State
from ...model import Event
from ...model.fields import DECODE_ERRORS
from ...sources import SourceContext, WebhookReply, WebhookRequest, json_reply
from ...sources.polling import (
    ApiClient,
    BasicAuth,
    Gate,
    PollHealth,
    Response,
    paginate,
    poll_every,
    server_tls,
    url_path,
)
from ...sources.window import CommitWindow
from ...store import Batch, DeadLetter
from . import wire
from .changes import Listing, since_filter
from .config import ConnecConfig
from .normalize import account_event, entity_event, split_body

log = logging.getLogger("streamd.source.connec")

INFLIGHT = 4  # page commits not yet confirmed, per listing
RELISTS = 3  # listings in one poll while entities move mid-listing
AUTH_RETRY = 300.0  # after the API refused the credentials, try again this long after
_UNAUTHORIZED = WebhookReply(401, {"error": "Invalid credentials"},
                             {"WWW-Authenticate": 'Basic realm="streamd", charset="UTF-8"'})


class ConnecSource:
    def __init__(self, ctx: SourceContext, cfg: ConnecConfig) -> None:
        self.name = ctx.name
        self.ctx = ctx
        self.cfg = cfg
        self.polls = 0  # complete listings, for tests
        self.health = PollHealth(ctx)
        self._expected = f"{cfg.api_id}:{cfg.api_key.reveal()}".encode()
        base = cfg.notifications_path.rstrip("/")
        ctx.webhook(base, self.notification, auth=self.auth)
        ctx.webhook(base + "/{tenant}", self.notification, auth=self.auth)
        if cfg.account_webhooks:
            ctx.webhook(cfg.groups_path, self.group_deleted, auth=self.auth, methods=("DELETE",))
            ctx.webhook(cfg.group_users_path, self.user_removed, auth=self.auth,
                        methods=("DELETE",))
        if cfg.poll:
            ctx.metrics.init_poller(self.name)

    def renormalize(self, raw: bytes, context: Mapping[str, str], received_at: datetime) -> list[Event]:
        tenant = context.get("tenant") or None
        if "collection" in context:
            return [entity_event(context["collection"], raw, source=self.name, tenant=tenant,
                                 received_at=received_at, zone=self.cfg.zone)]
        return [entity_event(c, r, source=self.name, tenant=tenant, received_at=received_at,
                             zone=self.cfg.zone)
                for c, r in split_body(raw)]

    # ---------------------------------------------------------------- lifecycle

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        component = self.ctx.component
        if not self.cfg.poll:
            component.ok()  # webhooks only: ready as soon as the listener is
            task_status.started()
            await anyio.sleep_forever()
        component.set(State.STARTING, "starting")
        task_status.started()
        async with ApiClient(self.ctx, server_tls(self.cfg.ca), BasicAuth(self.cfg.api_id, self.cfg.api_key),
                             timeout=self.cfg.timeout.seconds, policy=self.cfg.backoff,
                             max_tries=self.cfg.max_tries, describe=_error) as client:
            gate = Gate(self.cfg.concurrency)
            while True:
                try:
                    async with anyio.create_task_group() as tg:
                        for group in self.cfg.groups:
                            for collection in self.cfg.collections:
                                tg.start_soon(self._poll_loop, client, gate, group, collection)
                except* AuthFailed as group:
                    exc = group.exceptions[0]
                    self.health.refused(str(exc), f"tried again in {AUTH_RETRY:.0f}s; webhooks go on")
                    await anyio.sleep(AUTH_RETRY)

    async def _poll_loop(self, client: ApiClient, gate: Gate, group: str, collection: str) -> None:
        await poll_every(self.ctx, self.health, lambda: self._poll(client, gate, group, collection),
                         interval=self.cfg.interval.seconds, policy=self.cfg.backoff,
                         where=f"{group}/{collection}", complete=self._polled)

    def _polled(self) -> None:
        self.polls += 1

    # ---------------------------------------------------------------- webhooks

    def auth(self, headers: Mapping[str, str]) -> WebhookReply | None:
        """Before the body is read: HTTP Basic with the API id and key, in constant time."""
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return _UNAUTHORIZED
        try:
            given = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return _UNAUTHORIZED
        return None if hmac.compare_digest(given, self._expected) else _UNAUTHORIZED

    async def notification(self, req: WebhookRequest) -> WebhookReply:
        ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/json", wire.ACCEPT):
            return json_reply(415, error="content-type must be application/json")
        tenant = req.path_params.get("tenant") or None
        now = self.ctx.now()
        base = {"via": "webhook", **({"tenant": tenant} if tenant else {})}
        try:
            entities = split_body(req.body)
        except Rejected as exc:
            await self.ctx.submit(Batch(dead_letters=[self.ctx.dead_letter(exc.reason, req.body, base)]))
            return json_reply(400, error=exc.reason)
        self.ctx.received(len(entities))
        events: list[Event] = []
        rejects: list[DeadLetter] = []
        for collection, raw in entities:
            try:
                events.append(entity_event(collection, raw, source=self.name, tenant=tenant,
                                           received_at=now, zone=self.cfg.zone))
            except Rejected as exc:
                rejects.append(self.ctx.dead_letter(exc.reason, raw, {**base, "collection": collection}))
        done = await self.ctx.submit(Batch(events=events, dead_letters=rejects))
        # 2xx only now: the events are committed (invariant 2). A body whose every entity
        # was refused is a 400 (kept in dead letters): sending it again cannot help.
        if rejects and not events:
            return json_reply(400, error="no entity in the body could be taken",
                              rejected=[d.reason for d in rejects])
        return json_reply(200, appended=done.appended, duplicates=done.duplicates,
                          rejected=[d.reason for d in rejects])

    async def group_deleted(self, req: WebhookRequest) -> WebhookReply:
        return await self._account(req, "group", req.path_params.get("id", ""), None)

    async def user_removed(self, req: WebhookRequest) -> WebhookReply:
        return await self._account(req, "user", req.path_params.get("group_id", ""),
                                   req.path_params.get("id", ""))

    async def _account(self, req: WebhookRequest, kind: str, group: str, user: str | None) -> WebhookReply:
        self.ctx.received()
        try:
            event = account_event("group" if kind == "group" else "user", group, user,
                                  source=self.name, received_at=self.ctx.now())
        except Rejected as exc:
            return json_reply(400, error=exc.reason)
        done = await self.ctx.submit(Batch(events=[event]))
        return json_reply(200, appended=done.appended, duplicates=done.duplicates)

    # ---------------------------------------------------------------- the poller

    async def _poll(self, client: ApiClient, gate: Gate, group: str, collection: str) -> None:
        """One listing; while entities move during it (offset paging then skips one), again
        from the cursor it could safely advance to, up to RELISTS times in all."""
        for _ in range(RELISTS - 1):
            if await self._list(client, gate, group, collection):
                return
        if not await self._list(client, gate, group, collection):
            raise PollFailed(f"{group}/{collection}: the listing moved while paged {RELISTS} times "
                             "running; the cursor moved only as far as is safe")

    async def _list(self, client: ApiClient, gate: Gate, group: str, collection: str) -> bool:
        """List what changed since the cursor; True when the listing saw every entity the API
        counted (the cursor then moves to the newest stamp seen)."""
        key = f"poll.{group}.{collection}"
        state: dict[str, Any] = (await self.ctx.progress()).get(key) or {}
        cursor = state.get("cursor")
        listing = Listing(source=self.name, group=group, collection=collection,
                          cursor=cursor if isinstance(cursor, str) else None,
                          received_at=self.ctx.now(), zone=self.cfg.zone)
        params = {"$orderby": "updated_at asc", "$top": str(self.cfg.page_size)}
        since = since_filter(listing.cursor, timedelta(seconds=self.cfg.lookback.seconds))
        if since is not None:
            params["$filter"] = since
        api = self.cfg.api_url.rstrip("/")
        window = CommitWindow(self.ctx.enqueue, INFLIGHT)
        last = Batch()

        async def fetch(url: str, query: dict[str, str] | None) -> tuple[list[msgspec.Raw], wire.Pagination]:
            resp = await client.get(url, query, gate=gate, headers={"Accept": wire.ACCEPT},
                                    what=f"{group}/{collection}")
            try:
                page = msgspec.json.decode(resp.content, type=dict[str, msgspec.Raw])
                return (wire.list_decoder.decode(page.get(collection, b"[]")),
                        wire.pagination_decoder.decode(page.get("pagination", b"{}")))
            except DECODE_ERRORS as exc:  # nested too deeply for the decoder (RecursionError) too
                raise PollFailed(f"{url_path(url)}: not a {collection} page ({exc})") from None

        async def take(page: tuple[list[msgspec.Raw], wire.Pagination]) -> None:
            nonlocal last
            items, pagination = page
            self.ctx.received(len(items))
            events, refused = listing.page((bytes(item) for item in items), pagination.total)
            batch = Batch(events=events, dead_letters=[self.ctx.dead_letter(*r) for r in refused])
            if pagination.next is None:
                last = batch  # committed with the cursor that covers it
            elif events or refused:
                await window.add(batch)

        await paginate(api + wire.API_PATH.format(group_id=group, collection=collection), fetch,
                       lambda page: page[1].next, take, base=api, params=params, what="pagination.next")
        await window.settle()
        # The last page's events and the cursor that covers them: one commit.
        last.progress = {key: listing.progress()}
        await self.ctx.submit(last)
        if not listing.complete:
            log.info("source %s: %s/%s: saw %d of %d entities (the listing moved while paged); "
                     "listing again", self.name, group, collection, len(listing.seen), listing.total)
        return listing.complete


def _error(resp: Response) -> str:
    text = resp.text[:200].strip() if resp.content else ""
    return text or resp.reason_phrase
