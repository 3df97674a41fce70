"""The bound on what one listing may delete.

A listing is diffed against the last one, and a record it no longer shows is deleted
once its own URL answers 404. An administration whose access was revoked does exactly
that for every record at once: it lists nothing, with 200, and answers 404 to every
id. So when one listing would delete more than `mass_delete_share` of the records known
before it (and more than `mass_delete_min`), it deletes nothing. The deletions are
*held*: the source is unhealthy, saying why (`held` in /readyz and `streamd status`),
`streamd_source_deletions_held` counts them, and they wait for

- the operator: `streamd deletions confirm <source>` writes a confirmation of this hold
  into the store, and the next listing that still finds the records gone deletes them;
- or, with `mass_delete_confirm_after` set, listings that keep agreeing for that long.

A listing that shows the records again (access restored) releases the hold and deletes
nothing, not even the few it still found gone (it may have caught the API half-way
back): the next listing deletes what is really gone. The hold lives in `source_state`,
beside the listing's progress, under `deletions.<tenant>.<resource>.held` (and
`.confirmed`, written by the CLI), so a restart neither forgets it nor restarts its clock.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime
from typing import Any

import msgspec

from ...model import format_time
from ...sources import SourceContext
from ...sources.held import (
    PREFIX,
    Confirmation,
    Hold,
    command,
    keys,
    parse_key,
    read_confirmation,
    read_hold,
)
from ...sources.polling import PollHealth
from .changes import mass_delete
from .config import AsperionConfig

log = logging.getLogger("streamd.source.asperion")

class Guard:
    """The source's held deletions: decides per listing, and keeps health and the metric."""

    def __init__(self, ctx: SourceContext, cfg: AsperionConfig, health: PollHealth) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.health = health
        self.held: dict[str, int] = {}  # "<tenant>/<resource>" -> deletions held
        self._gauge = ctx.metrics.source_deletions_held.labels(ctx.name)
        self._gauge.set(0)

    async def restore(self) -> None:
        """At start: what a previous run held is held again, until a listing decides."""
        for key, value in (await self.ctx.reader.progress_under(self.ctx.name, PREFIX)).items():
            parsed = parse_key(key)
            hold = read_hold(value)
            if parsed is not None and parsed[2] == "held" and hold is not None:
                self._show(parsed[0], parsed[1], hold)

    async def decide(self, tenant: str, resource: str, gone: int, known: int,
                     now: datetime) -> tuple[bool, dict[str, Any]]:
        """Whether a listing that found `gone` of `known` records gone deletes them now, and
        the `source_state` rows to commit with it (a new or updated hold; a cleared one)."""
        held_key, confirmed_key = keys(tenant, resource)
        stored = await self.ctx.reader.progress_under(self.ctx.name, held_key.rpartition(".")[0] + ".")
        hold, confirmation = read_hold(stored.get(held_key)), read_confirmation(stored.get(confirmed_key))
        where = f"{tenant}/{resource}"
        if not mass_delete(gone, known, share=self.cfg.mass_delete_share, minimum=self.cfg.mass_delete_min):
            if hold is None:
                return True, {}
            # Access coming back shows records page by page, GET by GET: this listing may
            # have caught the API half-way. It deletes nothing; the next one decides alone.
            log.info("source %s: %s: the listing shows the records again; the %d deletions held "
                     "since %s are dropped", self.ctx.name, where, hold.deleting, hold.since)
            self._release(where)
            return False, {held_key: None, confirmed_key: None}
        if hold is not None:
            why = self._go_ahead(hold, confirmation, now)
            if why:
                log.warning("source %s: %s: deleting %d records (held since %s): %s", self.ctx.name,
                            where, gone, hold.since, why)
                self._release(where)
                return True, {held_key: None, confirmed_key: None}
            hold = msgspec.structs.replace(hold, deleting=gone, known=known)
        else:
            hold = Hold(id=secrets.token_hex(8), since=format_time(now), deleting=gone, known=known)
            log.warning("source %s: %s: %d of the %d records known vanished in one listing, each "
                        "answering 404; deletions held: %s", self.ctx.name, where, gone, known,
                        self._remedy(tenant, resource))
        self._show(tenant, resource, hold)
        return False, {held_key: hold}

    def _go_ahead(self, hold: Hold, confirmation: Confirmation | None, now: datetime) -> str:
        """Why held deletions may go ahead now, or "" while they wait."""
        if confirmation is not None and confirmation.hold == hold.id:
            return f"confirmed with `streamd deletions confirm` at {confirmation.at}"
        after = self.cfg.mass_delete_confirm_after
        since = datetime.fromisoformat(hold.since)
        if after is not None and (now - since).total_seconds() >= after.seconds:
            return f"every listing has agreed for mass_delete_confirm_after ({after})"
        return ""

    def _remedy(self, tenant: str, resource: str) -> str:
        after = self.cfg.mass_delete_confirm_after
        return (f"if they were deleted at Asperion, run `{command(self.ctx.name, tenant, resource)}`"
                + (f"; they go ahead on their own once listings have agreed for {after}" if after else
                   "; if access to the administration was lost, restore it"))

    def _show(self, tenant: str, resource: str, hold: Hold) -> None:
        where = f"{tenant}/{resource}"
        self.held[where] = hold.deleting
        self._gauge.set(sum(self.held.values()))
        self.health.hold(where, f"{hold.deleting} of {hold.known} known records vanished in one "
                                f"listing (held since {hold.since}): {self._remedy(tenant, resource)}")

    def _release(self, where: str) -> None:
        self.held.pop(where, None)
        self._gauge.set(sum(self.held.values()))
        self.health.release(where)
