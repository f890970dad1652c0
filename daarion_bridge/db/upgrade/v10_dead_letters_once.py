"""v10: one dead letter per event.

Every catch-up round fed an event it had no row for through the writer again, and each
time one that could not be written was stored again. Keep the oldest letter of each
event and let the database refuse another.
"""

from mautrix.util.async_db import Connection

from . import migration


@migration("One dead letter per event")
async def upgrade_v10(conn: Connection) -> None:
    await conn.execute(
        """
        DELETE FROM bridge_dead_letters d
        USING bridge_dead_letters older
        WHERE d.event_id = older.event_id AND older.id < d.id
        """
    )
    await conn.execute(
        "CREATE UNIQUE INDEX bridge_dead_letters_event_id_idx "
        "ON bridge_dead_letters (event_id) WHERE event_id IS NOT NULL"
    )
