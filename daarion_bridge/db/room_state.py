"""bridge_room_state: the event each state key of a room was last set by, so that only
a newer one changes what the index shows (a replayed older event is a no-op)."""

from __future__ import annotations

from typing import NamedTuple

from asyncpg import Connection


class Mark(NamedTuple):
    """Where an event stands among a state key's events: Matrix orders them by
    `origin_server_ts`; the event id breaks ties the same way every time."""

    ts_ms: int
    event_id: str


MEMBER = "m.room.member"

# Record the mark ($4, $5) of (room $1, type $2, state key $3) when newer than the one
# kept; a row comes back only then. Also a CTE of members.py's person statement, with
# the parameters renumbered.
NEWER = """
INSERT INTO bridge_room_state AS s (room_id, event_type, state_key, event_ts, event_id)
SELECT ${room}::text, ${type}::text, ${key}::text, ${ts}::bigint, ${id}::text
WHERE ${id}::text IS NOT NULL
ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET
    event_ts = EXCLUDED.event_ts, event_id = EXCLUDED.event_id
WHERE (s.event_ts, s.event_id) < (EXCLUDED.event_ts, EXCLUDED.event_id)
RETURNING 1
"""
_NEWER = NEWER.format(room=1, type=2, key=3, ts=4, id=5)


async def newer(conn: Connection, room_id: str, event_type: str, key: str, mark: Mark) -> bool:
    """Record `mark` for the state key and say True when it is newer than the one kept
    (or none was): the event may change the index. False: an older event, or the same
    one again."""
    return bool(await conn.fetchval(_NEWER, room_id, event_type, key, *mark))


async def marks(conn: Connection, room_id: str) -> dict[tuple[str, str], Mark]:
    """The mark applied last for each (event type, state key) of the room."""
    rows = await conn.fetch(
        "SELECT event_type, state_key, event_ts, event_id FROM bridge_room_state "
        "WHERE room_id = $1",
        room_id,
    )
    return {(r["event_type"], r["state_key"]): Mark(r["event_ts"], r["event_id"]) for r in rows}
