"""The bridge's start and stop in this process, on a real PostgreSQL with no homeserver:
a start that fails halfway stops what it had started (listener, HTTP session, database
pool) and starts nothing after the failure. The whole start and stop against a real
Synapse are in tests/e2e."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import asyncpg
import pytest

from daarion_bridge.app import Bridge
from daarion_bridge.config import Config, parse_config
from daarion_bridge.errors import OperatorError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bridge_config(database_url: str, port: int, connect_timeout: float) -> Config:
    raw = {
        # Nothing listens on port 1: the homeserver is unreachable.
        "homeserver": {
            "address": "http://127.0.0.1:1",
            "domain": "localhost",
            "connect_timeout": connect_timeout,
        },
        "appservice": {
            "address": f"http://127.0.0.1:{port}",
            "hostname": "127.0.0.1",
            "port": port,
            "as_token": "as-token-0123456789",
            "hs_token": "hs-token-0123456789",
        },
        "database": {"url": database_url},
        "bridge": {"default_microdao": "microdao:test"},
    }
    return parse_config(Path("test-config.yaml"), raw, environ={})


async def listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def other_connections(database_url: str) -> int:
    """Sessions on the test's database besides this one: the bridge's pool."""
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()


def background_tasks() -> set[str]:
    names = {"maintenance", "session sweep", "publisher process"}
    return {t.get_name() for t in asyncio.all_tasks() if t.get_name() in names}


async def test_a_start_that_cannot_reach_the_homeserver_stops_what_it_started(
    database_url: str,
) -> None:
    port = free_port()
    bridge = Bridge(bridge_config(database_url, port, connect_timeout=3))
    starting = asyncio.create_task(bridge.start())
    # The listener opens before the homeserver is waited for; the pool is open by then.
    for _ in range(200):
        if await listening(port) or starting.done():
            break
        await asyncio.sleep(0.02)
    assert await listening(port)
    assert await other_connections(database_url) > 0

    with pytest.raises(OperatorError) as failed:
        await starting
    assert str(failed.value).startswith("homeserver.address http://127.0.0.1:1: not reachable")
    assert not await listening(port)
    assert await other_connections(database_url) == 0
    services = bridge.services
    assert services is not None and services.http.closed
    assert not bridge.is_ready()
    assert background_tasks() == set()  # nothing after the failure started
    await bridge.stop()  # the caller's stop after a failed start: nothing left to do
    assert not await listening(port)


async def test_a_start_that_cannot_listen_stops_what_it_started(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        bridge = Bridge(bridge_config(database_url, port, connect_timeout=0))
        with pytest.raises(OperatorError) as failed:
            await bridge.start()
    assert str(failed.value).startswith(f"appservice.hostname/port 127.0.0.1:{port}: cannot listen")
    assert await other_connections(database_url) == 0
    services = bridge.services
    assert services is not None and services.http.closed
    assert background_tasks() == set()
    await bridge.stop()


async def test_a_stop_before_start_does_nothing(database_url: str) -> None:
    bridge = Bridge(bridge_config(database_url, free_port(), connect_timeout=0))
    await bridge.stop()
    assert bridge.services is None and not bridge.is_ready()
