"""A channel's room tombstoned with a replacement leaves a wish to follow it, committed
with the tombstone (db/pending_upgrades.py), on the real PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from daarion_bridge.agents.sync import SyncReport, write_roster
from daarion_bridge.db import pending_upgrades
from tests.db.matrix_events import event
from tests.db.test_announce import ROSTER, Feed, channel_with_sofia

ROOM, NEW, NEWER = "!room:localhost", "!new:localhost", "!newer:localhost"


@pytest.fixture
async def feed(pool: asyncpg.Pool) -> Feed:
    async with pool.acquire() as conn, conn.transaction():
        await write_roster(conn, ROSTER, {}, SyncReport())
    return Feed(pool)


def tombstone(replacement: str) -> dict:
    content = {"body": "This room has been replaced", "replacement_room": replacement}
    return event("m.room.tombstone", content, state_key="")


async def test_the_wish_is_committed_with_the_tombstone(pool: asyncpg.Pool, feed: Feed) -> None:
    await channel_with_sofia(pool, feed)
    first = tombstone(NEW)
    outcome = await feed.send([first])
    assert [t.replacement for t in outcome.upgrades] == [NEW]
    [wish] = await pending_upgrades.pending(pool)
    assert (wish.room_id, wish.replacement, wish.event_id) == (ROOM, NEW, first["event_id"])
    await feed.send([tombstone(NEWER)])  # sent again: the newest names where people went
    assert [w.replacement for w in await pending_upgrades.pending(pool)] == [NEWER]


async def test_a_room_closed_for_good_or_no_channel_leaves_no_wish(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    await feed.send([tombstone(NEW)])  # not a channel's room
    await channel_with_sofia(pool, feed)
    await feed.send([tombstone("")])  # no replacement: the room closed for good
    assert await pending_upgrades.pending(pool) == []


@pytest.mark.parametrize("give_up_after", [1, 3])
async def test_failed_attempts_end_in_giving_up(
    pool: asyncpg.Pool, feed: Feed, give_up_after: int
) -> None:
    await channel_with_sofia(pool, feed)
    await feed.send([tombstone(NEW)])
    [wish] = await pending_upgrades.pending(pool)
    results = [
        await pending_upgrades.failed(pool, wish, give_up_after) for _ in range(give_up_after)
    ]
    assert results == [False] * (give_up_after - 1) + [True]
    assert await pending_upgrades.pending(pool) == []
