"""crypto_*: mautrix's crypto store (tables made and versioned by mautrix, in
`crypto_version`), kept bounded: the room keys of rooms the bridge is done with go.

The bridge's own users are the store's accounts (`crypto_account`: the bot and each
agent). An inbound Megolm session (a room key someone shared with one of their devices)
only ever opens messages of its room, so once none of them is in that room its keys
wait out a grace and go, with the replay index of their messages and any outgoing
session left there. A room that is no channel (an invite the bridge refused, with the
key shared with the invitee; a room left behind by an upgrade) has no membership in the
index: its keys go once none has come for as long."""

from __future__ import annotations

from datetime import timedelta

from asyncpg import Pool

# Rooms whose keys go: channels in which every member row of the bridge's own users (as
# a person's row, or an agent's) has been left for longer than the grace ($1), and
# rooms that are no channel whose newest key came longer ago than that. `received_at`
# is UTC without a zone (mautrix's datetime.utcnow()).
_DONE_ROOMS = """
WITH membership AS (
    SELECT m.channel_id, m.left_at FROM crypto_account k
    JOIN agents a ON a.matrix_id = k.account_id JOIN channel_members m ON m.member_agent_id = a.id
    UNION ALL
    SELECT m.channel_id, m.left_at FROM crypto_account k
    JOIN users u ON u.matrix_id = k.account_id JOIN channel_members m ON m.member_user_id = u.id
), ours AS (
    SELECT c.matrix_room_id AS room_id,
           max(COALESCE(m.left_at, 'infinity'::timestamptz)) AS last_here
    FROM membership m JOIN channels c ON c.id = m.channel_id
    GROUP BY c.matrix_room_id
), keyed AS (
    SELECT room_id, max(received_at) AS newest
    FROM crypto_megolm_inbound_session GROUP BY room_id
)
SELECT k.room_id FROM keyed k LEFT JOIN ours o ON o.room_id = k.room_id
WHERE CASE
    WHEN o.room_id IS NOT NULL THEN o.last_here < now() - $1::interval
    WHEN EXISTS (SELECT 1 FROM channels c WHERE c.matrix_room_id = k.room_id) THEN false
    ELSE COALESCE(k.newest, '-infinity') < (now() AT TIME ZONE 'UTC') - $1::interval
END
"""
_PRUNE = """
WITH gone AS (
    DELETE FROM crypto_megolm_inbound_session WHERE room_id = ANY($1::text[])
    RETURNING sender_key, session_id
), indexed AS (
    DELETE FROM crypto_message_index i USING gone g
    WHERE i.sender_key = g.sender_key AND i.session_id = g.session_id
), outgoing AS (
    DELETE FROM crypto_megolm_outbound_session WHERE room_id = ANY($1::text[])
)
SELECT count(*) FROM gone
"""


async def prune_done_rooms(pool: Pool, grace: timedelta) -> tuple[int, int]:
    """Drop the room keys of rooms the bridge is done with (see _DONE_ROOMS); returns
    (rooms, inbound sessions) dropped."""
    async with pool.acquire() as conn, conn.transaction():
        rooms = [r[0] for r in await conn.fetch(_DONE_ROOMS, grace)]
        if not rooms:
            return 0, 0
        sessions = int(await conn.fetchval(_PRUNE, rooms))
    return len(rooms), sessions
