"""bridge_backfills: channels whose earlier history is still to be read back."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from asyncpg import Connection, Pool


@dataclass(frozen=True, slots=True)
class Pending:
    channel_id: UUID
    room_id: str


async def add(conn: Connection, channel_id: UUID, room_id: str) -> None:
    await conn.execute(
        "INSERT INTO bridge_backfills (channel_id, room_id) VALUES ($1, $2) "
        "ON CONFLICT (channel_id) DO NOTHING",
        channel_id,
        room_id,
    )


async def pending(conn: Connection | Pool) -> list[Pending]:
    """Oldest wish first."""
    rows = await conn.fetch(
        "SELECT channel_id, room_id FROM bridge_backfills ORDER BY requested_at, channel_id"
    )
    return [Pending(r["channel_id"], r["room_id"]) for r in rows]


async def done(conn: Connection | Pool, channel_id: UUID) -> None:
    await conn.execute("DELETE FROM bridge_backfills WHERE channel_id = $1", channel_id)
