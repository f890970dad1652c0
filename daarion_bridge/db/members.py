"""channel_members: people and agents joining and leaving, and people's roles."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from asyncpg import Connection

from ..ids import SYSTEM_AGENT_ID
from . import room_state

# A rejoin clears left_at and starts a new joined_at; a repeated join (profile change)
# keeps the original joined_at.
_REJOIN = """
ON CONFLICT (channel_id, {member}) DO UPDATE SET
    role = EXCLUDED.role,
    joined_at = CASE WHEN channel_members.left_at IS NULL THEN channel_members.joined_at
                     ELSE EXCLUDED.joined_at END,
    left_at = NULL
"""
_JOIN_AGENT = f"""
INSERT INTO channel_members (channel_id, member_agent_id, role, joined_at)
VALUES ($1, $2, $3, $4)
{_REJOIN.format(member="member_agent_id")}
RETURNING joined_at = $4
"""
_LEAVE_AGENT = """
UPDATE channel_members SET left_at = $3
WHERE channel_id = $1 AND member_agent_id = $2 AND left_at IS NULL
RETURNING 1
"""
# People join ($3, the role, set) or leave ($3 NULL). A run of them goes in one pipelined
# round trip, in order; each execution returns one row: whether it was a join or rejoin,
# or a leave of someone present. With an event's mark ($8, $9), only an event newer than
# the member's last applied one changes the row (room_state.py).
_PERSON = f"""
WITH won AS ({room_state.NEWER.format(room=5, type=6, key=7, ts=8, id=9)}
), go AS (
    SELECT $9::text IS NULL OR EXISTS (SELECT 1 FROM won) AS newer
), joined AS (
    INSERT INTO channel_members (channel_id, member_user_id, role, joined_at)
    SELECT $1::uuid, $2::uuid, $3::text, $4::timestamptz
    WHERE $3 IS NOT NULL AND (SELECT newer FROM go)
    {_REJOIN.format(member="member_user_id")}
    RETURNING joined_at = $4 AS changed
), left_ AS (
    UPDATE channel_members SET left_at = $4
    WHERE $3 IS NULL AND channel_id = $1 AND member_user_id = $2 AND left_at IS NULL
      AND (SELECT newer FROM go)
    RETURNING true AS changed
)
SELECT COALESCE((SELECT changed FROM joined), (SELECT changed FROM left_), false)
"""
AGENT_ROLE = "agent"


@dataclass(frozen=True, slots=True)
class PersonChange:
    channel_id: UUID
    user_id: UUID
    role: str | None  # None: a leave
    at: datetime
    # The member event's room, member and mark: applied only when newer than the last
    # one applied. None: the room's state now (a channel's set-up), applied as it is.
    event: tuple[str, str, room_state.Mark] | None = None


async def change_people(conn: Connection, changes: Sequence[PersonChange]) -> list[bool]:
    """People join (or change role) and leave, in order. For each: True for a join or
    rejoin, or a leave of someone present; False for a repeated join (a profile change)
    or a leave of someone absent."""
    if not changes:
        return []
    args = [(c.channel_id, c.user_id, c.role, c.at, *_event_args(c)) for c in changes]
    return [bool(r[0]) for r in await conn.fetchmany(_PERSON, args)]


def _event_args(change: PersonChange) -> tuple[str | None, str, str | None, int | None, str | None]:
    if change.event is None:
        return None, room_state.MEMBER, None, None, None
    room_id, matrix_id, mark = change.event
    return room_id, room_state.MEMBER, matrix_id, mark.ts_ms, mark.event_id


async def join(
    conn: Connection, channel_id: UUID, member_id: UUID, role: str, at: datetime
) -> bool:
    """A person joins (or changes role); see change_people."""
    return (await change_people(conn, [PersonChange(channel_id, member_id, role, at)]))[0]


async def join_agent(conn: Connection, channel_id: UUID, agent_id: UUID, at: datetime) -> bool:
    return bool(await conn.fetchval(_JOIN_AGENT, channel_id, agent_id, AGENT_ROLE, at))


async def leave(
    conn: Connection, channel_id: UUID, member_id: UUID, at: datetime, *, agent: bool = False
) -> bool:
    """True when the member was in the channel."""
    if agent:
        return bool(await conn.fetchval(_LEAVE_AGENT, channel_id, member_id, at))
    return (await change_people(conn, [PersonChange(channel_id, member_id, None, at)]))[0]


# Members of the channel neither of the lists names ($2 people, $3 agents) leave; for an
# agent's row the people's test is NULL, hence the COALESCE.
_LEAVE_ALL_BUT = """
UPDATE channel_members SET left_at = $4
WHERE channel_id = $1 AND left_at IS NULL
  AND NOT COALESCE(member_user_id = ANY($2::uuid[]), member_agent_id = ANY($3::uuid[]), false)
