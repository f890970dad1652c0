"""users: one row per person seen in a channel, found by Matrix id."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from asyncpg import Connection, UniqueViolationError

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


# Who each Matrix user of a transaction is: the agents among them, and each one's person
# row (the one _FIND picks), in one round trip.
_RESOLVE = f"""
SELECT matrix_id, id, true AS agent FROM agents WHERE matrix_id = ANY($1::text[])
UNION ALL
SELECT matrix_id, id, false FROM ({_FIND}) AS people
"""


async def resolve(
    conn: Connection, actors: Collection[str], mentioned: Collection[str]
) -> tuple[dict[str, UUID], dict[str, UUID]]:
    """(agents, people): the agent rows of those of these Matrix users that are agents,
    and the user rows of the actors that are not, made for people never seen before.
    Mentions only matter when they name an agent, so they never make a row."""
    wanted = list(dict.fromkeys([*actors, *mentioned]))
    if not wanted:
        return {}, {}
    agents: dict[str, UUID] = {}
    found: dict[str, UUID] = {}
    for matrix_id, row_id, agent in await conn.fetch(_RESOLVE, wanted):
        (agents if agent else found)[matrix_id] = row_id
    people = {m: found[m] for m in actors if m not in agents and m in found}
    missing = [m for m in dict.fromkeys(actors) if m not in agents and m not in found]
    if missing:
        people.update(await _create(conn, missing))
    return agents, people


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
        found.update(await _create(conn, missing))
    return found


async def _create(conn: Connection, matrix_ids: list[str]) -> dict[str, UUID]:
    await conn.execute(_INSERT, matrix_ids)
    return {r["matrix_id"]: r["id"] for r in await conn.fetch(_FIND, matrix_ids)}


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
