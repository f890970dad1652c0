"""v5: the outbox remembers what was published with one cursor, not a mark on each row.

Marking each row sent rewrote every outbox row once more, with its index entries: about
a third of the outbox's cost in PostgreSQL. Rows get their ids in commit order (outbox.py
inserts under the ingest lock), so everything up to the cursor is published and
everything after it is not. Pruning goes by `created_at`, indexed in place of `sent_at`.
"""

from mautrix.util.async_db import Connection

from . import migration


@migration("Outbox publish cursor")
async def upgrade_v5(conn: Connection) -> None:
    await conn.execute(
        """
        CREATE TABLE bridge_outbox_cursor (
            only_row     boolean PRIMARY KEY DEFAULT true CHECK (only_row),
            last_sent_id bigint NOT NULL
        );
        -- The publisher marks an acked run from the start, so what is unsent is the tail.
        INSERT INTO bridge_outbox_cursor (last_sent_id)
        SELECT COALESCE(
            (SELECT min(id) - 1 FROM bridge_outbox WHERE sent_at IS NULL),
            (SELECT max(id) FROM bridge_outbox),
            0);
        DROP INDEX bridge_outbox_unsent_idx;
        DROP INDEX bridge_outbox_sent_at_idx;
        ALTER TABLE bridge_outbox DROP COLUMN sent_at;
        CREATE INDEX bridge_outbox_created_at_idx ON bridge_outbox (created_at);
        """
    )
