"""Invites of the bot or of an agent's puppet: accept or refuse, and map the room.

A room the bot or an agent joins becomes a channel of a microDAO: the one whose linked
space holds the room (it lists the room, or accepts the room's m.space.parent: a parent
set by someone without power in the space counts for nothing), else the agent's own,
else bridge.default_microdao. With none, the invited user says why in the room and
leaves; nothing is written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from asyncpg import Pool
from mautrix.api import Method, Path
from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixRequestError
from mautrix.types import RoomID, UserID

from ..config import Config
from ..config.roster import AgentSpec
from ..crypto import CannotEncrypt, Crypto, seal
from ..db import channels, members, microdaos, spaces
from ..matrix.bot import UNREACHABLE, Bot, HomeserverUnavailable, room_state
from ..matrix.puppets import Puppets, send_message
from ..policy.invites import agent_invite_allowed, bot_invite_allowed, spaces_open_to
from ..translate.agents import LiveDirectory
from ..translate.events import AgentInvited, BotInvited, Invited
from ..translate.rooms import (
    Access,
    RoomSnapshot,
    access_from,
    open_to,
    replacement_of,
    snapshot_from_state,
)
from ..translate.spaces import parent_is_valid
from .channel_setup import ChannelSetup

log = logging.getLogger("daarion.invites")

TOO_BIG_NOTICE = (
    "This room cannot be bridged: it has {members} members, more than this bridge takes "
    "(bridge.max_room_members: {cap}). Ask the bridge admin."
)

NO_MICRODAO_NOTICE = (
    "This room cannot be bridged: no microDAO is mapped to it and the bridge has no "
    "default (bridge.default_microdao). Ask the bridge admin to set one, then invite me again."
)


async def agent_visibility(pool: Pool, agent: AgentSpec, access: Access | None) -> str | None:
    """How open the room is where the agent's invite rules are concerned: `microdao`
    only when restricted to the space of the agent's microDAO (any microDAO's for the
    city's agents)."""
    return open_to(access, spaces_open_to(agent, await spaces.all_linked(pool)))


async def bring_agents(bot: Bot, puppets: Puppets, agents: Sequence[str], room_id: str) -> None:
    """Agents join a channel's upgraded room: invited by the bot where the room needs
    it. One that cannot is left out (and said so): the room's members decide."""
    for agent in agents:
        try:
            await bot.intent.invite_user(RoomID(room_id), UserID(agent))
        except MatrixRequestError:
            pass  # invited by a person already, or the room lets the agent join
        try:
            await puppets.intent(agent).join_room(RoomID(room_id), max_retries=0)
        except MatrixRequestError as e:
            log.warning("%s could not join the upgraded room %s (%s)", agent, room_id, e.errcode)


