from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from mautrix.util.async_db import Database

from daarion_bridge.db.database import open_database


@pytest.fixture
async def databases(database_url: str) -> AsyncIterator[tuple[Database, Database]]:
    """A fresh database migrated by the bridge's own start-up path."""
    db, state_db = await open_database(database_url)
    try:
        yield db, state_db
    finally:
        await db.stop()


@pytest.fixture
def pool(databases: tuple[Database, Database]) -> asyncpg.Pool:
    return databases[0].pool


@pytest.fixture
def state_db(databases: tuple[Database, Database]) -> Database:
    return databases[1]
