"""v1: the nine tables of the platform's messaging ERD, and the bridge's own tables.

The ERD tables are a contract with the platform's services: names, columns, types,
NOT NULLs, indexes and foreign keys follow messaging-erd.dbml exactly. Tables the
bridge needs for itself are prefixed `bridge_`.
"""

from mautrix.util.async_db import Connection

from . import migration

ERD_TABLES = """
CREATE TABLE users (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    external_id text NOT NULL UNIQUE,
    matrix_id   text,
    handle      text,
    created_at  timestamptz DEFAULT now()
);
CREATE INDEX users_matrix_id_idx ON users (matrix_id);

CREATE TABLE microdaos (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    external_id   text NOT NULL UNIQUE,
    name          text NOT NULL,
    owner_user_id uuid NOT NULL REFERENCES users (id),
    created_at    timestamptz DEFAULT now()
);
CREATE INDEX microdaos_owner_user_id_idx ON microdaos (owner_user_id);

CREATE TABLE microdao_members (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    microdao_id uuid NOT NULL REFERENCES microdaos (id),
    user_id     uuid NOT NULL REFERENCES users (id),
    role        text NOT NULL,
    created_at  timestamptz DEFAULT now()
);
CREATE UNIQUE INDEX microdao_members_microdao_id_user_id_key
    ON microdao_members (microdao_id, user_id);

CREATE TABLE agent_blueprints (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    code         text NOT NULL UNIQUE,
    description  text,
    model        text NOT NULL,
    capabilities jsonb
);

CREATE TABLE agents (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    external_id   text NOT NULL UNIQUE,
    name          text NOT NULL,
    kind          text NOT NULL,
    microdao_id   uuid REFERENCES microdaos (id),
    owner_user_id uuid REFERENCES users (id),
    matrix_id     text,
    blueprint_id  uuid NOT NULL REFERENCES agent_blueprints (id),
    created_at    timestamptz DEFAULT now()
);
CREATE INDEX agents_matrix_id_idx ON agents (matrix_id);
CREATE INDEX agents_microdao_id_idx ON agents (microdao_id);
CREATE INDEX agents_kind_idx ON agents (kind);

CREATE TABLE channels (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug                text NOT NULL,
    name                text NOT NULL,
    microdao_id         uuid NOT NULL REFERENCES microdaos (id),
    team_id             uuid,
    matrix_room_id      text NOT NULL UNIQUE,
    visibility          text NOT NULL,
    created_by_user_id  uuid REFERENCES users (id),
    created_by_agent_id uuid REFERENCES agents (id),
    created_at          timestamptz DEFAULT now()
);
CREATE UNIQUE INDEX channels_slug_microdao_id_key ON channels (slug, microdao_id);
CREATE INDEX channels_microdao_id_idx ON channels (microdao_id);

CREATE TABLE channel_members (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    channel_id      uuid NOT NULL REFERENCES channels (id),
    member_user_id  uuid REFERENCES users (id),
    member_agent_id uuid REFERENCES agents (id),
    role            text NOT NULL,
    joined_at       timestamptz DEFAULT now(),
    left_at         timestamptz
);
CREATE UNIQUE INDEX channel_members_channel_id_member_user_id_key
    ON channel_members (channel_id, member_user_id);
CREATE UNIQUE INDEX channel_members_channel_id_member_agent_id_key
    ON channel_members (channel_id, member_agent_id);
CREATE INDEX channel_members_channel_id_idx ON channel_members (channel_id);

CREATE TABLE messages (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    channel_id      uuid NOT NULL REFERENCES channels (id),
    matrix_event_id text NOT NULL UNIQUE,
    sender_user_id  uuid REFERENCES users (id),
    sender_agent_id uuid REFERENCES agents (id),
    sender_type     text NOT NULL,
    content_preview text NOT NULL,
    created_at      timestamptz DEFAULT now()
);
CREATE INDEX messages_channel_id_created_at_idx ON messages (channel_id, created_at);
CREATE INDEX messages_sender_user_id_idx ON messages (sender_user_id);
CREATE INDEX messages_sender_agent_id_idx ON messages (sender_agent_id);

CREATE TABLE agent_sessions (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id         uuid NOT NULL REFERENCES agents (id),
    channel_id       uuid NOT NULL REFERENCES channels (id),
    started_at       timestamptz DEFAULT now(),
    last_activity_at timestamptz,
    status           text NOT NULL
);
CREATE INDEX agent_sessions_agent_id_channel_id_idx ON agent_sessions (agent_id, channel_id);
CREATE INDEX agent_sessions_status_idx ON agent_sessions (status);
"""

BRIDGE_TABLES = """
-- Synapse transaction ids committed, recorded in the same commit as their rows,
-- so a replay after a crash or restart is a no-op. The digest of the event ids
-- tells a replay from a homeserver that reset its counter and reuses an id.
CREATE TABLE bridge_transactions (
    txn_id        text PRIMARY KEY,
    events_digest text NOT NULL,
    event_count   integer NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bridge_transactions_processed_at_idx ON bridge_transactions (processed_at);

-- Events that can never be processed, kept with the reason instead of blocking
-- the transaction they came in.
CREATE TABLE bridge_dead_letters (
    id         bigserial PRIMARY KEY,
    txn_id     text NOT NULL,
    event_id   text,
    room_id    text,
    event_type text,
    reason     text NOT NULL,
    event      jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bridge_dead_letters_created_at_idx ON bridge_dead_letters (created_at);

-- The room state the index needs to derive member roles, and when a transaction last
-- touched the room (the catch-up reads recently active rooms back from the homeserver).
CREATE TABLE bridge_rooms (
    room_id       text PRIMARY KEY,
    room_version  text NOT NULL,
    creators      text[] NOT NULL,
    power_levels  jsonb,
    last_event_at timestamptz NOT NULL DEFAULT now()
);
-- No index on last_event_at: updates of an unindexed column stay cheap (HOT), and the
-- catch-up's scan of one row per channel is rare.

-- Which edit a message row shows and whether it was redacted, so a replayed
-- older edit never overwrites a newer one and nothing resurrects a redaction.
CREATE TABLE bridge_message_state (
    matrix_event_id    text PRIMARY KEY REFERENCES messages (matrix_event_id),
    last_edit_ts       bigint,
    last_edit_event_id text,
    redacted           boolean NOT NULL DEFAULT false
);
"""


@migration("Messaging ERD tables and bridge bookkeeping")
async def upgrade_v1(conn: Connection) -> None:
    await conn.execute(ERD_TABLES)
    await conn.execute(BRIDGE_TABLES)
