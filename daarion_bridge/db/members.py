"""channel_members for people: joins, leaves and roles."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from uuid import UUID

from asyncpg import Connection

# A rejoin clears left_at and starts a new joined_at; a repeated join (profile change)
# keeps the original joined_at.
_JOIN = """
INSERT INTO channel_members (channel_id, member_user_id, role, joined_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (channel_id, member_user_id) DO UPDATE SET
    role = EXCLUDED.role,
    joined_at = CASE WHEN channel_members.left_at IS NULL THEN channel_members.joined_at
                     ELSE EXCLUDED.joined_at END,
    left_at = NULL
"""


async def join(conn: Connection, channel_id: UUID, user_id: UUID, role: str, at: datetime) -> None:
    await conn.execute(_JOIN, channel_id, user_id, role, at)


async def leave(conn: Connection, channel_id: UUID, user_id: UUID, at: datetime) -> None:
    await conn.execute(
        "UPDATE channel_members SET left_at = $3 "
        "WHERE channel_id = $1 AND member_user_id = $2 AND left_at IS NULL",
        channel_id,
        user_id,
        at,
    )


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
