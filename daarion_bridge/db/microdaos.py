"""microdaos and microdao_members, and bridge_config_roles (the config's memberships)."""

from __future__ import annotations

from collections.abc import Sequence
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


# The config's microDAOs in one statement; `previous` reads the rows as they were before
# it (a data-modifying CTE's changes are not visible to the statement's other parts). An
# unchanged row is not rewritten (a restart with the same config writes nothing), so
# its id comes from `previous`.
_UPSERT_MANY = """
WITH wanted AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[]) AS w(external_id, name, owner)
), previous AS (
    SELECT external_id, id, owner_user_id FROM microdaos WHERE external_id = ANY($1::text[])
), written AS (
    INSERT INTO microdaos (external_id, name, owner_user_id)
    SELECT external_id, name, owner FROM wanted
    ON CONFLICT (external_id) DO UPDATE SET
        name = EXCLUDED.name, owner_user_id = EXCLUDED.owner_user_id
    WHERE (microdaos.name, microdaos.owner_user_id)
          IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.owner_user_id)
    RETURNING id, external_id
)
SELECT w.external_id, COALESCE(n.id, p.id) AS id, p.owner_user_id AS previous_owner
FROM wanted w LEFT JOIN written n USING (external_id) LEFT JOIN previous p USING (external_id)
"""


@dataclass(frozen=True, slots=True)
class Declared:
    """A microDAO as the config declares it: owner and members as users rows."""

    external_id: str
    name: str
    owner_user_id: UUID
    members: dict[UUID, str]  # user -> role; the owner's own entry is ignored


async def upsert_many(
    conn: Connection, declared: Sequence[Declared]
) -> tuple[dict[str, UUID], int]:
    """The microDAOs as declared: each owner holds the owner role and each listed member
    the listed role. What the config gave before and lists no more is taken back: those
    rows are deleted (a lower role is the listed one), as long as they still hold the role
    the config gave (bridge_config_roles) and are not the owner of record. Rows others
    wrote stay, except that an owner of record whom the config replaces becomes a member.
    Returns row ids by platform id, and how many memberships were taken back."""
    rows = (
        await conn.fetch(
            _UPSERT_MANY,
            [d.external_id for d in declared],
            [d.name for d in declared],
            [d.owner_user_id for d in declared],
        )
        if declared
        else []
    )
    found = {r["external_id"]: (r["id"], r["previous_owner"]) for r in rows}
    given = {
        (r["microdao_id"], r["user_id"])
        for r in await conn.fetch("SELECT microdao_id, user_id FROM bridge_config_roles")
    }
    listed: list[tuple[UUID, UUID, str]] = []
    handed_over: list[tuple[UUID, UUID, str]] = []
    for d in declared:
        microdao_id, previous = found[d.external_id]
        wanted = dict(d.members)
        wanted[d.owner_user_id] = "owner"
        if previous is not None and previous not in wanted and (microdao_id, previous) not in given:
            handed_over.append((microdao_id, previous, "member"))
        listed += [(microdao_id, user_id, role) for user_id, role in wanted.items()]
    await _set_roles(conn, listed + handed_over)
    revoked = await _revoke(conn, listed)
    await _record(conn, listed)
    return {external_id: row_id for external_id, (row_id, _) in found.items()}, revoked


# The config's earlier rows it no longer lists, still as it left them: anything else in
# microdao_members is someone else's to change.
_REVOKE = """
WITH listed AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[]) AS l(microdao_id, user_id)
)
DELETE FROM microdao_members m
USING bridge_config_roles c, microdaos d
WHERE m.microdao_id = c.microdao_id AND m.user_id = c.user_id AND m.role = c.role
  AND d.id = m.microdao_id AND d.owner_user_id <> m.user_id
  AND NOT EXISTS (
      SELECT 1 FROM listed l WHERE l.microdao_id = c.microdao_id AND l.user_id = c.user_id
  )
"""


async def _revoke(conn: Connection, listed: Sequence[tuple[UUID, UUID, str]]) -> int:
    status = await conn.execute(_REVOKE, [m for m, _, _ in listed], [u for _, u, _ in listed])
    return int(status.split()[-1])


async def _record(conn: Connection, listed: Sequence[tuple[UUID, UUID, str]]) -> None:
    """bridge_config_roles becomes exactly what the config lists (unchanged rows stay)."""
    microdao_ids = [m for m, _, _ in listed]
    user_ids = [u for _, u, _ in listed]
    roles = [r for _, _, r in listed]
    await conn.execute(
        "DELETE FROM bridge_config_roles c WHERE NOT EXISTS (SELECT 1 FROM "
        "unnest($1::uuid[], $2::uuid[]) AS l(microdao_id, user_id) "
        "WHERE l.microdao_id = c.microdao_id AND l.user_id = c.user_id)",
        microdao_ids,
        user_ids,
    )
    await conn.execute(
        "INSERT INTO bridge_config_roles (microdao_id, user_id, role) "
        "SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[]) "
        "ON CONFLICT (microdao_id, user_id) DO UPDATE SET role = EXCLUDED.role "
        "WHERE bridge_config_roles.role IS DISTINCT FROM EXCLUDED.role",
        microdao_ids,
        user_ids,
        roles,
    )


async def set_roles(conn: Connection, microdao_id: UUID, roles: dict[UUID, str]) -> None:
    await _set_roles(conn, [(microdao_id, user_id, role) for user_id, role in roles.items()])


async def _set_roles(conn: Connection, roles: Sequence[tuple[UUID, UUID, str]]) -> None:
    """(microDAO, user, role) rows; a (microDAO, user) pair appears once at most."""
    if roles:
        await conn.execute(
            "INSERT INTO microdao_members (microdao_id, user_id, role) "
            "SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[]) "
            "ON CONFLICT (microdao_id, user_id) DO UPDATE SET role = EXCLUDED.role "
            "WHERE microdao_members.role IS DISTINCT FROM EXCLUDED.role",
            [m for m, _, _ in roles],
            [u for _, u, _ in roles],
            [r for _, _, r in roles],
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
