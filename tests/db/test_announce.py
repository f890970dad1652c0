"""Every indexed change becomes an outbox event in the same commit (NATS on)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from daarion_bridge.agents.sync import SyncReport, write_roster
from daarion_bridge.config.roster import parse_roster
from daarion_bridge.db.bookkeeping import events_digest
from daarion_bridge.ingest.channel_setup import ChannelSetup
from daarion_bridge.ingest.items import Announce, Rejected
from daarion_bridge.ingest.writer import write_transaction
from daarion_bridge.translate.agents import AgentDirectory
from daarion_bridge.translate.events import translate_event
from daarion_bridge.translate.preview import BadEvent
from daarion_bridge.translate.rooms import snapshot_from_state
from tests.db.matrix_events import event, member, text

BOT = "@daarion:localhost"
ALICE, BOB = "@alice:localhost", "@bob:localhost"
SOFIA = "@agent-sofia:localhost"
ROOM = "!room:localhost"
ROSTER = parse_roster(
    Path("config.yaml"),
    {
        "microdaos": [{"external_id": "microdao:core", "name": "Core", "owner": ALICE}],
        "blueprints": [{"code": "guide", "model": "m"}],
        "agents": [
            {
                "external_id": "agent:sofia",
                "name": "Sofia",
                "kind": "assistant",
                "blueprint": "guide",
                "microdao": "microdao:core",
            }
        ],
    },
    domain="localhost",
    template="agent-{name}",
    bot_localpart="daarion",
)
DIRECTORY = AgentDirectory(ROSTER)


def state(joined: list[str]) -> list[dict]:
    base = [
        {"type": "m.room.create", "state_key": "", "sender": ALICE,
         "content": {"room_version": "12"}},
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "invite"}},
        {"type": "m.room.name", "state_key": "", "content": {"name": "General"}},
    ]  # fmt: skip
    return base + [
        {"type": "m.room.member", "state_key": u, "content": {"membership": "join"}} for u in joined
    ]


class Feed:
    def __init__(self, pool: asyncpg.Pool, invoke_agents: bool = True) -> None:
        self.pool = pool
        self.n = itertools.count(1)
        self.invoke_agents = invoke_agents

    async def send(
        self, events: list[dict], setups: list[ChannelSetup] = (), backfill: bool = False
    ) -> Any:
        items = []
        for e in events:
            try:
                items.append(translate_event(e, bot_mxid=BOT, preview_length=50, agents=DIRECTORY))
            except BadEvent as err:
                items.append(Rejected(e, str(err)))
        async with self.pool.acquire() as conn:
            return await write_transaction(
                conn,
                f"t{next(self.n)}",
                events_digest(events),
                items,
                setups,
                announce=Announce(BOT, self.invoke_agents),
                backfill=backfill,
            )


async def outbox(pool: asyncpg.Pool) -> list[tuple[str, dict]]:
    rows = await pool.fetch("SELECT subject, payload::text FROM bridge_outbox ORDER BY id")
    return [(r["subject"], json.loads(r["payload"])) for r in rows]


async def take(pool: asyncpg.Pool) -> list[tuple[str, dict]]:
    found = await outbox(pool)
    await pool.execute("DELETE FROM bridge_outbox")
    return found


async def open_channel(pool: asyncpg.Pool, feed: Feed) -> None:
    """ROOM becomes a channel with Alice in it; its own announcements are taken away."""
    await feed.send(
        [], [ChannelSetup(snapshot_from_state(ROOM, state([ALICE])), "microdao:core", ALICE, BOT)]
    )
    await take(pool)


async def channel_with_sofia(pool: asyncpg.Pool, feed: Feed) -> None:
    """ROOM becomes a channel with Alice and Bob in it, then Sofia joins; the
    announcements so far are taken away."""
    await feed.send(
        [],
        [ChannelSetup(snapshot_from_state(ROOM, state([ALICE, BOB])), "microdao:core", ALICE, BOT)],
    )
    await feed.send([member(SOFIA, "join")])
    await take(pool)


@pytest.fixture
async def feed(pool: asyncpg.Pool) -> Feed:
    async with pool.acquire() as conn, conn.transaction():
        await write_roster(conn, ROSTER, {}, SyncReport())
    return Feed(pool)


async def test_channel_setup_announces_channel_and_members(pool: asyncpg.Pool, feed: Feed) -> None:
    setup = ChannelSetup(
        snapshot_from_state(ROOM, state([ALICE, BOB, BOT])), "microdao:core", ALICE, BOT, "$inv"
    )
    await feed.send([], [setup])
    found = await take(pool)
    assert [s for s, _ in found] == ["messaging.channel.created"] + ["messaging.member.joined"] * 3
    created = found[0][1]
    assert created["microdao_id"] == "microdao:core"
    assert (created["name"], created["slug"], created["visibility"]) == (
        "General",
        "general",
        "private",
    )
    assert {p["member_id"] for _, p in found[1:]} == {f"matrix:{u}" for u in (ALICE, BOB, BOT)}


async def test_message_edit_and_redaction_events(pool: asyncpg.Pool, feed: Feed) -> None:
    await feed.send(
        [],
        [ChannelSetup(snapshot_from_state(ROOM, state([ALICE, BOT])), "microdao:core", ALICE, BOT)],
    )
    await take(pool)
    hello = text("hello there")
    await feed.send([hello])
    ((subject, created),) = await take(pool)
    assert subject == "messaging.message.created"
    assert created["matrix_event_id"] == hello["event_id"]
    assert (created["sender_id"], created["sender_type"]) == (f"matrix:{ALICE}", "human")
    assert created["content_preview"] == "hello there"
    assert created["created_at"].endswith("Z") and created["microdao_id"] == "microdao:core"
    row_id = await pool.fetchval(
        "SELECT id::text FROM messages WHERE matrix_event_id = $1", hello["event_id"]
    )
    assert created["message_id"] == row_id

    edit = text(
        "* hi",
        **{
            "m.new_content": {"msgtype": "m.text", "body": "hi"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": hello["event_id"]},
        },
    )
    await feed.send([edit])
    ((subject, updated),) = await take(pool)
    assert subject == "messaging.message.updated"
    assert (updated["message_id"], updated["content_preview"]) == (row_id, "hi")

    await feed.send([hello])  # a replay under a new id: nothing changed, nothing announced
    assert await take(pool) == []

    redaction = event("m.room.redaction", {"redacts": hello["event_id"]}, redacts=hello["event_id"])
    await feed.send([redaction])
    ((subject, deleted),) = await take(pool)
    assert subject == "messaging.message.deleted" and deleted["message_id"] == row_id


async def test_mentions_and_direct_rooms_invoke_agents_but_agents_never_do(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    await channel_with_sofia(pool, feed)

    await feed.send([text("Sofia, what's on today?", BOB), text("nobody is called here", BOB)])
    invokes = [p for s, p in await take(pool) if s == "router.invoke.agent"]
    assert len(invokes) == 1
    assert (invokes[0]["agent_id"], invokes[0]["entrypoint"]) == ("agent:sofia", "channel_message")
    assert invokes[0]["payload"]["microdao_id"] == "microdao:core"

    await feed.send([text("Sofia, thanks", SOFIA)])  # loop rule
    assert [s for s, _ in await take(pool)] == ["messaging.message.created"]

    await feed.send([member(BOB, "leave")])  # ALICE is now alone with Sofia: a direct room
    await take(pool)
    await feed.send([text("any plans?", ALICE)])
    invokes = [p for s, p in await take(pool) if s == "router.invoke.agent"]
    assert [(p["agent_id"], p["entrypoint"]) for p in invokes] == [("agent:sofia", "direct")]


@pytest.mark.parametrize("others", [0, 1, 2, 3])
async def test_a_direct_room_is_one_person_the_bot_and_one_agent(
    pool: asyncpg.Pool, feed: Feed, others: int
) -> None:
    """With the bot, Alice, Sofia and `others` more people, Alice's message calls Sofia
    directly only when nobody else is there (the query reads at most three people)."""
    people = [f"@p{i}:localhost" for i in range(others)]
    snapshot = snapshot_from_state(ROOM, state([BOT, ALICE, *people]))
    await feed.send([], [ChannelSetup(snapshot, "microdao:core", ALICE, BOT)])
    await feed.send([member(SOFIA, "join")])
    await take(pool)
    await feed.send([text("any plans?", ALICE), text("and you?", BOT)])
    invokes = [(p["agent_id"], p["entrypoint"]) for s, p in await take(pool) if "invoke" in s]
    assert invokes == ([("agent:sofia", "direct")] if not others else [])
    if others:
        await feed.send([member(p, "leave") for p in people])
        await take(pool)
        await feed.send([text("now?", ALICE)])
        invokes = [(p["agent_id"], p["entrypoint"]) for s, p in await take(pool) if "invoke" in s]
        assert invokes == [("agent:sofia", "direct")]


async def test_membership_events(pool: asyncpg.Pool, feed: Feed) -> None:
    await open_channel(pool, feed)
    await feed.send([member(BOB, "invite", ALICE), member(BOB, "join"), member(BOB, "join")])
    assert [s for s, _ in await take(pool)] == [
        "messaging.member.invited",
        "messaging.member.joined",
    ]
    await feed.send([member(SOFIA, "join"), member(SOFIA, "leave"), member(BOB, "leave")])
    found = await take(pool)
    assert [(s, p["member_type"]) for s, p in found] == [
        ("messaging.member.joined", "agent"),
        ("messaging.member.left", "agent"),
        ("messaging.member.left", "human"),
    ]
    assert found[0][1]["member_id"] == "agent:sofia" and found[0][1]["role"] == "agent"


async def test_membership_announcements_keep_the_events_order(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    await open_channel(pool, feed)
    rename = event("m.room.name", {"name": "Town hall"}, state_key="")
    await feed.send([member(BOB, "join"), rename, member(BOB, "leave"), member(BOB, "join")])
    assert [s for s, _ in await take(pool)] == [
        "messaging.member.joined",
        "messaging.channel.updated",
        "messaging.member.left",
        "messaging.member.joined",
    ]


async def test_room_name_change_announces_channel_updated_once(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    await open_channel(pool, feed)
    rename = event("m.room.name", {"name": "Town hall"}, state_key="")
    await feed.send([rename, event("m.room.name", {"name": "Town hall"}, state_key="")])
    found = await take(pool)
    assert [(s, p.get("name")) for s, p in found] == [("messaging.channel.updated", "Town hall")]


async def test_without_nats_nothing_is_written_to_the_outbox(pool: asyncpg.Pool) -> None:
    setup = ChannelSetup(snapshot_from_state(ROOM, state([ALICE])), "microdao:core", ALICE, BOT)
    async with pool.acquire() as conn:
        await write_transaction(conn, "t1", events_digest([]), [], [setup])
    assert await outbox(pool) == []


async def test_inviting_an_agent_into_a_channel_is_announced(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    await open_channel(pool, feed)
    await feed.send([member(SOFIA, "invite", ALICE)])
    found = await take(pool)
    assert [(s, p["member_id"], p["member_type"]) for s, p in found] == [
        ("messaging.member.invited", "agent:sofia", "agent")
    ]


async def test_a_notice_naming_an_agent_calls_nobody_but_counts_as_activity(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    """m.notice is for automated senders, never answered automatically (issue 17, item
    6): a third-party bot's notice that names Sofia invokes nobody, in a channel or in a
    room where its sender is alone with her, but still moves her session."""
    await channel_with_sofia(pool, feed)
    before = await pool.fetchval("SELECT max(last_activity_at) FROM agent_sessions")

    notice = text("Sofia, build finished", BOB, msgtype="m.notice")
    await feed.send([notice])
    assert [s for s, _ in await take(pool)] == ["messaging.message.created"]
    after = await pool.fetchval("SELECT max(last_activity_at) FROM agent_sessions")
    assert after > before

    await feed.send([member(BOB, "leave")])  # ALICE alone with Sofia: a direct room
    await take(pool)
    await feed.send([text("any plans?", ALICE, msgtype="m.notice")])
    assert [s for s, _ in await take(pool)] == ["messaging.message.created"]
    await feed.send([text("any plans?", ALICE)])  # the same words as text do call her
    assert "router.invoke.agent" in [s for s, _ in await take(pool)]


async def test_with_invoke_agents_off_nothing_is_invoked_and_sessions_still_move(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    """nats.invoke_agents false (issue 17, item 5): the platform's own router invokes
    agents; the bridge publishes every other event and keeps sessions as before."""
    off = Feed(pool, invoke_agents=False)
    await channel_with_sofia(pool, off)
    before = await pool.fetchval("SELECT max(last_activity_at) FROM agent_sessions")
    await off.send([text("Sofia, what's on today?", BOB)])
    assert [s for s, _ in await take(pool)] == ["messaging.message.created"]
    assert await pool.fetchval("SELECT max(last_activity_at) FROM agent_sessions") > before
    await off.send([member(BOB, "leave")])
    await take(pool)
    await off.send([text("any plans?", ALICE)])  # alone with Sofia: still no call
    assert [s for s, _ in await take(pool)] == ["messaging.message.created"]


async def test_a_question_in_a_thread_is_indexed_and_announced_with_its_thread(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    """Threads in the index, ERD untouched (issue 17, items 2 and 4)."""
    await channel_with_sofia(pool, feed)
    root = text("lunch plans")
    await feed.send([root])
    in_thread = {
        "rel_type": "m.thread",
        "event_id": root["event_id"],
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": root["event_id"]},
    }
    question = text("Sofia, where?", BOB, **{"m.relates_to": in_thread})
    await feed.send([question])
    found = dict(await take(pool))
    assert found["messaging.message.created"]["thread_root"] == root["event_id"]
    invoked = found["router.invoke.agent"]["payload"]
    assert (invoked["thread_root"], invoked["reply_to"]) == (root["event_id"], None)
    rows = await pool.fetch("SELECT matrix_event_id, thread_root FROM bridge_message_threads")
    assert [tuple(r) for r in rows] == [(question["event_id"], root["event_id"])]

    reply = text("Sofia?", BOB, **{"m.relates_to": {"m.in_reply_to": {"event_id": "$x"}}})
    await feed.send([reply])
    found = dict(await take(pool))
    assert found["messaging.message.created"]["thread_root"] is None
    invoked = found["router.invoke.agent"]["payload"]
    assert (invoked["thread_root"], invoked["reply_to"]) == (None, "$x")
