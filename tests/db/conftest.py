from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from daarion_bridge.db.database import open_database


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a fresh database migrated by the bridge's own start-up path."""
    db, _state_db = await open_database(database_url)
    try:
        yield db.pool
    finally:
        await db.stop()
