"""Open the database: pool, migrations, and mautrix's state store beside our tables."""

from __future__ import annotations

import logging

import asyncpg
from mautrix.appservice.state_store.asyncpg import PgASStateStore
from mautrix.util.async_db import Database, PostgresDatabase, UnsupportedDatabaseVersion

from ..errors import OperatorError
from ..redact import redact_url
from .upgrade import upgrade_table

log = logging.getLogger("daarion.db")


async def keep_session(_conn: asyncpg.Connection) -> None:
    """Pool reset that keeps the session: asyncpg still rolls back an open transaction.

    The bridge sets no session state (no SET, LISTEN or cursors; the publisher releases
    its one session lock itself), so asyncpg's default reset query would only cost a
    round trip per checkout: one more per Synapse transaction.
    """


def pool_of(db: Database) -> asyncpg.Pool:
    """The asyncpg pool of a started database (the bridge opens PostgreSQL only)."""
    assert isinstance(db, PostgresDatabase), type(db)
    return db.pool


async def open_database(
    url: str, *, min_size: int = 1, max_size: int = 5, where: str | None = None
) -> tuple[Database, Database]:
    """The bridge's database and the state store's view of it, both migrated.

    `where` names the config key in errors; it defaults to the redacted URL.
    """
    where = where or f"database.url {redact_url(url)}"
    db = Database.create(
        url,
        upgrade_table=upgrade_table,
        db_args={"min_size": min_size, "max_size": max_size, "reset": keep_session},
        log=log,
    )
    state_db = Database.create(url, upgrade_table=PgASStateStore.upgrade_table, log=log)
    try:
        await db.start()
        state_db.override_pool(db)
        await state_db.start()
    except UnsupportedDatabaseVersion as e:
        await db.stop()
        raise OperatorError(
            f"{where}: the database schema is newer than this bridge ({e}); "
            "upgrade the bridge or restore a matching backup"
        ) from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
        await db.stop()
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise OperatorError(f"{where}: cannot connect or migrate: {reason}") from None
    return db, state_db
