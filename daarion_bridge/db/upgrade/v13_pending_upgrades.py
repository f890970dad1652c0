"""v13: room upgrades still to follow.

A channel's room tombstoned with a replacement is followed after the commit
(ingest/upgrades.py): the bot joins the new room and the channel moves there. The wish
is written with the tombstone and deleted once followed (or found moved by an invite
into the new room), so a bridge stopped in between, or a homeserver that refused the
join for a while, follows it at the next start.
"""

from mautrix.util.async_db import Connection

from . import migration


@migration("Room upgrades still to follow")
async def upgrade_v13(conn: Connection) -> None:
    await conn.execute(
        """
        CREATE TABLE bridge_pending_upgrades (
            room_id      text PRIMARY KEY,
            replacement  text NOT NULL,
            sender       text NOT NULL,
            event_id     text NOT NULL,
            attempts     integer NOT NULL DEFAULT 0,
            requested_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
