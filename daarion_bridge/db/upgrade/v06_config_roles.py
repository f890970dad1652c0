"""v6: which microDAO memberships the config wrote, so that it can take them back.

`microdao_members` is the platform's table (the ERD's), written by the config, the
admin API, the bridge's default microDAO and the platform itself. A member the config
no longer lists, or lists with a lower role, must lose what the config gave; a row
someone else wrote must not be touched. This table records the config's rows and the
role each was given, apart from the ERD's columns.

Nothing is known of the rows written before v6: the first start records what the
config lists then.
"""

from mautrix.util.async_db import Connection

from . import migration


@migration("The config's microDAO memberships")
async def upgrade_v6(conn: Connection) -> None:
    await conn.execute(
        """
        CREATE TABLE bridge_config_roles (
            microdao_id uuid NOT NULL REFERENCES microdaos (id),
            user_id     uuid NOT NULL REFERENCES users (id),
            role        text NOT NULL,
            PRIMARY KEY (microdao_id, user_id)
        )
        """
    )
