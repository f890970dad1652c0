"""bridge_spaces: the Matrix space of each microDAO that has one."""

from __future__ import annotations

from uuid import UUID

from asyncpg import Connection, Pool


async def link(conn: Connection, space_room_id: str, microdao_id: UUID) -> None:
    """One space per microDAO: linking another space replaces the old link."""
    await conn.execute("DELETE FROM bridge_spaces WHERE microdao_id = $1", microdao_id)
    await conn.execute(
        "INSERT INTO bridge_spaces (room_id, microdao_id) VALUES ($1, $2) "
        "ON CONFLICT (room_id) DO UPDATE SET microdao_id = EXCLUDED.microdao_id",
        space_room_id,
        microdao_id,
    )


async def all_linked(conn: Connection | Pool) -> dict[str, str]:
    """Space room id -> microDAO external id."""
    rows = await conn.fetch(
        "SELECT s.room_id, d.external_id FROM bridge_spaces s "
        "JOIN microdaos d ON d.id = s.microdao_id ORDER BY d.external_id"
    )
    return {r["room_id"]: r["external_id"] for r in rows}


async def space_of(conn: Connection | Pool, microdao_id: UUID) -> str | None:
    """The space linked to the microDAO, if any."""
    return await conn.fetchval(
        "SELECT room_id FROM bridge_spaces WHERE microdao_id = $1 LIMIT 1", microdao_id
    )
