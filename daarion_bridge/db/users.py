"""users: one row per person seen in a channel, found by Matrix id."""

from __future__ import annotations

from collections.abc import Collection
from uuid import UUID

from asyncpg import Connection

# A platform-linked row (external_id no longer matrix:...) wins over a bridge-made one.
_FIND = """
SELECT DISTINCT ON (matrix_id) matrix_id, id FROM users WHERE matrix_id = ANY($1::text[])
ORDER BY matrix_id, (external_id LIKE 'matrix:%'), created_at
"""
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
        await conn.execute(_INSERT, missing)
        found.update({r["matrix_id"]: r["id"] for r in await conn.fetch(_FIND, missing)})
    return found
