"""Agents in the index, on a real PostgreSQL: the roster written by agents.sync, agent
members, messages and sessions written by write_transaction, the idle sweep, and
microDAO roles. No homeserver: write_roster is the database side of a config apply."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from daarion_bridge.agents.sync import SyncReport, write_roster
from daarion_bridge.config.roster import Roster, parse_roster
from daarion_bridge.db import members, microdaos, sessions, spaces
from daarion_bridge.db.bookkeeping import events_digest
from daarion_bridge.ingest.channel_setup import ChannelSetup
from daarion_bridge.ingest.items import Outcome, Rejected
from daarion_bridge.ingest.writer import write_transaction
from daarion_bridge.translate.agents import AgentDirectory
from daarion_bridge.translate.events import translate_event
from daarion_bridge.translate.preview import BadEvent
from daarion_bridge.translate.rooms import snapshot_from_state
from tests.db.matrix_events import event, member, text

BOT = "@daarion:localhost"
ALICE, BOB, CAROL, DAVE = (f"@{n}:localhost" for n in ("alice", "bob", "carol", "dave"))
SOFIA, PRIME, HELPER = "@agent-sofia:localhost", "@agent-prime:localhost", "@helper:localhost"
ROOM, ROOM2 = "!room:localhost", "!room2:localhost"
DAO = "microdao:core"
# Events an hour old: recent, but older than any idle timeout a test sweeps with.


def ts_of(ev: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(ev["origin_server_ts"] / 1000, UTC)


# --- the roster ---------------------------------------------------------------------


def raw_roster(
    agents: Sequence[dict[str, Any]] | None = None,
    members: dict[str, str] | None = None,
    owner: str = ALICE,
    blueprints: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    default_agents = [
        {"external_id": "agent:sofia", "name": "Sofia", "kind": "assistant",
         "blueprint": "guide", "microdao": DAO, "owner": ALICE},
        {"external_id": "agent:prime", "name": "Prime", "kind": "system", "blueprint": "guide"},
        {"external_id": "agent:helper", "name": "Helper", "kind": "node", "blueprint": "worker",
         "localpart": "helper", "owner": CAROL},
    ]  # fmt: skip
    default_blueprints = [
        {"code": "guide", "model": "gpt-4.1", "description": "City guide",
         "capabilities": {"tools": ["search", "summarize"]}},
        {"code": "worker", "model": "small"},
    ]  # fmt: skip
    return {
        "microdaos": [
            {
                "external_id": DAO,
                "name": "DAARION Core",
                "owner": owner,
                "members": {BOB: "member"} if members is None else members,
            }
        ],
        "blueprints": default_blueprints if blueprints is None else list(blueprints),
        "agents": default_agents if agents is None else list(agents),
    }


def make_roster(raw: dict[str, Any] | None = None) -> Roster:
    return parse_roster(
        Path("config.yaml"),
        raw or raw_roster(),
        domain="localhost",
        template="agent-{name}",
        bot_localpart="daarion",
    )


async def apply(
    pool: asyncpg.Pool, roster: Roster, space_ids: dict[str, str] | None = None
) -> tuple[list[tuple[str, list[str]]], SyncReport]:
    report = SyncReport()
    async with pool.acquire() as conn, conn.transaction():
        leaving = await write_roster(conn, roster, space_ids or {}, report)
    return leaving, report


# --- events -------------------------------------------------------------------------


def room_state(room_id: str = ROOM, joined: Sequence[str] = ()) -> list[dict[str, Any]]:
    people = [ALICE, BOB, BOT, *joined]
    return [
        {"type": "m.room.create", "state_key": "", "sender": ALICE,
         "content": {"room_version": "12"}},
        {"type": "m.room.power_levels", "state_key": "", "sender": ALICE,
         "content": {"users": {BOB: 50}, "users_default": 0}},
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "invite"}},
        {"type": "m.room.name", "state_key": "", "content": {"name": room_id[1:6]}},
        *({"type": "m.room.member", "state_key": m, "content": {"membership": "join"}}
          for m in people),
    ]  # fmt: skip


def setup(room_id: str = ROOM, joined: Sequence[str] = ()) -> ChannelSetup:
    return ChannelSetup(snapshot_from_state(room_id, room_state(room_id, joined)), DAO, ALICE, BOT)


class Feed:
    """Sends transactions the way ingest does: events translated with the agent directory."""

    def __init__(self, pool: asyncpg.Pool, roster: Roster, isolate: bool) -> None:
        self.pool = pool
        self.agents = AgentDirectory(roster)
        self.isolate = isolate  # the slow path: one savepoint per operation
        self.counter = itertools.count(1)

    def items(self, events: Sequence[Any]) -> list[Any]:
        items = []
        for e in events:
            try:
                items.append(
                    translate_event(e, bot_mxid=BOT, preview_length=50, agents=self.agents)
                )
            except BadEvent as err:
                items.append(Rejected(e, str(err)))
        return items

    async def send(
        self,
        events: Sequence[Any],
        setups: Sequence[ChannelSetup] = (),
        txn_id: str | None = None,
    ) -> Outcome:
        txn_id = txn_id or f"t{next(self.counter)}"
        async with self.pool.acquire() as conn:
            return await write_transaction(
                conn,
                txn_id,
                events_digest(events),
                self.items(events),
                setups,
                events=list(events) if self.isolate else None,
            )


@pytest.fixture(params=[False, True], ids=["batched", "isolated"])
async def feed(pool: asyncpg.Pool, request: pytest.FixtureRequest) -> Feed:
    """The roster in the database and one channel, ROOM, with Alice, Bob and the bot."""
    roster = make_roster()
    await apply(pool, roster)
    f = Feed(pool, roster, isolate=request.param)
    await f.send([], [setup()])
    return f


# --- queries --------------------------------------------------------------------------


async def agent_id(pool: asyncpg.Pool, matrix_id: str) -> UUID:
    found = await pool.fetchval("SELECT id FROM agents WHERE matrix_id = $1", matrix_id)
    assert found is not None, matrix_id
    return found


async def sessions_of(pool: asyncpg.Pool, matrix_id: str, room: str = ROOM) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT s.* FROM agent_sessions s JOIN agents a ON a.id = s.agent_id "
        "JOIN channels c ON c.id = s.channel_id WHERE a.matrix_id = $1 AND c.matrix_room_id = $2 "
        "ORDER BY s.started_at, s.status = 'closed' DESC",
        matrix_id,
        room,
    )


async def open_session(pool: asyncpg.Pool, matrix_id: str, room: str = ROOM) -> asyncpg.Record:
    found = [s for s in await sessions_of(pool, matrix_id, room) if s["status"] != "closed"]
    assert len(found) == 1, found
    return found[0]


async def agent_member(
    pool: asyncpg.Pool, matrix_id: str, room: str = ROOM
) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT m.* FROM channel_members m JOIN agents a ON a.id = m.member_agent_id "
        "JOIN channels c ON c.id = m.channel_id WHERE a.matrix_id = $1 AND c.matrix_room_id = $2",
        matrix_id,
        room,
    )


async def check_invariants(pool: asyncpg.Pool) -> None:
    """What must hold after every transaction, over the whole tables."""
    doubled = await pool.fetch(
        "SELECT agent_id, channel_id, count(*) FROM agent_sessions WHERE status <> 'closed' "
        "GROUP BY agent_id, channel_id HAVING count(*) > 1"
    )
    assert doubled == [], "more than one open session for an (agent, channel)"
    bad_senders = await pool.fetchval(
        "SELECT count(*) FROM messages WHERE (sender_user_id IS NULL) = (sender_agent_id IS NULL) "
        "OR sender_type IS DISTINCT FROM "
        "CASE WHEN sender_agent_id IS NULL THEN 'human' ELSE 'agent' END"
    )
    assert bad_senders == 0, "a message without exactly one sender, or with the wrong type"
    bad_members = await pool.fetchval(
        "SELECT count(*) FROM channel_members WHERE (member_user_id IS NULL) = "
        "(member_agent_id IS NULL) OR (member_agent_id IS NOT NULL) <> (role = 'agent')"
    )
    assert bad_members == 0, "a member row without exactly one member, or a wrong agent role"
    # A present agent has exactly one session that is not closed.
    present_without = await pool.fetchval(
        "SELECT count(*) FROM channel_members m WHERE m.member_agent_id IS NOT NULL "
        "AND m.left_at IS NULL AND NOT EXISTS (SELECT 1 FROM agent_sessions s "
        "WHERE s.agent_id = m.member_agent_id AND s.channel_id = m.channel_id "
        "AND s.status <> 'closed')"
    )
    assert present_without == 0, "an agent in a channel without an open session"


async def table_rows(pool: asyncpg.Pool) -> dict[str, list[tuple[Any, ...]]]:
    tables = {
        "messages": "SELECT * FROM messages ORDER BY matrix_event_id",
        "channel_members": "SELECT * FROM channel_members ORDER BY id",
        "agent_sessions": "SELECT * FROM agent_sessions ORDER BY id",
        "users": "SELECT * FROM users ORDER BY id",
        "agents": "SELECT * FROM agents ORDER BY id",
        "agent_blueprints": "SELECT * FROM agent_blueprints ORDER BY id",
        "microdaos": "SELECT * FROM microdaos ORDER BY id",
        "microdao_members": "SELECT * FROM microdao_members ORDER BY id",
        "bridge_spaces": "SELECT * FROM bridge_spaces ORDER BY room_id",
    }
    return {name: [tuple(r) for r in await pool.fetch(sql)] for name, sql in tables.items()}


async def backdate_sessions(pool: asyncpg.Pool, seconds: float) -> None:
    await pool.execute(
        "UPDATE agent_sessions SET last_activity_at = now() - make_interval(secs => $1), "
        "started_at = now() - make_interval(secs => $1)",
        float(seconds),
    )


# --- joining, messages, mentions -------------------------------------------------------


async def test_agent_join_adds_an_agent_member_and_opens_a_session(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    join = member(SOFIA, "join")
    outcome = await feed.send([join])
    assert outcome.applied["Membership"] == 1
    row = await agent_member(pool, SOFIA)
    assert row is not None
    assert row["member_user_id"] is None
    assert row["role"] == "agent"
    assert row["joined_at"] == ts_of(join)
    assert row["left_at"] is None
    (session,) = await sessions_of(pool, SOFIA)
    assert session["status"] == "active"
    assert session["started_at"] == session["last_activity_at"] == ts_of(join)
    # The puppet is an agent, never a person.
    assert await pool.fetchval("SELECT count(*) FROM users WHERE matrix_id = $1", SOFIA) == 0
    await check_invariants(pool)


async def test_repeated_join_keeps_one_session(pool: asyncpg.Pool, feed: Feed) -> None:
    """A profile change is a join too: it neither opens a second session nor moves
    joined_at."""
    first = member(SOFIA, "join")
    await feed.send([first])
    await feed.send([member(SOFIA, "join")])
    await feed.send([member(SOFIA, "join"), member(SOFIA, "join")])
    assert len(await sessions_of(pool, SOFIA)) == 1
    assert (await agent_member(pool, SOFIA))["joined_at"] == ts_of(first)
    await check_invariants(pool)


async def test_agent_message_is_indexed_as_the_agent(pool: asyncpg.Pool, feed: Feed) -> None:
    await feed.send([member(SOFIA, "join"), member(HELPER, "join")])
    mine, people, helper = text("I can help", SOFIA), text("thanks", BOB), text("ok", HELPER)
    outcome = await feed.send([mine, people, helper])
    assert outcome.applied["NewMessage"] == 3
    rows = {
        r["matrix_event_id"]: r
        for r in await pool.fetch(
            "SELECT m.*, a.matrix_id AS agent_mxid, u.matrix_id AS user_mxid FROM messages m "
            "LEFT JOIN agents a ON a.id = m.sender_agent_id "
            "LEFT JOIN users u ON u.id = m.sender_user_id"
        )
    }
    agent_row = rows[mine["event_id"]]
    assert agent_row["sender_type"] == "agent"
    assert agent_row["agent_mxid"] == SOFIA
    assert agent_row["sender_user_id"] is None
    assert rows[helper["event_id"]]["agent_mxid"] == HELPER
    human = rows[people["event_id"]]
    assert human["sender_type"] == "human"
    assert human["user_mxid"] == BOB
    assert human["sender_agent_id"] is None
    # The agent's own message is activity.
    assert (await open_session(pool, SOFIA))["last_activity_at"] == ts_of(mine)
    await check_invariants(pool)


MENTIONS = {
    "name": lambda: text("sofia, where is the museum?"),
    "matrix id": lambda: text(f"{SOFIA} where is the museum?"),
    "m.mentions": lambda: text("where is it?", **{"m.mentions": {"user_ids": [SOFIA]}}),
    "pill": lambda: text(
        "S: hi", format="org.matrix.custom.html",
        formatted_body=f'<a href="https://matrix.to/#/{SOFIA}">S</a>: hi',
    ),
}  # fmt: skip


@pytest.mark.parametrize("how", list(MENTIONS))
async def test_human_mention_moves_the_session_and_wakes_it(
    pool: asyncpg.Pool, feed: Feed, how: str
) -> None:
    join = member(SOFIA, "join")
    await feed.send([join])
    await backdate_sessions(pool, 7200)
    assert await sessions.mark_idle(pool, 300) == 1
    assert (await open_session(pool, SOFIA))["status"] == "idle"
    mention = MENTIONS[how]()
    await feed.send([mention])
    session = await open_session(pool, SOFIA)
    assert session["status"] == "active"
    assert session["last_activity_at"] == ts_of(mention)
    assert len(await sessions_of(pool, SOFIA)) == 1
    # The mention is a person's message.
    assert (
        await pool.fetchval(
            "SELECT sender_type FROM messages WHERE matrix_event_id = $1", mention["event_id"]
        )
        == "human"
    )
    await check_invariants(pool)


async def test_older_activity_never_moves_last_activity_back(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    await feed.send([member(SOFIA, "join")])
    late = text("hello sofia")
    early = text("sofia?")
    early["origin_server_ts"] = late["origin_server_ts"] - 60_000
    await feed.send([late])
    await feed.send([early])
    assert (await open_session(pool, SOFIA))["last_activity_at"] == ts_of(late)


async def test_mention_of_an_agent_that_is_not_a_member_does_nothing(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    await feed.send([member(SOFIA, "join")])
    before = await table_rows(pool)
    # Prime was never in the room; Helper is in the roster but not here either.
    mention = text("Prime and Helper, anyone?", **{"m.mentions": {"user_ids": [PRIME]}})
    await feed.send([mention])
    after = await table_rows(pool)
    assert after["agent_sessions"] == before["agent_sessions"]
    assert after["channel_members"] == before["channel_members"]
    assert len(after["messages"]) == len(before["messages"]) + 1
    for mxid in (PRIME, HELPER):
        assert await sessions_of(pool, mxid) == []
        assert await agent_member(pool, mxid) is None


async def test_mention_right_after_the_agent_joins_in_one_transaction(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    """The room's agents are read before the transaction's writes: an agent that joins
    in it must still be one a later message of it can mention."""
    join = member(SOFIA, "join")
    mention = text("sofia, welcome")
    mention["origin_server_ts"] = join["origin_server_ts"] + 1000
    await feed.send([join, mention])
    assert (await open_session(pool, SOFIA))["last_activity_at"] == ts_of(mention)
    await check_invariants(pool)


async def test_a_name_is_matched_among_the_rooms_agents(pool: asyncpg.Pool, feed: Feed) -> None:
    """Only Sofia is here: "Sofia Prime" is the roster's Prime elsewhere, but in this room
    it can only mean Sofia (the roster's Prime is named Prime, so a longer name is made
    for the test)."""
    roster = make_roster(
        raw_roster(
            agents=[
                {
                    "external_id": "agent:sofia",
                    "name": "Sofia",
                    "kind": "assistant",
                    "blueprint": "guide",
                    "microdao": DAO,
                    "owner": ALICE,
                },
                {
                    "external_id": "agent:prime",
                    "name": "Sofia Prime",
                    "kind": "system",
                    "blueprint": "guide",
                },
            ]  # fmt: skip
        )
    )
    await apply(pool, roster)
    feed.agents = AgentDirectory(roster)
    await feed.send([member(SOFIA, "join")])
    mention = text("Sofia Prime, are you there?")
    await feed.send([mention])
    assert (await open_session(pool, SOFIA))["last_activity_at"] == ts_of(mention)
    assert await sessions_of(pool, PRIME) == []


async def test_mention_after_the_agent_left_does_not_reopen(pool: asyncpg.Pool, feed: Feed) -> None:
    await feed.send([member(SOFIA, "join")])
    await feed.send([member(SOFIA, "leave")])
    await feed.send([text("Sofia, come back!")])
    (session,) = await sessions_of(pool, SOFIA)
    assert session["status"] == "closed"
    await check_invariants(pool)


async def test_mention_in_another_channel_does_not_touch_this_session(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    await feed.send([], [setup(ROOM2)])
    await feed.send([member(SOFIA, "join"), member(SOFIA, "join", room=ROOM2)])
    before = await open_session(pool, SOFIA, ROOM)
    mention = text("sofia!", room=ROOM2)
    await feed.send([mention])
    assert await open_session(pool, SOFIA, ROOM) == before
    assert (await open_session(pool, SOFIA, ROOM2))["last_activity_at"] == ts_of(mention)


async def test_agent_message_does_not_wake_another_agent(pool: asyncpg.Pool, feed: Feed) -> None:
    """Loop rule: an agent saying another's name is not a mention."""
    await feed.send([member(SOFIA, "join"), member(PRIME, "join")])
    before = await open_session(pool, PRIME)
    await feed.send([text("Prime, over to you", SOFIA, **{"m.mentions": {"user_ids": [PRIME]}})])
    assert await open_session(pool, PRIME) == before


