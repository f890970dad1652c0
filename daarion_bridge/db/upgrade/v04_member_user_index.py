"""v4: an index for "a user's channels", the one platform query the ERD's indexes miss.

The ERD indexes channel_members by channel only, so listing a user's channels scanned
the whole table, which grows with the city. The index adds to
the ERD; it changes no column and no constraint.
"""

from mautrix.util.async_db import Connection

from . import migration


@migration("Index channel_members by user")
async def upgrade_v4(conn: Connection) -> None:
    await conn.execute(
        "CREATE INDEX IF NOT EXISTS channel_members_member_user_id_idx "
        "ON channel_members (member_user_id)"
    )
