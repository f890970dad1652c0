"""v8: the thread each message is in.

The ERD's messages table has no column for a thread, and stays untouched: a bridge table
holds the root event of each message that is in a thread (none for the others), so an
announcement and an agent's answer can name the thread.
"""

from mautrix.util.async_db import Connection

from . import migration


@migration("Message threads")
async def upgrade_v8(conn: Connection) -> None:
    await conn.execute(
        """
        CREATE TABLE bridge_message_threads (
            matrix_event_id text PRIMARY KEY REFERENCES messages (matrix_event_id),
            thread_root     text NOT NULL
        );
        """
    )
