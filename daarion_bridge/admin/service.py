"""What the admin API does: microDAOs (and their spaces), channels the bot creates,
invites, platform ids of people, and the listings. HTTP lives in web/admin_api.py.

A channel the bot creates is written to the index the way an accepted invite is (a
ChannelSetup from the room's state, through the ingest lock and the outbox), so its row
exists when the call returns. An agent asked into a channel is invited by the bot and
its puppet joins at once; the join is indexed before the call returns.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from asyncpg import Pool
from mautrix.api import Method, Path
from mautrix.errors import MatrixRequestError
from mautrix.types import RoomCreatePreset, RoomID, UserID

from ..config import Config
from ..config.roster import AgentSpec
from ..db import agents, channels, members, messages, microdaos, sessions, spaces, users
from ..db.bookkeeping import lock_ingest
from ..ids import SYSTEM_AGENT_ID
from ..ingest.channel_setup import ChannelSetup
from ..ingest.ingestor import Ingestor
from ..matrix.bot import UNREACHABLE, Bot, HomeserverUnavailable, room_state
from ..matrix.puppets import Puppets
from ..translate.agents import LiveDirectory
from ..translate.rooms import CREATOR_POWER_VERSIONS, snapshot_from_state

log = logging.getLogger("daarion.admin")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
OWNER_LEVEL = 100


class AdminError(Exception):
    """An answer other than success: HTTP status, message, and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


@dataclass(frozen=True, slots=True)
class NewMicrodao:
    external_id: str
    name: str
    owner: str  # Matrix id
    create_space: bool = False


@dataclass(frozen=True, slots=True)
class NewChannel:
    name: str
    slug: str
    visibility: str  # public | microdao | private
    topic: str | None = None


@dataclass(frozen=True, slots=True)
class CreatedChannel:
    channel: channels.ChannelInfo
    alias: str
    topic: str | None
    space_room_id: str | None
    in_space: bool  # the space lists the room (m.space.child)
    owner_invited: bool


@dataclass(frozen=True, slots=True)
class Invited:
    channel: channels.Channel
    user_id: str  # Matrix id
    agent: AgentSpec | None
    membership: str  # invite | join
    changed: bool  # False: the user was already invited or in the channel


@dataclass(frozen=True, slots=True)
class AgentWithSessions:
    agent: agents.AgentInfo
    configured: bool  # in the config now (else kept for history)
    sessions: list[sessions.OpenSession]


@dataclass(frozen=True, slots=True)
class MessagePage:
    channel: channels.Channel
    messages: list[messages.Listed]
    next_cursor: str | None


def refused(what: str, e: MatrixRequestError) -> AdminError:
    return AdminError(502, f"the homeserver refused {what} ({e.errcode}: {e.message})")


# -- the message cursor ---------------------------------------------------------------------


