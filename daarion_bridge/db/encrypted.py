"""bridge_encrypted_waiting: encrypted messages whose room key has not come yet."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from asyncpg import Pool


@dataclass(frozen=True, slots=True)
class Waiting:
    event_id: str
    room_id: str
    session_id: str
    event: dict[str, Any]
    account_id: str  # the device's account whose store now holds the session


async def add(pool: Pool, event_id: str, room_id: str, session_id: str, event: Any) -> None:
    await pool.execute(
        "INSERT INTO bridge_encrypted_waiting (event_id, room_id, session_id, event) "
        "VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (event_id) DO NOTHING",
        event_id,
        room_id,
        session_id,
        orjson.dumps(event).decode(),
    )


async def with_key(pool: Pool, limit: int = 500) -> list[Waiting]:
    """Waiting messages whose session some device of the bridge now holds, oldest first."""
    rows = await pool.fetch(
        """
        SELECT DISTINCT ON (w.event_id) w.event_id, w.room_id, w.session_id, w.event::text,
               s.account_id, w.waiting_since
        FROM bridge_encrypted_waiting w
        JOIN crypto_megolm_inbound_session s
          ON s.room_id = w.room_id AND s.session_id = w.session_id AND s.session IS NOT NULL
        ORDER BY w.event_id, w.waiting_since
        LIMIT $1
        """,
        limit,
    )
    found = [
        Waiting(r[0], r[1], r[2], orjson.loads(r[3]), r[4])
        for r in sorted(rows, key=lambda r: r[5])
    ]
    return found


async def remove(pool: Pool, event_ids: Sequence[str]) -> None:
    if event_ids:
        await pool.execute(
            "DELETE FROM bridge_encrypted_waiting WHERE event_id = ANY($1::text[])",
            list(event_ids),
        )


async def count(pool: Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM bridge_encrypted_waiting"))


async def prune(pool: Pool, retention: timedelta) -> int:
    """Drop messages that waited longer than `retention`: a sender shares a room key
    when it sends, so one that has not come by then never will (they stay
    `[encrypted]` in the index)."""
    status = await pool.execute(
        "DELETE FROM bridge_encrypted_waiting WHERE waiting_since < now() - $1::interval",
        retention,
    )
    return int(status.split()[-1])


@dataclass(frozen=True, slots=True)
class Missing:
    """A room key some waiting messages need, and who of the bridge's could ask for it."""

    room_id: str
    session_id: str
    sender: str  # whose device made the session
    sender_key: str  # its Curve25519 key, when the event still carries it ("" if not)
    askers: list[str]  # the bridge's users in the room now (agents, the bot)


async def missing(pool: Pool, waited: timedelta, limit: int = 100) -> list[Missing]:
    """Room keys messages have waited for longer than `waited` without any device of the
    bridge holding them, each with the bridge's users in the room (by the index)."""
    rows = await pool.fetch(
        """
        SELECT w.room_id, w.session_id, min(w.event->>'sender'),
               coalesce(min(w.event->'content'->>'sender_key'), ''),
               array(SELECT a.matrix_id FROM channel_members m
                     JOIN channels c ON c.id = m.channel_id
                     JOIN agents a ON a.id = m.member_agent_id
                     WHERE c.matrix_room_id = w.room_id AND m.left_at IS NULL
                       AND a.matrix_id IS NOT NULL ORDER BY a.matrix_id)
        FROM bridge_encrypted_waiting w
        WHERE w.waiting_since < now() - $1::interval
          AND NOT EXISTS (SELECT 1 FROM crypto_megolm_inbound_session s
                          WHERE s.room_id = w.room_id AND s.session_id = w.session_id
                            AND s.session IS NOT NULL)
        GROUP BY w.room_id, w.session_id
        ORDER BY min(w.waiting_since)
        LIMIT $2
        """,
        waited,
        limit,
    )
    return [Missing(r[0], r[1], r[2], r[3], list(r[4])) for r in rows]
