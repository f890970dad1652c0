"""A room without a name: its channel is named after its members as Element names the
room, and follows them until the room gets a name (issue 19, item 8)."""

from __future__ import annotations

from typing import Any

import asyncpg

from daarion_bridge.ingest.channel_setup import ChannelSetup
from daarion_bridge.translate.rooms import snapshot_from_state
from tests.db import test_announce as announce
from tests.db.matrix_events import event, member
from tests.db.test_announce import ALICE, BOB, BOT, ROOM, SOFIA, Feed, take
from tests.db.test_announce import feed as feed  # noqa: F401  (the fixture)

CAROL = "@carol:localhost"


def dm_state(joined: dict[str, str | None]) -> list[dict[str, Any]]:
    """A DM as Element makes it: no m.room.name, no alias; members with display names."""
    base = [
        {"type": "m.room.create", "state_key": "", "sender": ALICE,
         "content": {"room_version": "12"}},
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "invite"}},
    ]  # fmt: skip
    return base + [
        {"type": "m.room.member", "state_key": u,
         "content": {"membership": "join", **({"displayname": d} if d else {})}}
        for u, d in joined.items()
    ]  # fmt: skip


def joined(user: str, display: str | None = None) -> dict[str, Any]:
    ev = member(user, "join")
    if display:
        ev["content"]["displayname"] = display
    return ev


async def channel(pool: asyncpg.Pool) -> asyncpg.Record:
    return await pool.fetchrow("SELECT name, slug FROM channels WHERE matrix_room_id = $1", ROOM)


async def open_dm(feed: Feed, people: dict[str, str | None]) -> None:
    snapshot = snapshot_from_state(ROOM, dm_state(people), BOT)
    await feed.send([], [ChannelSetup(snapshot, "microdao:core", ALICE, BOT)])


async def test_a_dm_is_named_and_slugged_after_its_members(pool: asyncpg.Pool, feed: Feed) -> None:
    await open_dm(feed, {ALICE: "Alice", BOT: "DAARION", SOFIA: "Sofia"})
    assert tuple(await channel(pool)) == ("Alice and Sofia", "alice-and-sofia")
    created = (await take(pool))[0]
    assert created[0] == "messaging.channel.created" and created[1]["name"] == "Alice and Sofia"


async def test_the_name_follows_members_until_the_room_gets_one(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    await open_dm(feed, {ALICE: "Alice", BOT: None})
    assert tuple(await channel(pool)) == ("Alice", "alice")
    await take(pool)

    await feed.send([joined(BOB, "Bob")])
    assert (await channel(pool))["name"] == "Alice and Bob"
    await feed.send([joined(CAROL)])  # no display name: the localpart
    assert (await channel(pool))["name"] == "Alice and 2 others"
    await feed.send([member(BOB, "leave")])
    assert (await channel(pool))["name"] == "Alice and carol"
    await feed.send([joined(CAROL, "Carol")])  # a profile change
    assert (await channel(pool))["name"] == "Alice and Carol"
    renames = [p["name"] for s, p in await take(pool) if s == "messaging.channel.updated"]
    assert renames == ["Alice and Bob", "Alice and 2 others", "Alice and carol", "Alice and Carol"]

    # A real name wins, and members no longer rename the channel; the slug never changes.
    await feed.send([event("m.room.name", {"name": "Plans"}, state_key="")])
    await feed.send([joined(BOB, "Bob")])
    assert tuple(await channel(pool)) == ("Plans", "alice")
    # The name removed: named after the members again.
    await feed.send([event("m.room.name", {}, state_key="")])
    assert tuple(await channel(pool)) == ("Alice and 2 others", "alice")


async def test_a_named_room_keeps_its_name(pool: asyncpg.Pool, feed: Feed) -> None:
    snapshot = snapshot_from_state(ROOM, announce.state([ALICE, BOT]), BOT)
    await feed.send([], [ChannelSetup(snapshot, "microdao:core", ALICE, BOT)])
    await feed.send([joined(BOB, "Bob")])
    assert tuple(await channel(pool)) == ("General", "general")
