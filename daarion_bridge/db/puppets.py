"""bridge_puppets: the profile each agent's puppet was last given on the homeserver."""

from __future__ import annotations

from dataclasses import dataclass

from asyncpg import Connection, Pool


@dataclass(frozen=True, slots=True)
class PuppetProfile:
    displayname: str | None
    avatar_url: str | None


async def get(conn: Connection | Pool, matrix_id: str) -> PuppetProfile | None:
    row = await conn.fetchrow(
        "SELECT displayname, avatar_url FROM bridge_puppets WHERE matrix_id = $1", matrix_id
    )
    return PuppetProfile(row["displayname"], row["avatar_url"]) if row else None


async def get_many(conn: Connection | Pool, matrix_ids: list[str]) -> dict[str, PuppetProfile]:
    rows = await conn.fetch(
        "SELECT matrix_id, displayname, avatar_url FROM bridge_puppets "
        "WHERE matrix_id = ANY($1::text[])",
        matrix_ids,
    )
    return {r["matrix_id"]: PuppetProfile(r["displayname"], r["avatar_url"]) for r in rows}


async def put(conn: Connection | Pool, matrix_id: str, profile: PuppetProfile) -> None:
    await conn.execute(
        "INSERT INTO bridge_puppets (matrix_id, displayname, avatar_url) VALUES ($1, $2, $3) "
        "ON CONFLICT (matrix_id) DO UPDATE SET displayname = EXCLUDED.displayname, "
        "avatar_url = EXCLUDED.avatar_url, updated_at = now()",
        matrix_id,
        profile.displayname,
        profile.avatar_url,
    )
