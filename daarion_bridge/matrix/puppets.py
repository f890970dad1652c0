"""Agents' puppets: Matrix users in the bridge's namespace that speak for the agents."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from asyncpg import Pool
from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixRequestError, make_request_error
from mautrix.types import ContentURI, RoomID, UserID

from ..config.roster import AgentSpec
from ..db import puppets as stored

log = logging.getLogger("daarion.puppets")

MAX_RETRY_AFTER_MS = 30_000
# Answers to a leave that mean the user is not in the room: nothing left to do there.
NOT_THERE = frozenset(
    {"M_FORBIDDEN", "M_NOT_FOUND"}
)  # the agent runtime waits for the answer: never longer


class Puppets:
    def __init__(self, bot_intent: IntentAPI, pool: Pool) -> None:
        self.bot_intent = bot_intent
        self.pool = pool

    def intent(self, matrix_id: str) -> IntentAPI:
        return self.bot_intent.user(UserID(matrix_id))

    async def ensure_profiles(self, agents: Sequence[AgentSpec]) -> None:
        """`ensure_profile` for many: one read for all, requests only for what changed."""
        have = await stored.get_many(self.pool, [a.matrix_id for a in agents])
        for agent in agents:
            await self._set_up(agent, have.get(agent.matrix_id))

    async def ensure_profile(self, agent: AgentSpec) -> None:
        """Register the puppet once and keep its display name and avatar equal to the config.

        What was set is remembered in the database, so a restart makes no requests for
        puppets whose profile did not change."""
        await self._set_up(agent, await stored.get(self.pool, agent.matrix_id))

    async def _set_up(self, agent: AgentSpec, have: stored.PuppetProfile | None) -> None:
        want = stored.PuppetProfile(agent.name, agent.avatar)
        if have == want:
            return
        intent = self.intent(agent.matrix_id)
        await intent.ensure_registered()
        if have is None or have.displayname != want.displayname:
            await intent.set_displayname(agent.name)
        if have is None or have.avatar_url != want.avatar_url:
            await intent.set_avatar_url(ContentURI(agent.avatar or ""))
        await stored.put(self.pool, agent.matrix_id, want)
        log.info("Puppet %s of %s is set up as %r", agent.matrix_id, agent.external_id, agent.name)

    async def leave_rooms(
        self, matrix_id: str, room_ids: list[str], reason: str
    ) -> tuple[int, list[str]]:
        """Leave each room. Returns how many were left, and the rooms the homeserver says
        the user is not in (or that it does not know). Other failures are logged and
        tried again at the next reload."""
        left, absent = 0, []
        intent = self.intent(matrix_id)
        for room_id in room_ids:
            try:
                await intent.leave_room(RoomID(room_id), reason=reason)
                left += 1
            except MatrixRequestError as e:
                if e.http_status in (403, 404) or e.errcode in NOT_THERE:
                    absent.append(room_id)
                    continue
                log.warning(
                    "%s could not leave %s: %s %s", matrix_id, room_id, e.errcode, e.message
                )
        return left, absent


async def send_message(
    intent: IntentAPI,
    room_id: str,
    content: dict[str, Any],
    attempts: int = 4,
    txn_id: str | None = None,
    event_type: str = "m.room.message",
) -> str:
    """Send an m.room.message (or, encrypted, `event_type` m.room.encrypted) as this
    user; returns the event id.

    The homeserver's 429 is retried after the `retry_after_ms` it asks for (mautrix's
    errors drop that figure, so this one request is made here). One transaction id for
    every attempt: a retry after a lost answer never sends twice. The caller's `txn_id`
    makes a later call with the same one get the same event back (the homeserver
    remembers it for a while: Synapse, 30 minutes)."""
    api = intent.api
    url = api.base_url / "_matrix" / "client" / "v3" / "rooms" / room_id / "send"
    url = url / event_type / (txn_id or uuid.uuid4().hex)
    headers = {"Authorization": f"Bearer {api.token}"}
    params = {"user_id": intent.mxid}
    for attempt in range(attempts):
        async with api.session.put(url, json=content, headers=headers, params=params) as resp:
            text = await resp.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = {}
        if resp.status == 200 and isinstance(body.get("event_id"), str):
            return body["event_id"]
        if resp.status == 429 and attempt + 1 < attempts:
            delay_ms = body.get("retry_after_ms")
            delay_ms = delay_ms if isinstance(delay_ms, int) and delay_ms >= 0 else 1000
            await asyncio.sleep(min(delay_ms, MAX_RETRY_AFTER_MS) / 1000)
            continue
        raise make_request_error(resp.status, text, body.get("errcode"), body.get("error"))
    raise AssertionError("unreachable")
