"""bridge_pending_upgrades: channels' rooms upgraded, the move to the new room still to
make (ingest/upgrades.py)."""

from __future__ import annotations

from asyncpg import Connection, Pool

from ..translate.events import RoomTombstoned


async def add(conn: Connection, tombstone: RoomTombstoned) -> None:
    """The newest tombstone of a room wins: it names the room people were sent to."""
    await conn.execute(
        "INSERT INTO bridge_pending_upgrades (room_id, replacement, sender, event_id) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (room_id) DO UPDATE SET "
        "replacement = EXCLUDED.replacement, sender = EXCLUDED.sender, "
        "event_id = EXCLUDED.event_id, attempts = 0",
        tombstone.room_id,
        tombstone.replacement,
        tombstone.sender,
        tombstone.event_id,
    )


async def pending(conn: Connection | Pool) -> list[RoomTombstoned]:
    """Oldest first."""
    rows = await conn.fetch(
        "SELECT room_id, event_id, sender, replacement FROM bridge_pending_upgrades "
        "ORDER BY requested_at, room_id"
    )
    return [RoomTombstoned(*r) for r in rows]


async def done(conn: Connection | Pool, tombstone: RoomTombstoned) -> None:
    await conn.execute(
        "DELETE FROM bridge_pending_upgrades WHERE room_id = $1 AND event_id = $2",
        tombstone.room_id,
        tombstone.event_id,
    )


async def failed(conn: Connection | Pool, tombstone: RoomTombstoned, give_up_after: int) -> bool:
    """Count a failed attempt; True when it was the last one allowed (the wish is gone)."""
    attempts = await conn.fetchval(
        "UPDATE bridge_pending_upgrades SET attempts = attempts + 1 "
        "WHERE room_id = $1 AND event_id = $2 RETURNING attempts",
        tombstone.room_id,
        tombstone.event_id,
    )
    if attempts is not None and attempts >= give_up_after:
        await done(conn, tombstone)
        return True
    return False
