"""channel_members: people and agents joining and leaving, and people's roles."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from uuid import UUID

from asyncpg import Connection

# A rejoin clears left_at and starts a new joined_at; a repeated join (profile change)
# keeps the original joined_at.
_JOIN = """
INSERT INTO channel_members (channel_id, {member}, role, joined_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (channel_id, {member}) DO UPDATE SET
    role = EXCLUDED.role,
    joined_at = CASE WHEN channel_members.left_at IS NULL THEN channel_members.joined_at
                     ELSE EXCLUDED.joined_at END,
    left_at = NULL
"""
_LEAVE = """
UPDATE channel_members SET left_at = $3
WHERE channel_id = $1 AND {member} = $2 AND left_at IS NULL
"""
AGENT_ROLE = "agent"
_SQL = {
    (stmt, agent): sql.format(member="member_agent_id" if agent else "member_user_id")
    for stmt, sql in (("join", _JOIN), ("leave", _LEAVE))
    for agent in (False, True)
}


async def join(
    conn: Connection, channel_id: UUID, member_id: UUID, role: str, at: datetime
) -> None:
    """A person joins (or changes role); for agents see join_agent."""
    await conn.execute(_SQL["join", False], channel_id, member_id, role, at)


async def join_agent(conn: Connection, channel_id: UUID, agent_id: UUID, at: datetime) -> None:
    await conn.execute(_SQL["join", True], channel_id, agent_id, AGENT_ROLE, at)


async def leave(
    conn: Connection, channel_id: UUID, member_id: UUID, at: datetime, *, agent: bool = False
) -> None:
    await conn.execute(_SQL["leave", agent], channel_id, member_id, at)


async def leave_all(conn: Connection, agent_id: UUID) -> None:
    await conn.execute(
        "UPDATE channel_members SET left_at = now() WHERE member_agent_id = $1 AND left_at IS NULL",
        agent_id,
    )


async def rooms_of_agent(conn: Connection, agent_id: UUID) -> list[str]:
    """Rooms the agent is in now, by the index."""
    rows = await conn.fetch(
        "SELECT c.matrix_room_id FROM channel_members m JOIN channels c ON c.id = m.channel_id "
        "WHERE m.member_agent_id = $1 AND m.left_at IS NULL ORDER BY c.matrix_room_id",
        agent_id,
    )
    return [r["matrix_room_id"] for r in rows]


async def agents_in_room(conn: Connection, room_id: str) -> list[str]:
    """Matrix ids of the agents in the room now, by the index."""
    rows = await conn.fetch(
        "SELECT a.matrix_id FROM channel_members m JOIN channels c ON c.id = m.channel_id "
        "JOIN agents a ON a.id = m.member_agent_id "
        "WHERE c.matrix_room_id = $1 AND m.left_at IS NULL AND a.matrix_id IS NOT NULL "
        "ORDER BY a.matrix_id",
        room_id,
    )
    return [r["matrix_id"] for r in rows]


async def current_people(conn: Connection, channel_id: UUID) -> dict[str, tuple[UUID, str]]:
    """Matrix id -> (users row id, role) of the people in the channel now."""
    rows = await conn.fetch(
        "SELECT u.matrix_id, u.id, m.role FROM channel_members m "
        "JOIN users u ON u.id = m.member_user_id "
        "WHERE m.channel_id = $1 AND m.left_at IS NULL AND u.matrix_id IS NOT NULL",
        channel_id,
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
