"""A room the bot just joined becomes a channel, in the transaction that brought the
invite: its microDAO, its row, its power levels and the members it has now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from asyncpg import Connection

from ..db import agents, channels, members, microdaos, room_names, rooms, sessions, users
from ..db.outbox import AGENT, HUMAN
from ..translate import bus
from ..translate.rooms import RoomSnapshot, role_for
from .announce import Announcer


@dataclass(frozen=True, slots=True)
class ChannelSetup:
    """A room the bot just joined, to become a channel in this transaction."""

    snapshot: RoomSnapshot
    microdao_external_id: str
    inviter: str
    # Owns the microDAO if this channel is its first (only the undeclared default can
    # be): the bridge's bot, never the inviter, who would otherwise gain power 100 in
    # every room the admin API creates for it.
    new_microdao_owner: str
    invite_event_id: str = ""
    # The channel's old room, when this room replaced it (an upgrade): the channel moves
    # here instead of a new one being made.
    replaces_room: str | None = None


async def create_channel(
    conn: Connection, setup: ChannelSetup, announcer: Announcer
) -> tuple[channels.Channel, bool]:
    """The room's channel, and whether it is new (not moved here by an upgrade, nor the
    bot's return to a channel)."""
    snap = setup.snapshot
    agent_ids = await agents.by_matrix_ids(conn, [setup.inviter, *snap.joined])
    people = await users.ensure_users(
        conn, [m for m in (setup.inviter, *snap.joined) if m not in agent_ids]
    )
    microdao_id = await microdaos.find(conn, setup.microdao_external_id)
    if microdao_id is None:
        # The schema wants a person as a microDAO's owner: the bot keeps a users row
        # for that alone (db/system_agent.py).
        owner = setup.new_microdao_owner
        owner_id = (await users.ensure_users(conn, [owner]))[owner]
        microdao_id = await microdaos.ensure(conn, setup.microdao_external_id, owner_id)
    if setup.replaces_room is not None:
        await _move_from(conn, setup, announcer)
    channel, created = await channels.create(
        conn,
        room_id=snap.room_id,
        name=snap.name,
        slug=snap.slug,
        visibility=snap.visibility,
        microdao_id=microdao_id,
        created_by_user_id=people.get(setup.inviter),
        created_by_agent_id=agent_ids.get(setup.inviter),
    )
    await rooms.put(conn, snap.room_id, snap.room_version, snap.creators, snap.power_levels)
    await room_names.put(conn, snap.room_id, snap.bot_mxid, snap.from_members)
    await room_names.put_room_display_names(conn, snap.room_id, snap.display_names)
    # The state snapshot has no per-member join time; the moment of bridging stands in.
    now = await conn.fetchval("SELECT now()")
    cause = setup.invite_event_id or snap.room_id
    if created:
        fields = {"name": snap.name, "slug": channel.slug, "visibility": snap.visibility}
        announcer.channel(bus.CHANNEL_CREATED, channel, fields, now, cause)
    # People in one pipelined round trip however many (a big room's set-up must not cost
    # one per member); agents, a few, one by one.
    humans = [m for m in snap.joined if m not in agent_ids]
    roles = [role_for(m, snap.power_levels, snap.creators) for m in humans]
    changes = [
        members.PersonChange(channel.id, people[m], role, now)
        for m, role in zip(humans, roles, strict=True)
    ]
    for mxid, role, joined in zip(
        humans, roles, await members.change_people(conn, changes), strict=True
    ):
        if joined:
            announcer.member(bus.MEMBER_JOINED, channel, (HUMAN, people[mxid]), role, now, cause)
    for mxid in snap.joined:
        if mxid in agent_ids:
            agent_id = agent_ids[mxid]
            joined = await members.join_agent(conn, channel.id, agent_id, now)
            await sessions.open_on_join(conn, agent_id, channel.id, now)
            if joined:
                member = (AGENT, agent_id)
                announcer.member(bus.MEMBER_JOINED, channel, member, members.AGENT_ROLE, now, cause)
    if not created:
        await _close_the_absent(conn, channel, snap, people, agent_ids, announcer, now, cause)
    return channel, created


async def _move_from(conn: Connection, setup: ChannelSetup, announcer: Announcer) -> None:
    """An upgraded room's channel moves to the new room, unless the new room is a
    channel already (then the old one stays where it was)."""
    assert setup.replaces_room is not None
    old, new = setup.replaces_room, setup.snapshot.room_id
    found = await channels.by_rooms(conn, [old, new])
    if old not in found or new in found:
        return
    await channels.move_to_room(conn, found[old].id, new)
    moved = (await channels.by_rooms(conn, [new]))[new]
    fields = {"matrix_room_id": new, "previous_matrix_room_id": old}
    now = await conn.fetchval("SELECT now()")
    announcer.channel(bus.CHANNEL_UPDATED, moved, fields, now, setup.invite_event_id or new)


async def _close_the_absent(
    conn: Connection,
    channel: channels.Channel,
    snap: RoomSnapshot,
    people: dict[str, UUID],
    agent_ids: dict[str, UUID],
    announcer: Announcer,
    now: datetime,
    cause: str,
) -> None:
    """The bot joins a channel again: who left while it was away is not in the room's
    state any more, and leaves the channel too (else a ghost member, who would turn a
    person's message to the channel's agent into a `direct` call)."""
    present_people = [people[m] for m in snap.joined if m not in agent_ids]
    present_agents = [agent_ids[m] for m in snap.joined if m in agent_ids]
    gone = await members.leave_all_but(conn, channel.id, present_people, present_agents, now)
    for user_id, agent_id in gone:
        if agent_id is not None:
            await sessions.close(conn, agent_id, channel.id)
            member = (AGENT, agent_id)
        else:
            assert user_id is not None  # a member row is a person's or an agent's
            member = (HUMAN, user_id)
        announcer.member(bus.MEMBER_LEFT, channel, member, None, now, cause)