class Invites:
    def __init__(
        self,
        pool: Pool,
        bot: Bot,
        puppets: Puppets,
        config: Config,
        directory: LiveDirectory,
        crypto: Crypto | None = None,
    ) -> None:
        self.crypto = crypto  # on: the notice is encrypted in an encrypted room
        self.pool = pool
        self.bot = bot
        self.puppets = puppets
        self.config = config
        self.directory = directory

    async def handle(self, invite: Invited) -> ChannelSetup | None:
        """Join and snapshot the room, or refuse; None when no channel is to be made."""
        try:
            if isinstance(invite, BotInvited):
                return await self._bot_invited(invite)
            return await self._agent_invited(invite)
        except MatrixRequestError as e:
            # The invite was withdrawn or the room is gone: nothing to bridge.
            log.warning(
                "Could not accept invite to %s: %s %s", invite.room_id, e.errcode, e.message
            )
            return None
        except UNREACHABLE as e:
            raise HomeserverUnavailable(str(e) or type(e).__name__) from e

    def _from_our_server(self, invite: Invited) -> bool:
        return bot_invite_allowed(invite.inviter, self.config.homeserver.domain, self.config.bridge)

    async def _bot_invited(self, invite: BotInvited) -> ChannelSetup | None:
        if not self._from_our_server(invite):
            log.info(
                "Refusing invite to %s from %s: other homeserver", invite.room_id, invite.inviter
            )
            await self.bot.intent.leave_room(
                RoomID(invite.room_id), reason="Invites from other servers are off"
            )
            return None
        return await self._join(self.bot.intent, invite, fallback_microdao=None)

    async def _agent_invited(self, invite: AgentInvited) -> ChannelSetup | None:
        agent = self.directory.current.agents.get(invite.agent_mxid)
        if agent is None:  # removed from the config since the event was translated
            return None
        intent = self.puppets.intent(agent.matrix_id)
        role = None
        if agent.microdao is not None:
            async with self.pool.acquire() as conn:
                role = await microdaos.role_of(conn, agent.microdao, invite.inviter)
        access = invite.access or await self._live_access(invite.room_id)
        visibility = await agent_visibility(self.pool, agent, access)
        # The bot invites an agent only when asked by a trusted caller (the admin API),
        # who checked the request: its invites are honoured in any room.
        by_bot = invite.inviter == self.config.bot_mxid
        if not by_bot and not (
            self._from_our_server(invite)
            and agent_invite_allowed(invite.inviter, agent, role, visibility)
        ):
            log.info(
                "%s refuses the invite to %s from %s: not allowed to invite this agent",
                agent.external_id,
                invite.room_id,
                invite.inviter,
            )
            await intent.ensure_registered()
            await intent.leave_room(
                RoomID(invite.room_id), reason="You may not invite this agent here"
            )
            return None
        log.info(
            "%s accepts the invite to %s from %s", agent.external_id, invite.room_id, invite.inviter
        )
        return await self._join(intent, invite, fallback_microdao=agent.microdao)

    async def _live_access(self, room_id: str) -> Access | None:
        """The room's join rule as the bot reads it, when the invite did not carry it;
        None when the bot cannot read it (not in the room)."""
        try:
            content = await self.bot.intent.api.request(
                Method.GET, Path.v3.rooms[room_id].state["m.room.join_rules"][""]
            )
        except MatrixRequestError:
            return None
        return access_from(content)

    async def _is_channel(self, room_id: str) -> bool:
        async with self.pool.acquire() as conn:
            return bool(await channels.by_rooms(conn, [room_id]))

    async def _join(
        self, intent: IntentAPI, invite: Invited, fallback_microdao: str | None
    ) -> ChannelSetup | None:
        await intent.join_room(RoomID(invite.room_id))
        if isinstance(invite, AgentInvited) and await self._is_channel(invite.room_id):
            return None  # already a channel: the puppet's join event indexes it as a member
        state = await room_state(intent, invite.room_id)
        snapshot = snapshot_from_state(invite.room_id, state, self.config.bot_mxid)
        if snapshot.is_space:
            # The bot stays to learn the space's children; an agent has nothing to do there.
            log.info("%s is a space, not a chat: it does not become a channel", invite.room_id)
            if isinstance(invite, AgentInvited):
                await intent.leave_room(RoomID(invite.room_id), reason="A space is not a chat")
            return None
        cap = self.config.bridge.max_room_members
        if cap and len(snapshot.joined) > cap:
            log.info(
                "Leaving %s: %d joined members, more than bridge.max_room_members (%d)",
                invite.room_id,
                len(snapshot.joined),
                cap,
            )
            notice = TOO_BIG_NOTICE.format(members=len(snapshot.joined), cap=cap)
            await self._notice(intent, invite.room_id, notice)
            await intent.leave_room(RoomID(invite.room_id), reason="Room too big to bridge")
            return None
        replaced = await self.upgraded_channel(snapshot)
        if replaced is not None:
            if isinstance(invite, BotInvited):
                # The channel's agents come along first, so they stay members, sessions
                # and all.
                async with self.pool.acquire() as conn:
                    agents = await members.agents_in_room(conn, replaced.room_id)
                await bring_agents(self.bot, self.puppets, agents, invite.room_id)
                state = await room_state(intent, invite.room_id)
                snapshot = snapshot_from_state(invite.room_id, state, self.config.bot_mxid)
            return ChannelSetup(
                snapshot,
                replaced.microdao,
                invite.inviter,
                self.config.bot_mxid,
                invite.event_id,
                replaces_room=replaced.room_id,
            )
        microdao = await self.microdao_for(snapshot, fallback_microdao)
        if microdao is None:
            log.info("Leaving %s: no microDAO to map it to", invite.room_id)
            await self._notice(intent, invite.room_id, NO_MICRODAO_NOTICE)
            await intent.leave_room(RoomID(invite.room_id), reason="No microDAO for this room")
            return None
        return ChannelSetup(snapshot, microdao, invite.inviter, self.config.bot_mxid)

    async def _notice(self, intent: IntentAPI, room_id: str, text: str) -> None:
        content = {"msgtype": "m.notice", "body": text}
        try:
            event_type, content = await seal(self.crypto, intent.mxid, room_id, content)
        except CannotEncrypt as e:
            log.warning("No notice in %s: %s", room_id, e)
            return
        await send_message(intent, room_id, content, event_type=event_type)

    async def upgraded_channel(self, snapshot: RoomSnapshot) -> channels.Channel | None:
        """The channel this room replaces: its m.room.create names a channel's room as
        predecessor, and that room's tombstone (which only its moderators can send)
        names this room back. Anyone can create a room claiming a predecessor."""
        old = snapshot.predecessor
        if old is None:
            return None
        async with self.pool.acquire() as conn:
            channel = (await channels.by_rooms(conn, [old])).get(old)
        if channel is None:
            return None
        try:
            tombstone = await self.bot.intent.api.request(
                Method.GET, Path.v3.rooms[old].state["m.room.tombstone"][""]
            )
        except MatrixRequestError:
            tombstone = {}
        if replacement_of(tombstone) == snapshot.room_id:
            return channel
        log.info(
            "%s names %s as its predecessor, whose tombstone does not name it back: "
            "not an upgrade of that channel",
            snapshot.room_id,
            old,
        )
        return None

    async def microdao_for(self, snapshot: RoomSnapshot, fallback: str | None) -> str | None:
        """The microDAO of the room's space, else the fallback, else the default."""
        found = await self.space_microdao(snapshot)
        return found or fallback or self.config.bridge.default_microdao

    async def space_microdao(self, snapshot: RoomSnapshot) -> str | None:
        """The microDAO whose linked space holds the room: a parent the room names counts
        only when its space accepts it (translate/spaces.py), or the space lists it."""
        linked = await spaces.all_linked(self.pool)
        for space_id in snapshot.space_parents:
            microdao = linked.get(space_id)
            if microdao is not None and await self._parent_holds(snapshot, space_id):
                return microdao
        for space_id, microdao in linked.items():
            if await self.bot.space_lists(space_id, snapshot.room_id):
                return microdao
        return None

    async def _parent_holds(self, snapshot: RoomSnapshot, space_id: str) -> bool:
        sender = snapshot.parent_senders.get(space_id, "")
        try:
            space_state = await self.bot.room_state(space_id)
        except MatrixRequestError as e:
            # The bot cannot read the space (not in it): the claim cannot be checked.
            log.info(
                "Parent %s of %s not checked (%s): ignored", space_id, snapshot.room_id, e.errcode
            )
            return False
        if parent_is_valid(snapshot.room_id, sender, space_state):
            return True
        log.info(
            "Ignoring parent %s of %s: the space does not list the room and %s may not add "
            "children to it",
            space_id,
            snapshot.room_id,
            sender,
        )
        return False
