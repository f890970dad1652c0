"""bridge_rooms: the state needed to derive roles (power levels, creators)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from asyncpg import Connection, Pool


@dataclass(frozen=True, slots=True)
class RoomPower:
    creators: tuple[str, ...]
    power_levels: dict[str, Any] | None


NO_POWER = RoomPower((), None)


def power_of(creators: list[str] | None, power_levels: str | None) -> RoomPower:
    """A bridge_rooms row's columns as read (jsonb as text); NULLs: no row."""
    levels = json.loads(power_levels) if power_levels is not None else None
    return RoomPower(tuple(creators or ()), levels)


async def get(conn: Connection, room_id: str) -> RoomPower:
    row = await conn.fetchrow(
        "SELECT creators, power_levels FROM bridge_rooms WHERE room_id = $1", room_id
    )
    return NO_POWER if row is None else power_of(row["creators"], row["power_levels"])


async def put(
    conn: Connection,
    room_id: str,
    room_version: str,
    creators: tuple[str, ...],
    power_levels: dict[str, Any] | None,
) -> None:
    await conn.execute(
        "INSERT INTO bridge_rooms (room_id, room_version, creators, power_levels) "
        "VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (room_id) DO UPDATE SET "
        "room_version = EXCLUDED.room_version, creators = EXCLUDED.creators, "
        "power_levels = EXCLUDED.power_levels",
        room_id,
        room_version,
        list(creators),
        json.dumps(power_levels) if power_levels is not None else None,
    )


async def recently_active(conn: Connection | Pool, window_seconds: float) -> list[str]:
    rows = await conn.fetch(
        "SELECT room_id FROM bridge_rooms "
        "WHERE last_event_at > now() - make_interval(secs => $1) ORDER BY last_event_at DESC",
        float(window_seconds),
    )
    return [r["room_id"] for r in rows]
