"""users: one row per person seen in a channel, found by Matrix id."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from asyncpg import Connection, UniqueViolationError


def find_sql(param: int) -> str:
    """Each Matrix user's person row (matrix_id, id, external_id), the ids in `$param`:
    a platform-linked row (external_id no longer matrix:...) wins over a bridge-made one."""
    return f"""
SELECT DISTINCT ON (matrix_id) matrix_id, id, external_id
FROM users WHERE matrix_id = ANY(${param}::text[])
ORDER BY matrix_id, (external_id LIKE 'matrix:%'), created_at
"""


_FIND = find_sql(1)
_INSERT = """
INSERT INTO users (external_id, matrix_id, handle)
SELECT 'matrix:' || m, m, '@' || split_part(substr(m, 2), ':', 1) FROM unnest($1::text[]) AS m
ON CONFLICT (external_id) DO NOTHING
"""


def handle_of(matrix_id: str) -> str:
    return "@" + matrix_id[1:].split(":", 1)[0]


async def ensure_users(conn: Connection, matrix_ids: Collection[str]) -> dict[str, UUID]:
    """Row ids for these Matrix users, creating rows for the ones never seen."""
    wanted = list(dict.fromkeys(matrix_ids))
    if not wanted:
        return {}
    found = {r["matrix_id"]: r["id"] for r in await conn.fetch(_FIND, wanted)}
    missing = [m for m in wanted if m not in found]
    if missing:
        found.update({m: row_id for m, row_id, _ in await create(conn, missing)})
    return found


async def create(conn: Connection, matrix_ids: list[str]) -> list[tuple[str, UUID, str]]:
    """Rows for people never seen: (Matrix id, row id, platform id) of each."""
    await conn.execute(_INSERT, matrix_ids)
    rows = await conn.fetch(_FIND, matrix_ids)
    return [(r["matrix_id"], r["id"], r["external_id"]) for r in rows]


@dataclass(frozen=True, slots=True)
class User:
    id: UUID
    external_id: str
    matrix_id: str | None
    handle: str | None
    created_at: datetime | None


class ExternalIdTaken(Exception):
    """Another users row holds the platform id."""


async def link(conn: Connection, matrix_id: str, external_id: str) -> tuple[User, bool]:
    """Give the Matrix user's row this platform id (`users.external_id`), creating the
    row when the user was never seen. Returns (the row, whether it was created). Runs in
    the caller's transaction; raises ExternalIdTaken when another row has the id."""
    found = await conn.fetch(_FIND, [matrix_id])
    mine: UUID | None = found[0]["id"] if found else None
    holder = await conn.fetchval("SELECT id FROM users WHERE external_id = $1", external_id)
    if holder is not None and holder != mine:
        raise ExternalIdTaken(external_id)
    try:
        if mine is None:
            row = await conn.fetchrow(
                "INSERT INTO users (external_id, matrix_id, handle) VALUES ($1, $2, $3) "
                "RETURNING id, external_id, matrix_id, handle, created_at",
                external_id,
                matrix_id,
                handle_of(matrix_id),
            )
            return User(*row), True
        row = await conn.fetchrow(
            "UPDATE users SET external_id = $2 WHERE id = $1 "
            "RETURNING id, external_id, matrix_id, handle, created_at",
            mine,
            external_id,
        )
    except UniqueViolationError:  # taken between the check and the write
        raise ExternalIdTaken(external_id) from None
    return User(*row), False
