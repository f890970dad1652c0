"""v9: encrypted messages waiting for their room key.

A message whose Megolm session has not reached any of the bridge's devices is indexed
as `[encrypted]`, and kept here, the event as Synapse sent it (ciphertext only), until
the key comes in a later transaction. Then it is decrypted and what depends on its text
(mentions, invocations, commands) runs, and its row goes. mautrix's crypto store keeps
its own tables (`crypto_*`, versioned in `crypto_version`).
"""

from mautrix.util.async_db import Connection

from . import migration


@migration("Encrypted messages waiting for their room key")
async def upgrade_v9(conn: Connection) -> None:
    await conn.execute(
        """
        CREATE TABLE bridge_encrypted_waiting (
            event_id   text PRIMARY KEY,
            room_id    text NOT NULL,
            session_id text NOT NULL,
            event      jsonb NOT NULL,
            waiting_since timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    await conn.execute(
        "CREATE INDEX bridge_encrypted_waiting_session "
        "ON bridge_encrypted_waiting (room_id, session_id)"
    )
