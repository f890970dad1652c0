"""microdaos and microdao_members."""

from __future__ import annotations

from uuid import UUID

from asyncpg import Connection


def default_name(external_id: str) -> str:
    return external_id.split(":", 1)[-1]


async def find(conn: Connection, external_id: str) -> UUID | None:
    return await conn.fetchval("SELECT id FROM microdaos WHERE external_id = $1", external_id)


async def ensure(conn: Connection, external_id: str, owner_user_id: UUID) -> UUID:
    """The microDAO's row id; a missing one is created with this owner."""
    existing = await find(conn, external_id)
    if existing is not None:
        return existing
    microdao_id = await conn.fetchval(
        "INSERT INTO microdaos (external_id, name, owner_user_id) VALUES ($1, $2, $3) "
        "ON CONFLICT (external_id) DO UPDATE SET external_id = EXCLUDED.external_id RETURNING id",
        external_id,
        default_name(external_id),
        owner_user_id,
    )
    await conn.execute(
        "INSERT INTO microdao_members (microdao_id, user_id, role) VALUES ($1, $2, 'owner') "
        "ON CONFLICT (microdao_id, user_id) DO NOTHING",
        microdao_id,
        owner_user_id,
    )
    return microdao_id