RETURNING member_user_id, member_agent_id
"""


async def leave_all_but(
    conn: Connection,
    channel_id: UUID,
    people: Collection[UUID],
    agent_ids: Collection[UUID],
    at: datetime,
) -> list[tuple[UUID | None, UUID | None]]:
    """Everyone in the channel but these people and agents leaves (the room's members
    now, as its state says): returns the (person, agent) of each member who left."""
    rows = await conn.fetch(_LEAVE_ALL_BUT, channel_id, list(people), list(agent_ids), at)
    return [(r["member_user_id"], r["member_agent_id"]) for r in rows]


async def leave_all(conn: Connection, agent_id: UUID) -> None:
    await conn.execute(
        "UPDATE channel_members SET left_at = now() WHERE member_agent_id = $1 AND left_at IS NULL",
        agent_id,
    )


async def rooms_of_agents(conn: Connection, agent_ids: Collection[UUID]) -> dict[UUID, list[str]]:
    """Agent -> the rooms it is in now, by the index, for many agents in one statement."""
    rows = await conn.fetch(
        "SELECT m.member_agent_id, c.matrix_room_id FROM channel_members m "
        "JOIN channels c ON c.id = m.channel_id "
        "WHERE m.member_agent_id = ANY($1::uuid[]) AND m.left_at IS NULL "
        "ORDER BY c.matrix_room_id",
        list(agent_ids),
    )
    found: dict[UUID, list[str]] = {}
    for r in rows:
        found.setdefault(r["member_agent_id"], []).append(r["matrix_room_id"])
    return found


async def mark_agent_gone(conn: Connection, agent_mxid: str, room_ids: list[str]) -> None:
    """The homeserver says the agent is not in these rooms: the index agrees from now."""
    await conn.execute(
        "UPDATE channel_members m SET left_at = now() FROM channels c, agents a "
        "WHERE c.id = m.channel_id AND a.id = m.member_agent_id AND a.matrix_id = $1 "
        "AND c.matrix_room_id = ANY($2::text[]) AND m.left_at IS NULL",
        agent_mxid,
        room_ids,
    )


async def agents_in_room(conn: Connection, room_id: str) -> list[str]:
    """Matrix ids of the agents in the room now, by the index; the bot (the system
    agent) is not one of them."""
    rows = await conn.fetch(
        "SELECT a.matrix_id FROM channel_members m JOIN channels c ON c.id = m.channel_id "
        "JOIN agents a ON a.id = m.member_agent_id "
        "WHERE c.matrix_room_id = $1 AND m.left_at IS NULL AND a.matrix_id IS NOT NULL "
        f"AND a.external_id <> '{SYSTEM_AGENT_ID}' ORDER BY a.matrix_id",
        room_id,
    )
    return [r["matrix_id"] for r in rows]


# The people in a channel now, in the statement that stores its room's new power levels:
# the writer sets their roles from those levels next, one round trip sooner.
_PEOPLE_UNDER_NEW_POWER_LEVELS = """
WITH stored AS (UPDATE bridge_rooms SET power_levels = $3::jsonb WHERE room_id = $2)
SELECT u.matrix_id, u.id, m.role FROM channel_members m
JOIN users u ON u.id = m.member_user_id
WHERE m.channel_id = $1 AND m.left_at IS NULL AND u.matrix_id IS NOT NULL
"""


async def people_under_new_power_levels(
    conn: Connection, channel_id: UUID, room_id: str, power_levels: dict[str, Any]
) -> dict[str, tuple[UUID, str]]:
    """Store the room's power levels; Matrix id -> (users row id, role) of the people in
    its channel now, their roles still as the old levels made them."""
    rows = await conn.fetch(
        _PEOPLE_UNDER_NEW_POWER_LEVELS, channel_id, room_id, json.dumps(power_levels)
    )
    return {r["matrix_id"]: (r["id"], r["role"]) for r in rows}


async def set_roles(conn: Connection, channel_id: UUID, roles: Mapping[UUID, str]) -> None:
    if roles:
        await conn.execute(
            "UPDATE channel_members m SET role = r.role "
            "FROM unnest($2::uuid[], $3::text[]) AS r(user_id, role) "
            "WHERE m.channel_id = $1 AND m.member_user_id = r.user_id",
            channel_id,
            list(roles.keys()),
            list(roles.values()),
        )


@dataclass(slots=True)
class Company:
    """Who is in a channel now, as far as calling agents needs: its agents and, where
    there is exactly one, up to three of its people (the bot included). Filled by
    company_of from the rows of one statement."""

    agents: list[UUID]
    some_people: list[str]  # Matrix ids; all of them when fewer than three

    def direct_agent(self, people: Collection[str]) -> UUID | None:
        """The channel's one agent when nobody but these Matrix users (at most two) is
        there with it: three people read means someone else."""
        if len(self.agents) == 1 and len(self.some_people) < 3:
            if set(self.some_people) <= set(people):
                return self.agents[0]
        return None


# The channels' agents (the bot, the system agent, is no one to call), then the first
# three people of each channel with one agent.
_COMPANY = f"""
WITH present_agents AS (
    SELECT m.channel_id, m.member_agent_id FROM channel_members m
    JOIN agents a ON a.id = m.member_agent_id AND a.external_id <> '{SYSTEM_AGENT_ID}'
    WHERE m.channel_id = ANY($1::uuid[]) AND m.left_at IS NULL
), one_agent AS (
    SELECT channel_id FROM present_agents GROUP BY channel_id HAVING count(*) = 1
)
SELECT channel_id, member_agent_id, NULL AS matrix_id FROM present_agents
UNION ALL
SELECT a.channel_id, NULL, u.matrix_id
FROM one_agent a,
LATERAL (SELECT member_user_id FROM channel_members
         WHERE channel_id = a.channel_id AND member_user_id IS NOT NULL AND left_at IS NULL
         LIMIT 3) AS m
