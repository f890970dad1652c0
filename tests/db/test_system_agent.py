"""The bridge's bot is the `system` agent (issue 19, item 7), on the real PostgreSQL: its
answers are agent messages, its membership an agent's, it has no sessions, it is never
counted as a person, and rows from before it was one are moved to it."""

from __future__ import annotations

import asyncpg
import pytest

from daarion_bridge.agents.sync import SyncReport, make_bot_the_system_agent, write_roster
from daarion_bridge.config.roster import Roster
from daarion_bridge.db import system_agent
from daarion_bridge.ids import SYSTEM_AGENT_ID, SYSTEM_BLUEPRINT
from daarion_bridge.ingest.channel_setup import ChannelSetup
from daarion_bridge.translate.rooms import snapshot_from_state
from tests.db.matrix_events import event, member, text
from tests.db.test_announce import (
    ALICE,
    BOT,
    ROOM,
    ROSTER,
    SOFIA,
    Feed,
    channel_with_sofia,
    state,
    take,
)


def with_bot(microdao: str = "microdao:core", inviter: str = ALICE) -> ChannelSetup:
    """ROOM becomes a channel with Alice and the bot in it."""
    return ChannelSetup(snapshot_from_state(ROOM, state([ALICE, BOT])), microdao, inviter, BOT)


def notice(body: str, sender: str = BOT) -> dict:
    return event("m.room.message", {"msgtype": "m.notice", "body": body}, sender)


async def bot_row(pool: asyncpg.Pool) -> asyncpg.Record:
    return await pool.fetchrow(
        "SELECT a.id, a.kind, a.name, a.matrix_id, b.code FROM agents a "
        "JOIN agent_blueprints b ON b.id = a.blueprint_id WHERE a.external_id = $1",
        SYSTEM_AGENT_ID,
    )


@pytest.fixture
async def feed(pool: asyncpg.Pool) -> Feed:
    async with pool.acquire() as conn, conn.transaction():
        await write_roster(conn, ROSTER, {}, SyncReport())
    await make_bot_the_system_agent(pool, BOT, "DAARION")
    return Feed(pool)


async def test_the_bot_is_an_agent_of_kind_system_with_its_own_blueprint(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    row = await bot_row(pool)
    assert (row["kind"], row["name"], row["matrix_id"], row["code"]) == (
        "system", "DAARION", BOT, SYSTEM_BLUEPRINT,
    )  # fmt: skip
    await make_bot_the_system_agent(pool, BOT, "DAARION bridge")  # a later start: same row
    again = await bot_row(pool)
    assert (again["id"], again["name"]) == (row["id"], "DAARION bridge")
    assert await pool.fetchval("SELECT count(*) FROM agents WHERE kind = 'system'") == 1


async def test_the_bots_notice_is_an_agent_message_and_its_join_an_agents(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    await feed.send([], [with_bot()])
    joined = [p for s, p in await take(pool) if s == "messaging.member.joined"]
    assert {(p["member_id"], p["member_type"]) for p in joined} >= {(SYSTEM_AGENT_ID, "agent")}
    await feed.send([notice("Commands: help, agents, invite")])
    row = await bot_row(pool)
    message = await pool.fetchrow(
        "SELECT sender_type, sender_user_id, sender_agent_id FROM messages"
    )
    assert tuple(message) == ("agent", None, row["id"])
    [created] = [p for s, p in await take(pool) if s == "messaging.message.created"]
    assert (created["sender_id"], created["sender_type"]) == (SYSTEM_AGENT_ID, "agent")
    roles = await pool.fetch(
        "SELECT member_user_id, member_agent_id, role FROM channel_members WHERE left_at IS NULL"
    )
    assert (None, row["id"], "agent") in [tuple(r) for r in roles]
    assert await pool.fetchval("SELECT count(*) FROM users WHERE matrix_id = $1", BOT) == 0
    # Nothing invokes it, so it has no sessions, neither from its join nor its messages.
    assert await pool.fetchval(
        "SELECT count(*) FROM agent_sessions WHERE agent_id = $1", row["id"]
    ) == 0  # fmt: skip


async def test_the_bot_is_not_a_second_agent_when_a_person_is_alone_with_one(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    await feed.send([], [with_bot()])
    await feed.send([member(SOFIA, "join")])
    await take(pool)
    await feed.send([text("what is on today?")])  # no mention: only the direct rule calls
    calls = [p for s, p in await take(pool) if s == "router.invoke.agent"]
    assert [(c["agent_id"], c["entrypoint"]) for c in calls] == [("agent:sofia", "direct")]


async def test_a_mention_of_the_bots_name_calls_nobody(pool: asyncpg.Pool, feed: Feed) -> None:
    await channel_with_sofia(pool, feed)
    await feed.send([member(BOT, "join")])
    await take(pool)
    await feed.send([text(f"DAARION and {BOT}, are you there?")])
    assert [s for s, _ in await take(pool) if s == "router.invoke.agent"] == []


async def test_rows_of_the_bot_as_a_person_move_to_the_system_agent(pool: asyncpg.Pool) -> None:
    """A database from before: the bot was a person, with a membership and a message."""
    async with pool.acquire() as conn, conn.transaction():
        await write_roster(conn, ROSTER, {}, SyncReport())
    feed = Feed(pool)
    await feed.send([], [with_bot()])
    await feed.send([notice("Commands: help")])
    assert await pool.fetchval("SELECT sender_type FROM messages") == "human"  # as it was
    await make_bot_the_system_agent(pool, BOT, "DAARION")
    row = await bot_row(pool)
    assert tuple(await pool.fetchrow("SELECT sender_type, sender_agent_id FROM messages")) == (
        "agent", row["id"],
    )  # fmt: skip
    members = await pool.fetch(
        "SELECT m.member_agent_id, m.role FROM channel_members m "
        "LEFT JOIN users u ON u.id = m.member_user_id WHERE u.matrix_id = $1 "
        "OR m.member_agent_id = $2",
        BOT,
        row["id"],
    )
    assert [tuple(m) for m in members] == [(row["id"], "agent")]
    # Once moved, a later start finds nothing left to move.
    async with pool.acquire() as conn:
        assert (await system_agent.ensure(conn, BOT, "DAARION"))[1:] == (0, 0)


async def test_a_config_without_agents_keeps_the_bot_in_its_rooms(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    await feed.send([], [with_bot()])
    report = SyncReport()
    async with pool.acquire() as conn, conn.transaction():
        leaving = await write_roster(conn, Roster(), {}, report)
    assert SYSTEM_AGENT_ID not in report.removed
    assert BOT not in [matrix_id for matrix_id, _ in leaving]


async def test_the_undeclared_default_microdao_is_still_owned_by_the_bot(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    """The schema wants a person as owner: the bot keeps a users row for that alone."""
    await feed.send([], [with_bot("microdao:lobby", inviter=BOT)])
    owner = await pool.fetchval(
        "SELECT u.matrix_id FROM microdaos d JOIN users u ON u.id = d.owner_user_id "
        "WHERE d.external_id = 'microdao:lobby'"
    )
    assert owner == BOT
    created_by = await pool.fetchrow("SELECT created_by_user_id, created_by_agent_id FROM channels")
    assert tuple(created_by) == (None, (await bot_row(pool))["id"])
    assert await pool.fetchval(
        "SELECT count(*) FROM channel_members m JOIN users u ON u.id = m.member_user_id "
        "WHERE u.matrix_id = $1", BOT,
    ) == 0  # fmt: skip
