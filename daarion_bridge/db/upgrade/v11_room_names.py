"""v11: channels of rooms without a name are named after their members, as Element does.

A room made in Element as a direct message has no `m.room.name`; its channel was named
and slugged after the room id. Such a channel is now named from its members ("Alice and
Sofia") and renamed as they change until the room gets a name: `bridge_room_names` says
which rooms' channels follow their members, and who is left out (the bridge's bot);
`bridge_member_names` keeps the display names members' events set, per room.

Channels made before this version have no `bridge_room_names` row: their names stay as
they are until the room gets a name (or the bot is invited again).
"""

from mautrix.util.async_db import Connection

from . import migration


@migration("Channel names from members for rooms without a name")
async def upgrade_v11(conn: Connection) -> None:
    await conn.execute(
        """
        CREATE TABLE bridge_room_names (
            room_id      text PRIMARY KEY,
            bot_mxid     text NOT NULL,
            from_members boolean NOT NULL
        );
        CREATE TABLE bridge_member_names (
            room_id      text NOT NULL,
            matrix_id    text NOT NULL,
            display_name text NOT NULL,
            PRIMARY KEY (room_id, matrix_id)
        );
        """
    )
