"""v7: which event each piece of room state the index shows came from.

Membership, power levels, name and join rules were applied in arrival order, so an older
event arriving again (the admin API's join read back from room state, `dead-letters
replay`, a homeserver restored from backup) rolled the index back: a member who had
left was joined again, an agent's session reopened. Each state key now keeps the
`(origin_server_ts, event_id)` of the event applied last, and only a newer event
changes it, the guard `bridge_message_state` gives edits.
"""

from mautrix.util.async_db import Connection

from . import migration


@migration("Order of applied room state")
async def upgrade_v7(conn: Connection) -> None:
    await conn.execute(
        """
        CREATE TABLE bridge_room_state (
            room_id    text NOT NULL,
            event_type text NOT NULL,
            state_key  text NOT NULL,
            event_ts   bigint NOT NULL,
            event_id   text NOT NULL,
            PRIMARY KEY (room_id, event_type, state_key)
        );
        """
    )
