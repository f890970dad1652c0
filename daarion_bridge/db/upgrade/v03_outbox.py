"""v3: the outbox of platform events for NATS."""

from mautrix.util.async_db import Connection

from . import migration

TABLES = """
CREATE TABLE bridge_outbox (
    id         bigserial PRIMARY KEY,
    subject    text NOT NULL,
    msg_id     text NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
-- The publisher reads what is unsent in id order; pruning reads what was sent long ago.
CREATE INDEX bridge_outbox_unsent_idx ON bridge_outbox (id) WHERE sent_at IS NULL;
CREATE INDEX bridge_outbox_sent_at_idx ON bridge_outbox (sent_at) WHERE sent_at IS NOT NULL;
"""


@migration("Outbox of platform events")
async def upgrade_v3(conn: Connection) -> None:
    await conn.execute(TABLES)