# --- leaving, closing, reopening --------------------------------------------------------


@pytest.mark.parametrize(
    ("membership", "by"), [("leave", None), ("leave", ALICE), ("ban", ALICE)],
    ids=["leave", "kick", "ban"],
)  # fmt: skip
async def test_leave_kick_ban_close_the_session(
    pool: asyncpg.Pool, feed: Feed, membership: str, by: str | None
) -> None:
    await feed.send([member(SOFIA, "join"), member(PRIME, "join")])
    gone = member(SOFIA, membership, sender=by)
    await feed.send([gone])
    (session,) = await sessions_of(pool, SOFIA)
    assert session["status"] == "closed"
    assert (await agent_member(pool, SOFIA))["left_at"] == ts_of(gone)
    # Another agent in the same channel is untouched.
    assert (await open_session(pool, PRIME))["status"] == "active"
    assert (await agent_member(pool, PRIME))["left_at"] is None
    await check_invariants(pool)


async def test_rejoin_after_close_opens_a_new_session(pool: asyncpg.Pool, feed: Feed) -> None:
    await feed.send([member(SOFIA, "join")])
    await feed.send([member(SOFIA, "leave")])
    rejoin = member(SOFIA, "join")
    await feed.send([rejoin])
    closed, current = await sessions_of(pool, SOFIA)
    assert closed["status"] == "closed"
    assert current["status"] == "active"
    assert current["id"] != closed["id"]
    assert current["started_at"] == ts_of(rejoin)
    row = await agent_member(pool, SOFIA)
    assert row["left_at"] is None and row["joined_at"] == ts_of(rejoin)
    # Activity now moves the new session only.
    said = text("back again", SOFIA)
    await feed.send([said])
    closed_after, current_after = await sessions_of(pool, SOFIA)
    assert closed_after == closed
    assert current_after["last_activity_at"] == ts_of(said)
    await check_invariants(pool)


