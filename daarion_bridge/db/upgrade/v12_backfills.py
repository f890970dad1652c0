"""v12: backfills still to do.

A room that becomes a channel brings its earlier history (ingest/backfill.py). The wish
is written in the transaction that makes the channel and deleted when the history is
read back, so a bridge stopped in between finishes it at its next start.
"""

from mautrix.util.async_db import Connection

from . import migration


@migration("Backfills still to do")
async def upgrade_v12(conn: Connection) -> None:
    await conn.execute(
        """
        CREATE TABLE bridge_backfills (
            channel_id   uuid PRIMARY KEY REFERENCES channels (id) ON DELETE CASCADE,
            room_id      text NOT NULL,
            requested_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
