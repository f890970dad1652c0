"""Scratch databases on a PostgreSQL server, for the tests and the benchmark."""

from __future__ import annotations

import uuid

import asyncpg
from yarl import URL


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
