"""The bot joins a channel it was in before (re-invited): the room's state then is the
truth, and who left while the bot was away leaves the channel too."""

from __future__ import annotations

import asyncpg

from daarion_bridge.db import members
from daarion_bridge.ingest.channel_setup import ChannelSetup
from daarion_bridge.translate.rooms import snapshot_from_state
from tests.db import test_announce as announce
from tests.db.matrix_events import member
from tests.db.test_agents import (
    ALICE,
    BOB,
    BOT,
    CAROL,
    DAVE,
    ROOM,
    SOFIA,
    Feed,
    agent_id,
    agent_member,
    apply,
    make_roster,
    sessions_of,
    setup,
)


async def present(pool: asyncpg.Pool) -> set[str]:
    rows = await pool.fetch(
        "SELECT COALESCE(u.matrix_id, a.matrix_id) AS m FROM channel_members c "
        "LEFT JOIN users u ON u.id = c.member_user_id "
        "LEFT JOIN agents a ON a.id = c.member_agent_id WHERE c.left_at IS NULL"
    )
    return {r["m"] for r in rows}


async def test_members_who_left_while_the_bot_was_away_leave(pool: asyncpg.Pool) -> None:
    roster = make_roster()
    await apply(pool, roster)
    feed = Feed(pool, roster, isolate=False)
    await feed.send([], [setup(joined=[CAROL, SOFIA])])
    await feed.send([member(DAVE, "join")])
    assert await present(pool) == {ALICE, BOB, BOT, CAROL, DAVE, SOFIA}
    # The bot was kicked, Carol, Dave and Sofia left meanwhile; the bot is invited back.
    await feed.send([], [setup()])
    assert await present(pool) == {ALICE, BOB, BOT}
    sofia = await agent_member(pool, SOFIA)
    assert sofia is not None and sofia["left_at"] is not None
    assert [s["status"] for s in await sessions_of(pool, SOFIA)] == ["closed"]
    # Whoever is listed again is back.
    await feed.send([], [setup(joined=[SOFIA])])
    assert await present(pool) == {ALICE, BOB, BOT, SOFIA}


async def test_a_ghost_no_longer_stops_a_direct_call(pool: asyncpg.Pool) -> None:
    """Alice alone with Sofia (and the bot) calls Sofia `direct`: Bob, gone while the bot
    was away, must not count as a third person."""
    roster = make_roster()
    await apply(pool, roster)
    feed = Feed(pool, roster, isolate=False)

    def setup_with(joined: list[str]) -> ChannelSetup:
        snapshot = snapshot_from_state(ROOM, announce.state(joined))
        return ChannelSetup(snapshot, "microdao:core", ALICE, BOT)

    await feed.send([], [setup_with([ALICE, BOB, BOT, SOFIA])])
    await feed.send([], [setup_with([ALICE, BOT, SOFIA])])
    channel_id = await pool.fetchval("SELECT id FROM channels")
    async with pool.acquire() as conn:
        company = (await members.company_of(conn, [channel_id]))[channel_id]
    assert company.direct_agent([ALICE, BOT]) == await agent_id(pool, SOFIA)


async def test_the_departures_are_announced(pool: asyncpg.Pool) -> None:
    feed = announce.Feed(pool)
    for joined in ([ALICE, BOB], [ALICE]):
        snapshot = snapshot_from_state(ROOM, announce.state(joined))
        await announce.take(pool)
        await feed.send([], [ChannelSetup(snapshot, "microdao:core", ALICE, BOT)])
    found = await announce.take(pool)
    assert [(s, p["member_id"]) for s, p in found] == [("messaging.member.left", f"matrix:{BOB}")]