def encode_cursor(created_at: datetime, row_id: UUID) -> str:
    """Opaque to callers: the (created_at, id) of the last message of a page."""
    micros = (created_at - EPOCH) // timedelta(microseconds=1)
    raw = f"{micros}.{row_id.hex}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """Raises ValueError for anything encode_cursor did not make."""
    if not cursor or len(cursor) > 100:
        raise ValueError("bad cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise ValueError("bad cursor") from None
    micros, _, hex_id = raw.partition(".")
    if not micros.lstrip("-").isdigit() or len(hex_id) != 32:
        raise ValueError("bad cursor")
    try:
        return EPOCH + timedelta(microseconds=int(micros)), UUID(hex=hex_id)
    except (ValueError, OverflowError):
        raise ValueError("bad cursor") from None


# -- the work -------------------------------------------------------------------------------


class Admin:
    def __init__(
        self,
        pool: Pool,
        bot: Bot,
        puppets: Puppets,
        directory: LiveDirectory,
        config: Config,
        ingestor: Ingestor,
    ) -> None:
        self.pool = pool
        self.bot = bot
        self.puppets = puppets
        self.directory = directory
        self.config = config
        self.ingestor = ingestor
        self.domain = config.homeserver.domain

    # microDAOs

    async def create_microdao(self, new: NewMicrodao) -> microdaos.Microdao:
        """The row (and the owner as member `owner`); with create_space, a Matrix space
        the bot creates, the owner invited with power 100, linked to the microDAO. All or
        nothing: the row commits only once the space exists."""
        async with self.pool.acquire() as conn, conn.transaction():
            if await microdaos.find(conn, new.external_id) is not None:
                raise AdminError(409, f"microDAO {new.external_id} exists", "external_id")
            owner_id = (await users.ensure_users(conn, [new.owner]))[new.owner]
            try:
                microdao_id = await microdaos.create(conn, new.external_id, new.name, owner_id)
            except asyncpg.UniqueViolationError:  # created meanwhile by another call
                raise AdminError(409, f"microDAO {new.external_id} exists", "external_id") from None
            if new.create_space:
                try:
                    space_id = await self._matrix(self._create_space(new.name, new.owner))
                except MatrixRequestError as e:
                    raise refused("creating the space", e) from None
                await spaces.link(conn, space_id, microdao_id)
                log.info("Created space %s for %s", space_id, new.external_id)
            found = await microdaos.by_ref(conn, str(microdao_id))
        assert found is not None
        log.info("Created microDAO %s", new.external_id)
        return found

    async def _create_space(self, name: str, owner: str) -> str:
        version = await self._default_room_version()
        return await self.bot.intent.create_room(
            name=name,
            preset=RoomCreatePreset.PRIVATE,
            creation_content={"type": "m.space"},
            power_level_override={"users": self._owner_power(owner, version)},
            invitees=[owner] if owner != self.config.bot_mxid else None,
            room_version=version,
        )

    async def _default_room_version(self) -> str:
        """The homeserver's default room version, which decides how the creator's power
        is written (implicit in version 12, listed before it)."""
        caps = await self.bot.intent.api.request(Method.GET, Path.v3.capabilities)
        versions = (caps.get("capabilities") or {}).get("m.room_versions") or {}
        return str(versions.get("default") or "1")

    def _owner_power(self, owner: str, version: str) -> dict[str, int]:
        power = {owner: OWNER_LEVEL}
        if version not in CREATOR_POWER_VERSIONS:
            # Before version 12 the users map must hold the creator, or the bot loses power.
            power[self.config.bot_mxid] = OWNER_LEVEL
        elif owner == self.config.bot_mxid:
            power = {}  # creators may not be listed
        return power

    async def microdao(self, ref: str) -> microdaos.Microdao:
        async with self.pool.acquire() as conn:
            found = await microdaos.by_ref(conn, ref)
        if found is None:
            raise AdminError(404, f"unknown microDAO {ref}", "microdao")
        return found

    # channels

    async def create_channel(self, microdao_ref: str, new: NewChannel) -> CreatedChannel:
        dao = await self.microdao(microdao_ref)
        owner = dao.owner_matrix_id
        if owner is None:
            raise AdminError(409, f"the owner of {dao.external_id} has no Matrix id", "microdao")
        async with self.pool.acquire() as conn:
            if await channels.slug_taken(conn, dao.id, new.slug):
                raise AdminError(409, f"{dao.external_id} has a channel {new.slug}", "slug")
        localpart = self.config.api.alias_localpart(new.slug, dao.external_id)
        alias = f"#{localpart}:{self.domain}"
        space = dao.space_room_id
        room_id = await self._matrix(self._create_room(new, localpart, owner, space))
        try:
            state = await self._matrix(room_state(self.bot.intent, room_id))
            # The slug asked for, not one derived from the alias.
            snapshot = snapshot_from_state(room_id, state, self.config.bot_mxid)
            snapshot = dataclasses.replace(snapshot, slug=new.slug)
            outcome = await self.ingestor.write_setups(
                f"admin-channel-{room_id}",
                [ChannelSetup(snapshot, dao.external_id, owner, self.config.bot_mxid)],
            )
        except Exception:
            await self._abandon(room_id, f"#{localpart}:{self.domain}")
            raise
        log.info("Created room %s for channel %s of %s", room_id, new.slug, dao.external_id)
        owner_invited = owner == self.config.bot_mxid or await self._invite_owner(room_id, owner)
        in_space = space is not None and await self._add_to_space(space, room_id)
        async with self.pool.acquire() as conn:
            channel_id = outcome.new_channels[0].id if outcome.new_channels else None
            if channel_id is None:  # written by the homeserver's push meanwhile
                channel_id = (await channels.by_rooms(conn, [room_id]))[room_id].id
            info = await channels.info(conn, channel_id)
        assert info is not None
        return CreatedChannel(info, alias, new.topic, space, in_space, owner_invited)

    async def _create_room(
        self, new: NewChannel, localpart: str, owner: str, space: str | None
    ) -> str:
        version = await self._default_room_version()
        if new.visibility == "public":
            join_rule: dict[str, Any] = {"join_rule": "public"}
        elif new.visibility == "microdao" and space is not None:
            allow = [{"type": "m.room_membership", "room_id": space}]
            join_rule = {"join_rule": "restricted", "allow": allow}
        else:  # private, or microdao without a space: members are invited
            join_rule = {"join_rule": "invite"}
        initial_state: list[dict[str, Any]] = [
            {"type": "m.room.join_rules", "state_key": "", "content": join_rule}
        ]
        if space is not None:
            initial_state.append(
                {
                    "type": "m.space.parent",
                    "state_key": space,
                    "content": {"via": [self.domain], "canonical": True},
                }
            )
        preset = RoomCreatePreset.PUBLIC if new.visibility == "public" else RoomCreatePreset.PRIVATE
        try:
            return await self.bot.intent.create_room(
                alias_localpart=localpart,
                preset=preset,
                name=new.name,
                topic=new.topic,
                initial_state=initial_state,
                power_level_override={"users": self._owner_power(owner, version)},
                room_version=version,
            )
        except MatrixRequestError as e:
            if e.errcode == "M_ROOM_IN_USE":
                alias = f"#{localpart}:{self.domain}"
                raise AdminError(409, f"room alias {alias} is taken", "slug") from None
            if e.errcode == "M_EXCLUSIVE":
                raise AdminError(
                    502,
                    f"the homeserver refused the alias #{localpart}:{self.domain}: the "
                    "registration it loaded does not reserve api.channel_alias; run -g "
                    "again and restart the homeserver",
                ) from None
            raise refused("creating the room", e) from None

    async def _abandon(self, room_id: str, alias: str) -> None:
        """The row could not be written: free the alias and leave, so a retry can work."""
        try:
            await self.bot.intent.api.request(Method.DELETE, Path.v3.directory.room[alias])
            await self.bot.intent.leave_room(RoomID(room_id), reason="Channel creation failed")
        except Exception as e:  # best effort; the original error is what the caller hears
            log.warning("Could not clean up room %s: %s", room_id, type(e).__name__)

    async def _invite_owner(self, room_id: str, owner: str) -> bool:
        try:
            await self._matrix(self.bot.intent.invite_user(RoomID(room_id), UserID(owner)))
            return True
        except MatrixRequestError as e:
            log.warning("Could not invite %s into %s: %s", owner, room_id, e.errcode)
            return False

    async def _add_to_space(self, space: str, room_id: str) -> bool:
        """List the room in the space (m.space.child); the bot needs power in the space."""
        try:
            await self._matrix(
                self.bot.intent.api.request(
                    Method.PUT,
                    Path.v3.rooms[space].state["m.space.child"][room_id],
                    {"via": [self.domain]},
                )
            )
            return True
        except MatrixRequestError as e:
            log.warning("Could not add %s to space %s: %s", room_id, space, e.errcode)
            return False

    async def channels_of(
        self, microdao_ref: str
    ) -> tuple[microdaos.Microdao, list[channels.ChannelInfo]]:
        dao = await self.microdao(microdao_ref)
        async with self.pool.acquire() as conn:
            return dao, await channels.list_of_microdao(conn, dao.id)

    async def _channel(self, ref: str) -> channels.Channel:
        async with self.pool.acquire() as conn:
            found = await channels.by_ref(conn, ref)
        if found is None:
            raise AdminError(404, f"unknown channel {ref}", "channel")
        return found

    # invites

    def agent_of(self, who: str) -> AgentSpec | None:
        """The configured agent `who` names (platform id or Matrix id), else None."""
        current = self.directory.current
        if who.startswith("agent:"):
            found = next((a for a in current.roster.agents if a.external_id == who), None)
            if found is None:
                raise AdminError(404, f"unknown agent {who}", "user_id")
            return found
        return current.agents.get(who)

    async def invite(self, channel_ref: str, who: str) -> Invited:
        channel = await self._channel(channel_ref)
        agent = self.agent_of(who)
        if agent is not None:
            return await self._invite_agent(channel, agent)
        async with self.pool.acquire() as conn:
            if await agents.by_matrix_ids(conn, [who]):
                raise AdminError(404, f"{who} is an agent the config no longer has", "user_id")
        membership = await self._membership(channel.room_id, who)
        if membership in ("join", "invite"):
            return Invited(channel, who, None, membership, False)
        if who.endswith(f":{self.domain}") and not await self._exists(who):
            # The homeserver would invite a user it does not have.
            raise AdminError(404, f"unknown user {who}", "user_id")
        await self._bot_invites(channel.room_id, who)
        log.info("Invited %s into %s", who, channel.room_id)
        return Invited(channel, who, None, "invite", True)

    async def _invite_agent(self, channel: channels.Channel, agent: AgentSpec) -> Invited:
        async with self.pool.acquire() as conn:
            row = await agents.by_external_id(conn, agent.external_id)
            present = row is not None and await members.agent_present(conn, channel.id, row.id)
        if present:
            return Invited(channel, agent.matrix_id, agent, "join", False)
        membership = await self._membership(channel.room_id, agent.matrix_id)
        if membership not in ("join", "invite"):
            await self._bot_invites(channel.room_id, agent.matrix_id)
        # The invite is the bot's, so the puppet honours it (invites.py) whenever the
        # homeserver's push of it arrives; joining now lets the call answer when done.
        puppet = self.puppets.intent(agent.matrix_id)
        try:
            await self._matrix(puppet.join_room(RoomID(channel.room_id)))
            join = await self._matrix(self._member_event(puppet, channel.room_id, agent.matrix_id))
        except MatrixRequestError as e:
            raise AdminError(409, f"the agent could not join ({e.errcode})", "user_id") from None
        if join is not None:
            await self.ingestor.handle_transaction(f"admin-join-{join['event_id']}", [join])
        log.info("%s joined %s on the admin API's invite", agent.external_id, channel.room_id)
        return Invited(channel, agent.matrix_id, agent, "join", True)

    async def _member_event(self, intent: Any, room_id: str, user_id: str) -> Any:
        """The user's m.room.member event (whole, for the ingest), or None."""
        for event in await room_state(intent, room_id):
            if event.get("type") == "m.room.member" and event.get("state_key") == user_id:
                return {**event, "room_id": event.get("room_id") or room_id}
        return None

    async def _membership(self, room_id: str, user_id: str) -> str | None:
        """The user's membership as the bot sees it; 409 when the bot cannot see the room."""
        try:
            content = await self._matrix(
                self.bot.intent.api.request(
                    Method.GET, Path.v3.rooms[room_id].state["m.room.member"][user_id]
                )
            )
        except MatrixRequestError as e:
            if e.errcode == "M_NOT_FOUND":
                return None
            raise AdminError(
                409, f"the bot is not in this channel's room ({e.errcode})", "channel"
            ) from None
        membership = content.get("membership") if isinstance(content, dict) else None
        return membership if isinstance(membership, str) else None

    async def _exists(self, user_id: str) -> bool:
        """Whether the homeserver has this (local) user: its profile answers."""
        try:
            await self._matrix(self.bot.intent.api.request(Method.GET, Path.v3.profile[user_id]))
        except MatrixRequestError as e:
            if e.http_status == 404:
                return False
            raise
        return True

    async def _bot_invites(self, room_id: str, user_id: str) -> None:
        try:
            await self._matrix(self.bot.intent.invite_user(RoomID(room_id), UserID(user_id)))
        except MatrixRequestError as e:
            if e.http_status == 404:
                raise AdminError(404, f"unknown user {user_id}", "user_id") from None
            raise AdminError(
                409, f"the homeserver refused the invite ({e.errcode}: {e.message})", "user_id"
            ) from None

    # people

    async def link_user(self, matrix_id: str, external_id: str) -> tuple[users.User, bool]:
        """Under the ingest lock: a transaction writing the person's first message would
        otherwise make a row of its own beside the one made here."""
        async with self.pool.acquire() as conn, conn.transaction():
            await lock_ingest(conn)
            try:
                user, created = await users.link(conn, matrix_id, external_id)
            except users.ExternalIdTaken:
                raise AdminError(
                    409, f"{external_id} belongs to another user", "external_id"
                ) from None
        log.info("Linked %s to %s", matrix_id, external_id)
        return user, created

    # listings

    async def messages(self, channel_ref: str, limit: int, cursor: str | None) -> MessagePage:
        before = None
        if cursor is not None:
            try:
                before = decode_cursor(cursor)
            except ValueError:
                raise AdminError(400, "cursor is not one this API gave out", "cursor") from None
        channel = await self._channel(channel_ref)
        async with self.pool.acquire() as conn:
            rows = await messages.page(conn, channel.id, limit + 1, before)
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if more else None
        next_cursor = None
        if last is not None and last.created_at is not None:  # the bridge always sets it
            next_cursor = encode_cursor(last.created_at, last.id)
        return MessagePage(channel, rows, next_cursor)

    async def agents(self) -> list[AgentWithSessions]:
        async with self.pool.acquire() as conn:
            rows = await agents.listing(conn)
            open_sessions = await sessions.open_sessions(conn)
        by_agent: dict[UUID, list[sessions.OpenSession]] = {}
        for s in open_sessions:
            by_agent.setdefault(s.agent_id, []).append(s)
        configured = {a.external_id for a in self.directory.current.roster.agents}
        configured.add(SYSTEM_AGENT_ID)  # the bot is always in force
        return [
            AgentWithSessions(a, a.external_id in configured, by_agent.get(a.id, [])) for a in rows
        ]

    # the homeserver

    @staticmethod
    async def _matrix(call: Any) -> Any:
        """Await a homeserver call; unreachable becomes HomeserverUnavailable (503)."""
        try:
            return await call
        except UNREACHABLE as e:
            raise HomeserverUnavailable(str(e) or type(e).__name__) from e
