"""microdaos and microdao_members."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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


async def upsert(conn: Connection, external_id: str, name: str, owner_user_id: UUID) -> UUID:
    """A microDAO as the config declares it; its owner holds the owner role, and an
    owner the config replaced becomes a member."""
    previous = await conn.fetchval(
        "SELECT owner_user_id FROM microdaos WHERE external_id = $1", external_id
    )
    microdao_id = await conn.fetchval(
        "INSERT INTO microdaos (external_id, name, owner_user_id) VALUES ($1, $2, $3) "
        "ON CONFLICT (external_id) DO UPDATE SET name = EXCLUDED.name, "
        "owner_user_id = EXCLUDED.owner_user_id RETURNING id",
        external_id,
        name,
        owner_user_id,
    )
    roles = {owner_user_id: "owner"}
    if previous is not None and previous != owner_user_id:
        roles[previous] = "member"
    await set_roles(conn, microdao_id, roles)
    return microdao_id


async def set_roles(conn: Connection, microdao_id: UUID, roles: dict[UUID, str]) -> None:
    if roles:
        await conn.execute(
            "INSERT INTO microdao_members (microdao_id, user_id, role) "
            "SELECT $1, u, r FROM unnest($2::uuid[], $3::text[]) AS x(u, r) "
            "ON CONFLICT (microdao_id, user_id) DO UPDATE SET role = EXCLUDED.role",
            microdao_id,
            list(roles),
            list(roles.values()),
        )


async def role_of(conn: Connection, microdao_external_id: str, matrix_id: str) -> str | None:
    """The role a Matrix user holds in a microDAO, or None when not a member."""
    return await conn.fetchval(
        "SELECT m.role FROM microdao_members m JOIN microdaos d ON d.id = m.microdao_id "
        "JOIN users u ON u.id = m.user_id WHERE d.external_id = $1 AND u.matrix_id = $2 "
        "ORDER BY (m.role = 'owner') DESC, (m.role = 'admin') DESC LIMIT 1",
        microdao_external_id,
        matrix_id,
    )


@dataclass(frozen=True, slots=True)
class Microdao:
    id: UUID
    external_id: str
    name: str
    owner_user_id: UUID
    owner_matrix_id: str | None
    owner_external_id: str
    created_at: datetime | None
    space_room_id: str | None


_MICRODAO = """
SELECT d.id, d.external_id, d.name, d.owner_user_id, u.matrix_id, u.external_id AS owner_ext,
       d.created_at, (SELECT s.room_id FROM bridge_spaces s WHERE s.microdao_id = d.id LIMIT 1)
FROM microdaos d JOIN users u ON u.id = d.owner_user_id
"""


async def by_ref(conn: Connection, ref: str) -> Microdao | None:
    """A microDAO by platform id (`microdao:7`) or row uuid."""
    try:
        row = await conn.fetchrow(_MICRODAO + "WHERE d.id = $1", UUID(ref))
    except ValueError:
        row = await conn.fetchrow(_MICRODAO + "WHERE d.external_id = $1", ref)
    return Microdao(*row) if row else None


async def create(conn: Connection, external_id: str, name: str, owner_user_id: UUID) -> UUID:
    """A new microDAO with its owner as member `owner`; raises UniqueViolationError when
    the platform id exists."""
    microdao_id = await conn.fetchval(
        "INSERT INTO microdaos (external_id, name, owner_user_id) VALUES ($1, $2, $3) RETURNING id",
        external_id,
        name,
        owner_user_id,
    )
    await set_roles(conn, microdao_id, {owner_user_id: "owner"})
    return microdao_id
