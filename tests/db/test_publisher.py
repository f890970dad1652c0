"""The outbox to a real NATS JetStream: in order, once, through restarts and crashes."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import nats
import pytest

from daarion_bridge.bus.process import PublisherProcess
from daarion_bridge.bus.publisher import PUBLISHER_LOCK, Publisher
from daarion_bridge.config import NatsConfig
from daarion_bridge.db import outbox
from daarion_bridge.devtools.nats import LocalNats
from daarion_bridge.translate.bus import MESSAGE_CREATED, BusEvent


@pytest.fixture
async def local_nats(tmp_path: Path) -> AsyncIterator[LocalNats]:
    server = LocalNats(tmp_path / "nats")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def config(server: LocalNats) -> NatsConfig:
    return NatsConfig(server.url, "TEST", "city.", 3600.0, 86400.0)


def events(start: int, count: int) -> list[BusEvent]:
    return [
        BusEvent(MESSAGE_CREATED, f"{MESSAGE_CREATED}:$e{i}", {"n": i})
        for i in range(start, start + count)
    ]


async def stream_contents(server: LocalNats, stream: str = "TEST") -> list[tuple[str, int]]:
    """(subject, n) of every message the stream holds, in stream order."""
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            found.append((msg.subject, json.loads(msg.data)["n"]))
        return found
    finally:
        await nc.close()


async def wait_sent(pool: asyncpg.Pool, timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await outbox.backlog(pool):
        assert asyncio.get_running_loop().time() < deadline, "outbox not drained"
        await asyncio.sleep(0.05)


async def add_events(
    pool: asyncpg.Pool, publisher: Publisher | PublisherProcess, start: int, count: int
) -> None:
    """Commit events to the outbox and tell the publisher, as the writer does."""
    async with pool.acquire() as conn:
        await outbox.add(conn, events(start, count))
    publisher.wake()


async def test_outbox_reaches_the_stream_in_order_once(
    pool: asyncpg.Pool, local_nats: LocalNats
) -> None:
    async with pool.acquire() as conn:
        await outbox.add(conn, events(0, 250))
    publisher = Publisher(pool, config(local_nats))
    publisher.start()
    try:
        await wait_sent(pool)
    finally:
        await publisher.stop()
    assert await stream_contents(local_nats) == [
        ("city.messaging.message.created", i) for i in range(250)
    ]


async def test_a_resend_after_a_crash_is_dropped_by_the_server(
    pool: asyncpg.Pool, local_nats: LocalNats
) -> None:
    """The crash window: published and acked, but not yet marked sent."""
    async with pool.acquire() as conn:
        await outbox.add(conn, events(0, 10))
    publisher = Publisher(pool, config(local_nats))
    publisher.start()
    await wait_sent(pool)
    await publisher.stop()
    await pool.execute("UPDATE bridge_outbox_cursor SET last_sent_id = 0")  # as if never moved
    again = Publisher(pool, config(local_nats))
    again.start()
    try:
        await wait_sent(pool)
    finally:
        await again.stop()
    assert [n for _, n in await stream_contents(local_nats)] == list(range(10))


async def test_nats_down_then_back_loses_and_doubles_nothing(
    pool: asyncpg.Pool, local_nats: LocalNats, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    publisher = Publisher(pool, config(local_nats))
    publisher.start()
    try:
        await add_events(pool, publisher, 0, 50)
        await wait_sent(pool)
        await local_nats.stop()
        await add_events(pool, publisher, 50, 50)  # written while NATS is down
        await asyncio.sleep(1.5)
        assert await outbox.backlog(pool) == 50, "events wait while NATS is down"
        await local_nats.start()
        await wait_sent(pool, timeout=40)  # backoff is at most 30 s
    finally:
        await publisher.stop()
    assert [n for _, n in await stream_contents(local_nats)] == list(range(100))
    # The lost connection is told in a line or two, never as an error with a traceback.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any(r.getMessage().startswith("NATS connection:") for r in caplog.records)


async def test_two_publishers_on_one_database_send_once(
    pool: asyncpg.Pool, local_nats: LocalNats
) -> None:
    first, second = Publisher(pool, config(local_nats)), Publisher(pool, config(local_nats))
    first.start()
    second.start()
    try:
        for start in range(0, 200, 20):
            async with pool.acquire() as conn:
                await outbox.add(conn, events(start, 20))
            first.wake()
            second.wake()
            await asyncio.sleep(0.02)
        await wait_sent(pool)
    finally:
        await first.stop()
        await second.stop()
    assert [n for _, n in await stream_contents(local_nats)] == list(range(200))
    # The advisory lock: one publisher sends everything, the other stands by.
    assert sorted([first.published, second.published]) == [0, 200]


async def test_a_stopped_publisher_leaves_no_lock_in_the_pool(
    pool: asyncpg.Pool, local_nats: LocalNats
) -> None:
    """The pool keeps sessions as they are: the publisher releases its session lock
    itself, so the next publisher on the pool takes over."""
    first = Publisher(pool, config(local_nats))
    first.start()
    await add_events(pool, first, 0, 5)
    await wait_sent(pool)
    await first.stop()
    held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1"
    assert await pool.fetchval(held, PUBLISHER_LOCK) == 0
    second = Publisher(pool, config(local_nats))
    second.start()
    try:
        await add_events(pool, second, 5, 5)
        await wait_sent(pool)
    finally:
        await second.stop()
    assert second.published == 5
    assert [n for _, n in await stream_contents(local_nats)] == list(range(10))


async def test_prune_drops_only_published_rows_older_than_the_retention(
    pool: asyncpg.Pool,
) -> None:
    from datetime import timedelta

    async with pool.acquire() as conn:
        await outbox.add(conn, events(0, 4))
    ids = [r["id"] for r in await pool.fetch("SELECT id FROM bridge_outbox ORDER BY id")]
    old = "UPDATE bridge_outbox SET created_at = now() - interval '8 days' WHERE id = ANY($1)"
    await pool.execute(old, [ids[0], ids[2]])
    await outbox.mark_sent(pool, ids[1])
    assert await outbox.backlog(pool) == 2
    assert await outbox.prune(pool, timedelta(days=7)) == 1
    left = [r["id"] for r in await pool.fetch("SELECT id FROM bridge_outbox ORDER BY id")]
    assert left == ids[1:]  # a recent published row, and unpublished rows however old


async def test_an_outbox_write_waits_for_the_ingest_lock(pool: asyncpg.Pool) -> None:
    """Outbox ids must come in commit order, or the publisher's cursor could pass a row
    that commits later with a smaller id."""
    from daarion_bridge.db import bookkeeping

    async with pool.acquire() as holder, holder.transaction():
        await bookkeeping.lock_ingest(holder)

        async def write() -> None:
            async with pool.acquire() as conn, conn.transaction():
                await outbox.add(conn, events(0, 1))

        writer = asyncio.create_task(write())
        await asyncio.sleep(0.3)
        assert not writer.done()
    await asyncio.wait_for(writer, 5)
    assert await outbox.backlog(pool) == 1


@pytest.mark.parametrize(
    ("credentials", "secret"), [("bridge:s3cret-pass@", "s3cret-pass"), ("t0ken-abc@", "t0ken-abc")]
)
async def test_the_nats_url_is_logged_without_its_credentials(
    pool: asyncpg.Pool,
    local_nats: LocalNats,
    caplog: pytest.LogCaptureFixture,
    credentials: str,
    secret: str,
) -> None:
    """A server without auth accepts any credentials, so the log lines are the real ones."""
    url = local_nats.url.replace("nats://", f"nats://{credentials}")
    caplog.set_level(logging.DEBUG)
    async with pool.acquire() as conn:
        await outbox.add(conn, events(0, 1))
    publisher = Publisher(pool, NatsConfig(url, "TEST", "city.", 3600.0, 86400.0))
    publisher.start()
    try:
        await wait_sent(pool)
    finally:
        await publisher.stop()
    assert "Publishing to NATS stream TEST at nats://" in caplog.text
    assert secret not in caplog.text