async def test_join_and_leave_in_one_transaction(pool: asyncpg.Pool, feed: Feed) -> None:
    await feed.send([member(SOFIA, "join")])
    await feed.send([member(SOFIA, "leave"), member(SOFIA, "join")])
    assert (await open_session(pool, SOFIA))["status"] == "active"
    await feed.send([member(SOFIA, "join"), member(SOFIA, "leave")])
    assert all(s["status"] == "closed" for s in await sessions_of(pool, SOFIA))
    await check_invariants(pool)


async def test_goodbye_and_leave_in_one_transaction_leave_no_open_session(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    """The puppet says goodbye and leaves; Synapse pushes both in one transaction. The
    message's activity is recorded after the leave closed the session and must not open
    a new one for an agent that is no longer in the room."""
    await feed.send([member(SOFIA, "join")])
    await feed.send([text("Goodbye!", SOFIA), member(SOFIA, "leave")])
    assert (await agent_member(pool, SOFIA))["left_at"] is not None
    statuses = [s["status"] for s in await sessions_of(pool, SOFIA)]
    assert statuses == ["closed"], statuses


async def test_catch_up_of_an_indexed_agent_message_does_not_reopen(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    await feed.send([member(SOFIA, "join")])
    said = text("noted", SOFIA)
    await feed.send([said])
    await feed.send([member(SOFIA, "leave")])
    before = await table_rows(pool)
    outcome = await feed.send([said], txn_id="catch-up-1")  # a new id, the same event
    assert not outcome.replay
    assert await table_rows(pool) == before
    (session,) = await sessions_of(pool, SOFIA)
    assert session["status"] == "closed"


async def test_catch_up_of_an_old_agent_message_after_the_leave_does_not_reopen(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    """Catch-up indexes a message Synapse never pushed. It was sent before the agent left,
    so it is activity of the closed session, not a reason to open a new one."""
    await feed.send([member(SOFIA, "join")])
    lost = text("said before leaving", SOFIA)  # never pushed
    await feed.send([member(SOFIA, "leave")])
    await feed.send([lost], txn_id="catch-up-1")
    assert (
        await pool.fetchval(
            "SELECT sender_type FROM messages WHERE matrix_event_id = $1", lost["event_id"]
        )
        == "agent"
    )
    statuses = [s["status"] for s in await sessions_of(pool, SOFIA)]
    assert statuses == ["closed"], statuses


async def test_replaying_a_transaction_changes_nothing(pool: asyncpg.Pool, feed: Feed) -> None:
    events = [
        member(SOFIA, "join"),
        text("hello", SOFIA),
        text("Sofia, thanks", BOB),
        member(PRIME, "join"),
        member(PRIME, "leave"),
    ]
    first = await feed.send(events, txn_id="same")
    assert not first.replay
    before = await table_rows(pool)
    again = await feed.send(events, txn_id="same")
    assert again.replay
    assert await table_rows(pool) == before
    await check_invariants(pool)


async def test_channel_setup_with_a_puppet_already_in_the_room(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    """The bot joins a room the agent is in already: the agent is a member with a session."""
    await feed.send([], [setup(ROOM2, joined=[SOFIA, DAVE])])
    row = await agent_member(pool, SOFIA, ROOM2)
    assert row is not None and row["role"] == "agent" and row["left_at"] is None
    assert (await open_session(pool, SOFIA, ROOM2))["status"] == "active"
    assert await pool.fetchval("SELECT count(*) FROM users WHERE matrix_id = $1", SOFIA) == 0
    dave = await pool.fetchval(
        "SELECT m.role FROM channel_members m JOIN users u ON u.id = m.member_user_id "
        "JOIN channels c ON c.id = m.channel_id WHERE u.matrix_id = $1 AND c.matrix_room_id = $2",
        DAVE,
        ROOM2,
    )
    assert dave == "member"
    await check_invariants(pool)


async def test_bot_and_agent_invited_in_one_transaction_make_one_new_channel(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    """Both invites are accepted (two setups, one room): the outcome names the channel
    once, so the log announces it once."""
    both = [setup(ROOM2, joined=[SOFIA]), setup(ROOM2, joined=[SOFIA])]
    outcome = await feed.send([], both)
    assert [c.room_id for c in outcome.new_channels] == [ROOM2]
    count = "SELECT count(*) FROM channels WHERE matrix_room_id = $1"
    assert await pool.fetchval(count, ROOM2) == 1
    await check_invariants(pool)


@pytest.mark.parametrize("seed", range(6))
async def test_at_most_one_open_session_across_many_operations(
    pool: asyncpg.Pool, feed: Feed, seed: int
) -> None:
    rng = random.Random(seed)
    await feed.send([], [setup(ROOM2)])
    present: set[tuple[str, str]] = set()
    for _ in range(25):
        batch = []
        for _ in range(rng.randint(1, 4)):
            agent, room = rng.choice([SOFIA, PRIME, HELPER]), rng.choice([ROOM, ROOM2])
            kind = rng.choice(["join", "leave", "ban", "say", "mention", "mention"])
            if kind == "join":
                batch.append(member(agent, "join", room=room))
                present.add((agent, room))
            elif kind in ("leave", "ban") and (agent, room) in present:
                batch.append(member(agent, kind, ALICE if kind == "ban" else None, room))
                present.discard((agent, room))
            elif kind == "say" and (agent, room) in present:
                batch.append(text("working on it", agent, room))
            else:
                name = {SOFIA: "Sofia", PRIME: "Prime", HELPER: "Helper"}[agent]
                batch.append(text(f"{name}, status?", rng.choice([ALICE, BOB]), room))
        await feed.send(batch)
        if rng.random() < 0.3:
            await backdate_sessions(pool, 120)
            await sessions.mark_idle(pool, 60)
        await check_invariants(pool)
    # The index agrees with who is in which room.
    rows = await pool.fetch(
        "SELECT a.matrix_id, c.matrix_room_id FROM channel_members m "
        "JOIN agents a ON a.id = m.member_agent_id JOIN channels c ON c.id = m.channel_id "
        "WHERE m.left_at IS NULL"
    )
    assert {(r[0], r[1]) for r in rows} == present
    open_pairs = await pool.fetch(
        "SELECT a.matrix_id, c.matrix_room_id FROM agent_sessions s "
        "JOIN agents a ON a.id = s.agent_id JOIN channels c ON c.id = s.channel_id "
        "WHERE s.status <> 'closed'"
    )
    assert {(r[0], r[1]) for r in open_pairs} == present


# --- the idle sweep ---------------------------------------------------------------------


async def test_mark_idle(pool: asyncpg.Pool, feed: Feed) -> None:
    await feed.send([], [setup(ROOM2)])
    await feed.send(
        [member(SOFIA, "join"), member(PRIME, "join"), member(HELPER, "join"),
         member(SOFIA, "join", room=ROOM2)]
    )  # fmt: skip
    await feed.send([member(HELPER, "leave")])
    sofia, prime = await agent_id(pool, SOFIA), await agent_id(pool, PRIME)
    await pool.execute(
        "UPDATE agent_sessions SET last_activity_at = CASE agent_id "
        "WHEN $1 THEN now() - interval '10 minutes' WHEN $2 THEN now() - interval '1 minute' "
        "ELSE now() - interval '1 day' END",
        sofia,
        prime,
    )
    # Sofia's session in ROOM2: no activity recorded, only its start.
    await pool.execute(
        "UPDATE agent_sessions SET last_activity_at = NULL, started_at = now() - interval '1 hour' "
        "WHERE agent_id = $1 AND channel_id = (SELECT id FROM channels WHERE matrix_room_id = $2)",
        sofia,
        ROOM2,
    )
    assert await sessions.mark_idle(pool, 300) == 2  # Sofia in both rooms
    assert (await open_session(pool, SOFIA))["status"] == "idle"
    assert (await open_session(pool, SOFIA, ROOM2))["status"] == "idle"
    assert (await open_session(pool, PRIME))["status"] == "active"
    (helper_session,) = await sessions_of(pool, HELPER)
    assert helper_session["status"] == "closed"  # closed stays closed, however old
    assert await sessions.mark_idle(pool, 300) == 0  # idle ones are not counted again
    assert await sessions.mark_idle(pool, 30) == 1  # a shorter timeout catches Prime
    assert (await open_session(pool, PRIME))["status"] == "idle"
    assert [s["status"] for s in await sessions_of(pool, HELPER)] == ["closed"]


async def test_agent_message_wakes_an_idle_session(pool: asyncpg.Pool, feed: Feed) -> None:
    await feed.send([member(SOFIA, "join")])
    await backdate_sessions(pool, 7200)
    assert await sessions.mark_idle(pool, 60) == 1
    idle = await open_session(pool, SOFIA)
    said = text("still here", SOFIA)
    await feed.send([said])
    session = await open_session(pool, SOFIA)
    assert session["id"] == idle["id"]
    assert (session["status"], session["last_activity_at"]) == ("active", ts_of(said))


async def test_idle_session_closes_on_leave(pool: asyncpg.Pool, feed: Feed) -> None:
    await feed.send([member(SOFIA, "join")])
    await backdate_sessions(pool, 7200)
    await sessions.mark_idle(pool, 60)
    await feed.send([member(SOFIA, "leave")])
    (session,) = await sessions_of(pool, SOFIA)
    assert session["status"] == "closed"
    await feed.send([member(SOFIA, "join")])
    assert (await open_session(pool, SOFIA))["status"] == "active"
    await check_invariants(pool)


# --- write_roster ---------------------------------------------------------------------


async def test_write_roster_creates_microdaos_blueprints_and_agents(pool: asyncpg.Pool) -> None:
    leaving, report = await apply(
        pool, make_roster(raw_roster(members={BOB: "member", DAVE: "admin"}))
    )
    assert leaving == [] and report.removed == [] and report.sessions_closed == 0

    dao = await pool.fetchrow(
        "SELECT d.*, u.matrix_id AS owner FROM microdaos d JOIN users u ON u.id = d.owner_user_id"
    )
    assert (dao["external_id"], dao["name"], dao["owner"]) == (DAO, "DAARION Core", ALICE)
    roles = {
        r["matrix_id"]: r["role"]
        for r in await pool.fetch(
            "SELECT u.matrix_id, m.role FROM microdao_members m JOIN users u ON u.id = m.user_id"
        )
    }
    assert roles == {ALICE: "owner", BOB: "member", DAVE: "admin"}

    blueprints = {r["code"]: r for r in await pool.fetch("SELECT * FROM agent_blueprints")}
    assert set(blueprints) == {"guide", "worker"}
    guide = blueprints["guide"]
    assert (guide["model"], guide["description"]) == ("gpt-4.1", "City guide")
    capabilities = await pool.fetchval(
        "SELECT capabilities -> 'tools' ->> 1 FROM agent_blueprints WHERE code = 'guide'"
    )
    assert capabilities == "summarize"  # stored as jsonb, not as a string
    assert blueprints["worker"]["capabilities"] is None

    agents = {
        r["external_id"]: r
        for r in await pool.fetch(
            "SELECT a.*, b.code, d.external_id AS dao, u.matrix_id AS owner FROM agents a "
            "JOIN agent_blueprints b ON b.id = a.blueprint_id "
            "LEFT JOIN microdaos d ON d.id = a.microdao_id "
            "LEFT JOIN users u ON u.id = a.owner_user_id"
        )
    }
    assert set(agents) == {"agent:sofia", "agent:prime", "agent:helper"}
    sofia = agents["agent:sofia"]
    assert (sofia["name"], sofia["kind"], sofia["matrix_id"], sofia["code"]) == (
        "Sofia", "assistant", SOFIA, "guide",
    )  # fmt: skip
    assert (sofia["dao"], sofia["owner"]) == (DAO, ALICE)
    prime = agents["agent:prime"]
    assert (prime["kind"], prime["dao"], prime["owner"]) == ("system", None, None)
    helper = agents["agent:helper"]
    assert (helper["matrix_id"], helper["code"], helper["owner"]) == (HELPER, "worker", CAROL)
    # Agent owners are people; agents are not.
    people = {r[0] for r in await pool.fetch("SELECT matrix_id FROM users")}
    assert people == {ALICE, BOB, CAROL, DAVE}


async def test_write_roster_twice_changes_nothing(pool: asyncpg.Pool) -> None:
    roster = make_roster()
    await apply(pool, roster, {DAO: "!space:localhost"})
    before = await table_rows(pool)
    leaving, report = await apply(pool, roster, {DAO: "!space:localhost"})
    assert leaving == [] and report.sessions_closed == 0
    assert await table_rows(pool) == before


async def test_write_roster_twice_rewrites_no_row(pool: asyncpg.Pool) -> None:
    """A restart with the same config writes nothing: every row keeps its version."""
    roster = make_roster(raw_roster(members={BOB: "member", DAVE: "admin"}))
    await apply(pool, roster)

    async def versions() -> dict[str, list[str]]:
        return {
            table: [r[0] for r in await pool.fetch(f"SELECT xmin::text FROM {table} ORDER BY 1")]
            for table in ("microdaos", "microdao_members", "bridge_config_roles", "agents")
        }

    before = await versions()
    assert all(before.values())
    _, report = await apply(pool, roster)
    assert await versions() == before
    assert report.roles_revoked == 0


async def test_write_roster_upserts_by_external_id_and_code(pool: asyncpg.Pool) -> None:
    await apply(pool, make_roster())
    ids_before = {r["external_id"]: r["id"] for r in await pool.fetch("SELECT * FROM agents")}
    raw = raw_roster()
    raw["agents"][0] |= {"name": "Sofia II", "blueprint": "worker", "kind": "quest",
                         "owner": BOB, "microdao": None}  # fmt: skip
    raw["blueprints"][0] |= {"model": "gpt-5", "description": "Guide v2", "capabilities": None}
    raw["microdaos"][0]["name"] = "Core DAO"
    await apply(pool, make_roster(raw))

    ids_after = {r["external_id"]: r["id"] for r in await pool.fetch("SELECT * FROM agents")}
    assert ids_after == ids_before  # the same rows, updated in place
    sofia = await pool.fetchrow(
        "SELECT a.name, a.kind, a.microdao_id, b.code, u.matrix_id AS owner FROM agents a "
        "JOIN agent_blueprints b ON b.id = a.blueprint_id "
        "LEFT JOIN users u ON u.id = a.owner_user_id WHERE a.external_id = 'agent:sofia'"
    )
    assert (sofia["name"], sofia["kind"], sofia["code"], sofia["owner"]) == (
        "Sofia II", "quest", "worker", BOB,
    )  # fmt: skip
    assert sofia["microdao_id"] is None
    guide = await pool.fetchrow("SELECT * FROM agent_blueprints WHERE code = 'guide'")
    assert (guide["model"], guide["description"], guide["capabilities"]) == (
        "gpt-5",
        "Guide v2",
        None,
    )
    assert await pool.fetchval("SELECT count(*) FROM agent_blueprints") == 2
    assert await pool.fetchval("SELECT count(*) FROM microdaos") == 1
    assert await pool.fetchval("SELECT name FROM microdaos") == "Core DAO"


async def test_write_roster_member_roles(pool: asyncpg.Pool) -> None:
    await apply(pool, make_roster(raw_roster(members={BOB: "member", CAROL: "guest"})))
    # Bob is promoted; the owner listed with another role stays owner; Carol's line is
    # removed, which takes her role back (tests/db/test_config_roles.py).
    await apply(pool, make_roster(raw_roster(members={BOB: "admin", ALICE: "member"})))
    assert await microdaos.role_of(pool, DAO, BOB) == "admin"
    assert await microdaos.role_of(pool, DAO, ALICE) == "owner"
    assert await microdaos.role_of(pool, DAO, CAROL) is None
    assert await pool.fetchval("SELECT count(*) FROM microdao_members") == 2


async def test_write_roster_new_owner_holds_the_owner_role(pool: asyncpg.Pool) -> None:
    await apply(pool, make_roster())
    await apply(pool, make_roster(raw_roster(owner=DAVE)))
    owner = await pool.fetchval(
        "SELECT u.matrix_id FROM microdaos d JOIN users u ON u.id = d.owner_user_id"
    )
    assert owner == DAVE
    assert await microdaos.role_of(pool, DAO, DAVE) == "owner"


async def test_role_of(pool: asyncpg.Pool) -> None:
    await apply(pool, make_roster(raw_roster(members={BOB: "member", CAROL: "admin"})))
    assert await microdaos.role_of(pool, DAO, ALICE) == "owner"
    assert await microdaos.role_of(pool, DAO, BOB) == "member"
    assert await microdaos.role_of(pool, DAO, CAROL) == "admin"
    assert await microdaos.role_of(pool, DAO, DAVE) is None  # no users row at all
    assert await microdaos.role_of(pool, "microdao:other", ALICE) is None
    # A person seen only in a channel is not a member of its microDAO.
    feed = Feed(pool, make_roster(), isolate=False)
    await feed.send([], [setup()])
    await feed.send([member(DAVE, "join")])
    assert await pool.fetchval("SELECT count(*) FROM users WHERE matrix_id = $1", DAVE) == 1
    assert await microdaos.role_of(pool, DAO, DAVE) is None


async def test_removed_agent_keeps_its_rows_and_its_sessions_close(pool: asyncpg.Pool) -> None:
    roster = make_roster()
    await apply(pool, roster)
    feed = Feed(pool, roster, isolate=False)
    await feed.send([], [setup(), setup(ROOM2)])
    said = text("hello", SOFIA)
    await feed.send(
        [member(SOFIA, "join"), member(SOFIA, "join", room=ROOM2), said, member(PRIME, "join"),
         member(HELPER, "join"), member(HELPER, "leave")]
    )  # fmt: skip
    sofia_id = await agent_id(pool, SOFIA)

    raw = raw_roster()
    raw["agents"] = [a for a in raw["agents"] if a["external_id"] == "agent:prime"]
    leaving, report = await apply(pool, make_roster(raw))

    # Sofia is in two rooms: her puppet must leave both. Helper left already: nothing to do.
    assert leaving == [(SOFIA, sorted([ROOM, ROOM2]))]
    assert report.removed == ["agent:sofia"]
    assert report.sessions_closed == 2
    assert await pool.fetchval("SELECT count(*) FROM agents") == 3  # history points at them
    assert await agent_id(pool, SOFIA) == sofia_id
    assert (
        await pool.fetchval(
            "SELECT sender_agent_id FROM messages WHERE matrix_event_id = $1", said["event_id"]
        )
        == sofia_id
    )
    for room in (ROOM, ROOM2):
        assert [s["status"] for s in await sessions_of(pool, SOFIA, room)] == ["closed"]
    assert (await open_session(pool, PRIME))["status"] == "active"

    # The puppet's leave arrives: the member row closes, nothing reopens.
    gone = member(SOFIA, "leave")
    await feed.send([gone])
    assert (await agent_member(pool, SOFIA))["left_at"] == ts_of(gone)
    assert [s["status"] for s in await sessions_of(pool, SOFIA)] == ["closed"]

    # Applying the same config again: nothing more to close or leave in ROOM.
    leaving, report = await apply(pool, make_roster(raw))
    assert leaving == [(SOFIA, [ROOM2])]  # still in ROOM2 by the index until its leave comes
    assert report.sessions_closed == 0


async def test_removed_agent_comes_back_under_the_same_row(pool: asyncpg.Pool) -> None:
    await apply(pool, make_roster())
    sofia_id = await agent_id(pool, SOFIA)
    raw = raw_roster()
    raw["agents"] = raw["agents"][1:]
    await apply(pool, make_roster(raw))
    await apply(pool, make_roster())
    assert await agent_id(pool, SOFIA) == sofia_id
    assert await pool.fetchval("SELECT count(*) FROM agents") == 3


async def test_write_roster_links_spaces(pool: asyncpg.Pool) -> None:
    await apply(pool, make_roster(), {DAO: "!space1:localhost"})
    assert await spaces.all_linked(pool) == {"!space1:localhost": DAO}
    # A new space for the microDAO replaces the old link.
    await apply(pool, make_roster(), {DAO: "!space2:localhost"})
    assert await spaces.all_linked(pool) == {"!space2:localhost": DAO}


async def test_edits_and_redactions_of_agent_messages(pool: asyncpg.Pool, feed: Feed) -> None:
    """An agent's message is edited only by its puppet; a person with the power to redact
    may remove it, a plain member may not."""
    await feed.send([member(SOFIA, "join"), member(CAROL, "join")])
    said, other = text("v1", SOFIA), text("keep me", SOFIA)
    await feed.send([said, other])

    def edit(target: dict[str, Any], body: str, sender: str) -> dict[str, Any]:
        return text(
            f"* {body}",
            sender,
            **{
                "m.new_content": {"msgtype": "m.text", "body": body},
                "m.relates_to": {"rel_type": "m.replace", "event_id": target["event_id"]},
            },
        )

    def redaction(target: dict[str, Any], sender: str) -> dict[str, Any]:
        return event("m.room.redaction", {}, sender, redacts=target["event_id"])

    async def preview(ev: dict[str, Any]) -> str:
        return await pool.fetchval(
            "SELECT content_preview FROM messages WHERE matrix_event_id = $1", ev["event_id"]
        )

    await feed.send([edit(said, "hijacked", CAROL)])
    assert await preview(said) == "v1"
    await feed.send([edit(said, "v2", SOFIA)])
    assert await preview(said) == "v2"
    await feed.send([redaction(other, CAROL)])  # power 0: not hers to remove
    assert await preview(other) == "keep me"
    await feed.send([redaction(other, BOB)])  # power 50: a moderator
    assert await preview(other) == "[deleted]"
    # Edits and redactions are not messages: no new rows, senders unchanged.
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE sender_type = 'agent'") == 2
    await check_invariants(pool)


async def test_changing_an_agents_localpart_moves_its_puppet_out(pool: asyncpg.Pool) -> None:
    """The agent keeps its row (upsert by external id) but gets a new Matrix user. Its old
    puppet is no longer an agent: left in its rooms, anything it does is indexed as a
    person (@agent-sofia:localhost in users) while the index keeps the agent present with
    an open session. write_roster must hand the old puppet's rooms back to be left, as for
    a removed agent."""
    roster = make_roster()
    await apply(pool, roster)
    feed = Feed(pool, roster, isolate=False)
    await feed.send([], [setup()])
    await feed.send([member(SOFIA, "join")])
    raw = raw_roster()
    raw["agents"][0]["localpart"] = "sofia"
    leaving, _ = await apply(pool, make_roster(raw))
    assert (
        await pool.fetchval("SELECT matrix_id FROM agents WHERE external_id = 'agent:sofia'")
        == "@sofia:localhost"
    )
    assert leaving == [(SOFIA, [ROOM])]


async def test_a_replaced_owner_keeps_only_a_listed_role(pool: asyncpg.Pool) -> None:
    """The config is the truth about who owns a microDAO: the old owner may no longer
    invite its agents everywhere (the config made them owner, so it takes that back;
    tests/db/test_config_roles.py has an owner someone else made)."""
    await apply(pool, make_roster(raw_roster(owner=ALICE)))
    await apply(pool, make_roster(raw_roster(owner=BOB, members={ALICE: "member"})))
    async with pool.acquire() as conn:
        assert await microdaos.role_of(conn, DAO, BOB) == "owner"
        assert await microdaos.role_of(conn, DAO, ALICE) == "member"


async def test_a_room_the_homeserver_says_a_dropped_puppet_is_not_in_is_marked_left(
    pool: asyncpg.Pool,
) -> None:
    """Otherwise every start would try to leave it again (and wait on the homeserver)."""
    roster = make_roster()
    await apply(pool, roster)
    feed = Feed(pool, roster, isolate=False)
    await feed.send([], [setup()])
    await feed.send([member(SOFIA, "join")])
    raw = raw_roster()
    raw["agents"] = raw["agents"][1:]  # Sofia dropped from the config
    leaving, _ = await apply(pool, make_roster(raw))
    assert leaving == [(SOFIA, [ROOM])]
    async with pool.acquire() as conn:
        await members.mark_agent_gone(conn, SOFIA, [ROOM])
    assert (await agent_member(pool, SOFIA))["left_at"] is not None
    leaving, _ = await apply(pool, make_roster(raw))
    assert leaving == []