JOIN users u ON u.id = m.member_user_id
"""


async def company_of(conn: Connection, channel_ids: Collection[UUID]) -> dict[UUID, Company]:
    """Channel id -> its agents and some of its people now, in one round trip."""
    found = {channel_id: Company([], []) for channel_id in channel_ids}
    for channel_id, agent_id, matrix_id in await conn.fetch(_COMPANY, list(channel_ids)):
        company = found[channel_id]
        if agent_id is not None:
            company.agents.append(agent_id)
        else:
            company.some_people.append(matrix_id)
    return found


async def agent_present(conn: Connection, channel_id: UUID, agent_id: UUID) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM channel_members WHERE channel_id = $1 "
            "AND member_agent_id = $2 AND left_at IS NULL)",
            channel_id,
            agent_id,
        )
    )


async def present(conn: Connection, channel_id: UUID, matrix_id: str) -> bool:
    """Whether this Matrix user (a person, an agent or the bot) is in the channel now."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM channel_members m "
            "LEFT JOIN users u ON u.id = m.member_user_id "
            "LEFT JOIN agents a ON a.id = m.member_agent_id "
            "WHERE m.channel_id = $1 AND $2 IN (u.matrix_id, a.matrix_id) "
            "AND m.left_at IS NULL)",
            channel_id,
            matrix_id,
        )
    )
