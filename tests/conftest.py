"""Shared fixtures: a real PostgreSQL for the whole session, a fresh database per test.

Set DAARION_TEST_DATABASE_URL (a postgresql:// URL of a role that may CREATE DATABASE)
to use an existing server; otherwise an embedded server is started in a temp dir.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from daarion_bridge.db.embedded import EmbeddedPostgres
from daarion_bridge.devtools.database import create_database

__all__ = ["create_database"]  # imported from here by test modules


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    url = os.environ.get("DAARION_TEST_DATABASE_URL")
    if url:
        yield url
        return
    tmp = Path(tempfile.mkdtemp(prefix="daarion-test-pg-"))
    os.chmod(tmp, 0o755)
    server = EmbeddedPostgres(tmp / "data")  # the bridge's own, with its access rules
    try:
        yield asyncio.run(server.start())
    finally:
        asyncio.run(server.stop())
        shutil.rmtree(tmp)


@pytest.fixture
async def database_url(pg_server_url: str) -> AsyncIterator[str]:
    """URL of a new, empty database for this test."""
    yield await create_database(pg_server_url)
