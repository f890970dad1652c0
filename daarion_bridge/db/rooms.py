"""bridge_rooms: the state needed to derive roles (power levels, creators)."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from asyncpg import Connection, Pool


@dataclass(frozen=True, slots=True)
class RoomPower:
    creators: tuple[str, ...]
    power_levels: dict[str, Any] | None


async def get(conn: Connection, room_id: str) -> RoomPower:
    row = await conn.fetchrow(
        "SELECT creators, power_levels FROM bridge_rooms WHERE room_id = $1", room_id
    )
    if row is None:
        return RoomPower((), None)
    levels = json.loads(row["power_levels"]) if row["power_levels"] is not None else None
    return RoomPower(tuple(row["creators"]), levels)


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


async def set_power_levels(conn: Connection, room_id: str, power_levels: dict[str, Any]) -> None:
    await conn.execute(
        "UPDATE bridge_rooms SET power_levels = $2::jsonb WHERE room_id = $1",
        room_id,
        json.dumps(power_levels),
    )


async def touch(conn: Connection, room_ids: Collection[str]) -> None:
    if room_ids:
        await conn.execute(
            "UPDATE bridge_rooms SET last_event_at = now() WHERE room_id = ANY($1::text[])",
            list(room_ids),
        )


async def recently_active(conn: Connection | Pool, window_seconds: float) -> list[str]:
    rows = await conn.fetch(
        "SELECT room_id FROM bridge_rooms "
        "WHERE last_event_at > now() - make_interval(secs => $1) ORDER BY last_event_at DESC",
        float(window_seconds),
    )
    return [r["room_id"] for r in rows]
