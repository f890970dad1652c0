"""Agents' puppets: Matrix users in the bridge's namespace that speak for the agents."""

from __future__ import annotations

import logging

from asyncpg import Pool
from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixRequestError

from ..db import puppets as stored
from ..roster import AgentSpec

log = logging.getLogger("daarion.puppets")


class Puppets:
    def __init__(self, bot_intent: IntentAPI, pool: Pool) -> None:
        self.bot_intent = bot_intent
        self.pool = pool

    def intent(self, matrix_id: str) -> IntentAPI:
        return self.bot_intent.user(matrix_id)

    async def ensure_profile(self, agent: AgentSpec) -> None:
        """Register the puppet once and keep its display name and avatar equal to the config.

        What was set is remembered in the database, so a restart makes no requests for
        puppets whose profile did not change."""
        want = stored.PuppetProfile(agent.name, agent.avatar)
        have = await stored.get(self.pool, agent.matrix_id)
        if have == want:
            return
        intent = self.intent(agent.matrix_id)
        await intent.ensure_registered()
        if have is None or have.displayname != want.displayname:
            await intent.set_displayname(agent.name)
        if have is None or have.avatar_url != want.avatar_url:
            await intent.set_avatar_url(agent.avatar or "")
        await stored.put(self.pool, agent.matrix_id, want)
        log.info("Puppet %s of %s is set up as %r", agent.matrix_id, agent.external_id, agent.name)

    async def leave_rooms(self, matrix_id: str, room_ids: list[str], reason: str) -> int:
        """Leave each room; one that fails is logged and left for the next reload."""
        left = 0
        intent = self.intent(matrix_id)
        for room_id in room_ids:
            try:
                await intent.leave_room(room_id, reason=reason)
                left += 1
            except MatrixRequestError as e:
                log.warning(
                    "%s could not leave %s: %s %s", matrix_id, room_id, e.errcode, e.message
                )
        return left
