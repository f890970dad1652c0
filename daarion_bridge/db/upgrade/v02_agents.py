"""v2: what the bridge remembers about agent puppets and microDAO spaces."""

from mautrix.util.async_db import Connection

from . import migration

TABLES = """
-- Each agent's puppet is registered on the homeserver once; its profile is set again
-- only when the config changes it.
CREATE TABLE bridge_puppets (
    matrix_id   text PRIMARY KEY,
    displayname text,
    avatar_url  text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Matrix spaces linked to microDAOs: a room under one of them is that microDAO's channel.
CREATE TABLE bridge_spaces (
    room_id     text PRIMARY KEY,
    microdao_id uuid NOT NULL UNIQUE REFERENCES microdaos (id)
);
"""


@migration("Agent puppets and microDAO spaces")
async def upgrade_v2(conn: Connection) -> None:
    await conn.execute(TABLES)
