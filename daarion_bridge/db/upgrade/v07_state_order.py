"""v7: which event each piece of room state the index shows came from.

Membership, power levels, name and join rules were applied in arrival order, so an older
event arriving again (the admin API's join read back from room state, `dead-letters
replay`, a homeserver restored from backup) rolled the index back: a member who had
left was joined again, an agent's session reopened. Each state key now keeps the
`(origin_server_ts, event_id)` of the event applied last, and only a newer event
changes it, the guard `bridge_message_state` gives edits.

Removing an edit (Element's "Remove" redacts the `m.replace` event) matched no message
row, so the preview kept the removed text, a pasted password say. Each edit's preview is
kept in `bridge_message_edits`, and the original's in `bridge_message_state`, so the
removal can show the version before it; both are wiped when their message is redacted.
Edits indexed before this version were not kept: removing one of them changes nothing.
"""

from mautrix.util.async_db import Connection

from . import migration


@migration("Order of applied room state; removable edits")
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
        CREATE TABLE bridge_message_edits (
            edit_event_id    text PRIMARY KEY,
            message_event_id text NOT NULL REFERENCES messages (matrix_event_id),
            edit_ts          bigint NOT NULL,
            preview          text  -- NULL once the edit or its message is redacted
        );
        CREATE INDEX bridge_message_edits_message_event_id_idx
            ON bridge_message_edits (message_event_id);
        ALTER TABLE bridge_message_state ADD COLUMN original_preview text;
        """
    )
