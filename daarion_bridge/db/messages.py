"""messages: one row per Matrix message, idempotent by event id."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from asyncpg import Connection

DELETED = "[deleted]"

_INSERT = """
INSERT INTO messages (channel_id, matrix_event_id, sender_user_id, sender_type,
                      content_preview, created_at)
VALUES ($1, $2, $3, 'human', $4, $5)
ON CONFLICT (matrix_event_id) DO NOTHING
"""
# The state row makes edits order-independent: only a newer edit wins, and a
# redaction is final.
_EDIT_STATE = """
INSERT INTO bridge_message_state (matrix_event_id, last_edit_ts, last_edit_event_id)
SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM messages WHERE matrix_event_id = $1)
ON CONFLICT (matrix_event_id) DO UPDATE SET
    last_edit_ts = EXCLUDED.last_edit_ts, last_edit_event_id = EXCLUDED.last_edit_event_id
WHERE NOT bridge_message_state.redacted
  AND (bridge_message_state.last_edit_ts IS NULL
       OR (bridge_message_state.last_edit_ts, bridge_message_state.last_edit_event_id)
          < (EXCLUDED.last_edit_ts, EXCLUDED.last_edit_event_id))
RETURNING 1
"""
_REDACT_STATE = """
INSERT INTO bridge_message_state (matrix_event_id, redacted)
SELECT $1, true WHERE EXISTS (SELECT 1 FROM messages WHERE matrix_event_id = $1)
ON CONFLICT (matrix_event_id) DO UPDATE SET redacted = true
RETURNING 1
"""


async def insert(
    conn: Connection,
    *,
    channel_id: UUID,
    event_id: str,
    sender_user_id: UUID,
    preview: str,
    created_at: datetime,
) -> None:
    await conn.execute(_INSERT, channel_id, event_id, sender_user_id, preview, created_at)


async def edit(
    conn: Connection, target_event_id: str, edit_event_id: str, ts_ms: int, preview: str
) -> bool:
    """Show the edit's text on the original row; False when the edit is stale or unknown."""
    if await conn.fetchval(_EDIT_STATE, target_event_id, ts_ms, edit_event_id) is None:
        return False
    await conn.execute(
        "UPDATE messages SET content_preview = $2 WHERE matrix_event_id = $1",
        target_event_id,
        preview,
    )
    return True


async def redact(conn: Connection, target_event_id: str) -> bool:
    if await conn.fetchval(_REDACT_STATE, target_event_id) is None:
        return False
    await conn.execute(
        "UPDATE messages SET content_preview = $2 WHERE matrix_event_id = $1",
        target_event_id,
        DELETED,
    )
    return True
