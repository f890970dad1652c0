"""Agents as puppeted Matrix users, end to end: a real Synapse, the real bridge process
with microDAOs, blueprints and agents in its config, and a database of its own (so the
agents of this module never reach the other modules' index).

What an admin running AI agents in Element sees: the agents exist on the homeserver with
their names and avatars, accept invites only from who may bring them, speak as agents in
the index, have sessions that follow activity, mentions and idleness, and follow the
config on SIGHUP without a restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.agents_helpers import (
    AsPuppet,
    LogWatch,
    agent_channel,
    agent_row,
    as_token_of,
    open_session,
    profile,
    session_where,
    sessions_of,
    wait_membership,
    wait_message,
)
from tests.e2e.helpers import (
    Person,
    channel_row,
    derive_config,
    load_yaml,
    member_row,
    open_channel,
    own_fixtures,
    own_index,
    q,
    ts_to_datetime,
    user_row,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

D = "localhost"
SOFIA = f"@agent-sofia:{D}"
CITY = f"@agent-city:{D}"
DOOMED = f"@agent-doomed:{D}"
RENAMED = f"@agent-renamed:{D}"
NEWBIE = f"@agent-newbie:{D}"
BROKEN = f"@agent-broken:{D}"

SOFIA_NAME = "Sofia Testova"
SOFIA_AVATAR = f"mxc://{D}/sofiaAvatar01"
NEW_AVATAR = f"mxc://{D}/sofiaAvatar02"
CITY_NAME = "City Helper"

CORE = "microdao:ag-core"
SPACE_DAO = "microdao:ag-space"
IDLE_AFTER = 2.0  # bridge.agent_session_idle_after: 2s
# The sweep runs every min(max(idle_after / 4, 1), 60) s: a session is idle at most that
# late; the rest is polling and scheduling slack.
IDLE_LATEST = IDLE_AFTER + 1.0 + 2.0

# People (localparts) and their parts in the config.
DAO_OWNER = "ag.daoowner"  # owner of both microDAOs
DAO_ADMIN = "ag.daoadmin"  # admin of ag-core
DAO_MEMBER = "ag.daomember"  # member of ag-core
AGENT_OWNER = "ag.agentowner"  # owner of sofia, doomed and renamed; in no microDAO
STRANGER = "ag.stranger"  # in nothing
STRANGER2 = "ag.stranger2"  # in nothing


def mxid(localpart: str) -> str:
    return f"@{localpart}:{D}"


def roster(space: str) -> dict[str, Any]:
    return {
        "microdaos": [
            {
                "external_id": CORE,
                "name": "Agents Core",
                "owner": mxid(DAO_OWNER),
                "members": {mxid(DAO_ADMIN): "admin", mxid(DAO_MEMBER): "member"},
            },
            {
                "external_id": SPACE_DAO,
                "name": "Space DAO",
                "owner": mxid(DAO_OWNER),
                "space": space,
            },
        ],
        "blueprints": [
            {
                "code": "ag_guide",
                "description": "City guide",
                "model": "gpt-test",
                "capabilities": {"tools": ["search", "summarize"]},
            },
            {"code": "ag_worker", "model": "small-test"},
        ],
        "agents": [
            {
                "external_id": "agent:sofia",
                "name": SOFIA_NAME,
                "kind": "assistant",
                "blueprint": "ag_guide",
                "microdao": CORE,
                "owner": mxid(AGENT_OWNER),
                "avatar": SOFIA_AVATAR,
            },
            {
                "external_id": "agent:city",
                "name": CITY_NAME,
                "kind": "system",
                "blueprint": "ag_guide",
            },
            {
                "external_id": "agent:doomed",
                "name": "Doomed Agent",
                "kind": "node",
                "blueprint": "ag_worker",
                "owner": mxid(AGENT_OWNER),
            },
            {
                "external_id": "agent:renamed",
                "name": "Old Name Agent",
                "kind": "quest",
                "blueprint": "ag_worker",
                "owner": mxid(AGENT_OWNER),
            },
        ],
    }


@dataclass
class AgentStack:
    config: Path
    database_url: str
    log_file: Path
    space_id: str
    as_token: str
    base_url: str

    def puppet(self, matrix_id: str) -> AsPuppet:
        return AsPuppet(self.base_url, matrix_id, self.as_token)


@pytest.fixture(scope="module")
async def stack(e2e, pg_server_url, people) -> AgentStack:
    """The session config with its own database and log, the roster above, and a public
    space (made before the bridge starts, as an admin would) linked to ag-space by its
    alias."""
    owner = await people(DAO_OWNER)
    space_alias = f"#ag-space-{uuid.uuid4().hex[:8]}:{D}"
    space_id = await owner.create_room(
        name="E2E agents space",
        preset="public_chat",
        creation_content={"type": "m.space"},
        room_alias_name=space_alias[1:].split(":", 1)[0],
    )

    def with_agents(cfg: Any) -> None:
        cfg["bridge"]["agent_session_idle_after"] = f"{IDLE_AFTER:g}s"
        # By alias: in room version 12 (Synapse's default) a room id has no server part.
        cfg.update(roster(space_alias))

    index = await own_index(e2e, pg_server_url, "agents", with_agents)
    return AgentStack(
        index.config,
        index.database_url,
        index.log_file,
        space_id,
        as_token_of(index.config),
        e2e.synapse.base_url,
    )


# This module's index (not the session's), and the bridge with agents on the
# registration's port (the session's registration: the template's regex covers every
# agent here).
own = own_fixtures("agents", index="stack")
db, bridge = own.db, own.bridge


@pytest.fixture(scope="module")
async def puppets(stack) -> AsyncIterator[dict[str, AsPuppet]]:
    made = {m: stack.puppet(m) for m in (SOFIA, CITY)}
    yield made
    for p in made.values():
        await p.close()


async def event_ts(person: Person, room_id: str, event_id: str):
    return ts_to_datetime((await person.get_event(room_id, event_id))["origin_server_ts"])


def assert_fresh_session_active(session: Any) -> None:
    """A session quieter than the timeout must be active (an older one may be idle)."""
    assert session is not None
    quiet_enough = session["quiet"] >= timedelta(seconds=IDLE_AFTER)
    assert session["status"] == "active" or quiet_enough, dict(session)


async def query_user(port: int, hs_token: str, user_id: str) -> int:
    url = f"http://127.0.0.1:{port}/_matrix/app/v1/users/{q(user_id)}"
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers={"Authorization": f"Bearer {hs_token}"}) as resp,
    ):
        await resp.read()
        return resp.status


# -- the roster on Postgres and Synapse -------------------------------------------------------


async def test_roster_in_postgres_and_agents_on_synapse(e2e, bridge, people, db):
    sofia = await agent_row(db, "agent:sofia")
    assert sofia is not None, "agents row of agent:sofia"
    assert (sofia["name"], sofia["kind"], sofia["matrix_id"]) == (SOFIA_NAME, "assistant", SOFIA)
    assert sofia["blueprint_code"] == "ag_guide"
    assert sofia["microdao_external_id"] == CORE
    assert sofia["owner_matrix_id"] == mxid(AGENT_OWNER)
    city = await agent_row(db, "agent:city")
    assert city is not None
    assert (city["name"], city["kind"], city["matrix_id"]) == (CITY_NAME, "system", CITY)
    assert city["microdao_id"] is None and city["owner_user_id"] is None

    guide = await db.fetchrow("SELECT * FROM agent_blueprints WHERE code = 'ag_guide'")
    assert guide is not None
    assert (guide["description"], guide["model"]) == ("City guide", "gpt-test")
    assert await db.fetchval(
        "SELECT capabilities = $1::jsonb FROM agent_blueprints WHERE code = 'ag_guide'",
        '{"tools": ["search", "summarize"]}',
    ), guide["capabilities"]

    core = await db.fetchrow("SELECT * FROM microdaos WHERE external_id = $1", CORE)
    assert core is not None and core["name"] == "Agents Core"
    roles = {
        r["matrix_id"]: r["role"]
        for r in await db.fetch(
            "SELECT u.matrix_id, m.role FROM microdao_members m JOIN users u ON u.id = m.user_id "
            "WHERE m.microdao_id = $1",
            core["id"],
        )
    }
    assert roles == {
        mxid(DAO_OWNER): "owner",
        mxid(DAO_ADMIN): "admin",
        mxid(DAO_MEMBER): "member",
    }
    owner = await user_row(db, mxid(DAO_OWNER))
    assert owner is not None and core["owner_user_id"] == owner["id"]

    # Element shows the puppets with their names and avatars.
    viewer = await people(STRANGER)
    seen = await profile(viewer, SOFIA)
    assert seen.get("displayname") == SOFIA_NAME
    assert seen.get("avatar_url") == SOFIA_AVATAR
    seen = await profile(viewer, CITY)
    assert seen.get("displayname") == CITY_NAME
    assert not seen.get("avatar_url")


async def test_user_query_answers_for_configured_agents_only(e2e, bridge):
    token = e2e.hs_token
    assert await query_user(bridge.port, token, SOFIA) == 200
    assert await query_user(bridge.port, token, CITY) == 200
    assert await query_user(bridge.port, token, e2e.bot) == 200
    # In the namespace (the template's regex), but no such agent.
    assert await query_user(bridge.port, token, f"@agent-nobody:{D}") == 404
    assert await query_user(bridge.port, token, mxid(STRANGER)) == 404


# -- invites ----------------------------------------------------------------------------------


async def test_owner_invite_makes_channel_with_agent_member_and_session(e2e, bridge, people, db):
    owner = await people(AGENT_OWNER)
    room_id, channel = await agent_channel(db, owner, SOFIA, "E2E sofia private")
    assert channel["visibility"] == "private"
    assert channel["name"] == "E2E sofia private"
    microdao = await db.fetchval(
        "SELECT external_id FROM microdaos WHERE id = $1", channel["microdao_id"]
    )
    assert microdao == CORE, "an agent's room belongs to the agent's microDAO"
    assert await owner.membership(room_id, e2e.bot) is None, "nobody invited the bot"
    owner_user = await user_row(db, owner.user_id)
    assert owner_user is not None and channel["created_by_user_id"] == owner_user["id"]

    sofia = await agent_row(db, "agent:sofia")
    member = await wait_for(
        lambda: member_row(db, channel["id"], SOFIA), what="sofia's channel_members row"
    )
    assert member["member_agent_id"] == sofia["id"]
    assert member["member_user_id"] is None
    assert member["role"] == "agent"
    assert member["left_at"] is None and member["joined_at"] is not None

    human = await wait_for(
        lambda: member_row(db, channel["id"], owner.user_id), what="the owner's member row"
    )
    assert human["member_agent_id"] is None and human["role"] == "owner"

    sessions = await sessions_of(db, SOFIA, channel["id"])
    assert len(sessions) == 1, [dict(s) for s in sessions]
    assert sessions[0]["started_at"] is not None
    assert_fresh_session_active(sessions[0])


async def test_stranger_invite_is_refused_and_nothing_written(e2e, bridge, people, db):
    stranger = await people(STRANGER)
    room_id = await stranger.create_room(name="E2E stranger room", preset="private_chat")
    await stranger.invite(room_id, SOFIA)
    await wait_membership(stranger, room_id, SOFIA, "leave")

    history = await stranger.history(room_id)
    sofia_joins = [
        e
        for e in history
        if e["type"] == "m.room.member"
        and e.get("state_key") == SOFIA
        and e["content"].get("membership") == "join"
    ]
    assert not sofia_joins, "the puppet must reject the invite, not join and leave"
    await asyncio.sleep(1)  # time to (wrongly) write something
    assert await channel_row(db, room_id) is None
    assert await user_row(db, stranger.user_id) is None


INVITE_CASES = [
    # (inviter, agent, room kind, accepted)
    (DAO_OWNER, SOFIA, "private", True),  # owner of the agent's microDAO: anywhere
    (DAO_ADMIN, SOFIA, "private", True),  # admin of it: anywhere
    (DAO_MEMBER, SOFIA, "private", False),  # member: open rooms only
    (DAO_MEMBER, SOFIA, "public", True),
    # Restricted to ag-space's space, not to a space of sofia's microDAO (ag-core has
    # none): not open to ag-core's members (tests/e2e/test_hostile_rooms.py has the case
    # of a room restricted to the agent's microDAO's space).
    (DAO_MEMBER, SOFIA, "restricted", False),
    (STRANGER, SOFIA, "public", False),  # not in the microDAO, not the owner
    (STRANGER2, CITY, "public", True),  # no owner, no microDAO: the city's agent
    (STRANGER2, CITY, "restricted", True),  # restricted to a microDAO's space: open
    (STRANGER2, CITY, "private", False),
]
VISIBILITY = {"private": "private", "public": "public", "restricted": "microdao"}


async def test_who_may_invite_an_agent(e2e, bridge, people, db, stack):
    async def attempt(n: int, inviter_lp: str, agent: str, kind: str, accepted: bool) -> str:
        inviter = await people(inviter_lp)
        create: dict[str, Any] = {"preset": "public_chat" if kind == "public" else "private_chat"}
        if kind == "restricted":
            create["initial_state"] = [
                {
                    "type": "m.room.join_rules",
                    "state_key": "",
                    "content": {
                        "join_rule": "restricted",
                        "allow": [{"type": "m.room_membership", "room_id": stack.space_id}],
                    },
                }
            ]
        room_id = await inviter.create_room(name=f"E2E invite case {n}", **create)
        await inviter.invite(room_id, agent)
        case = f"case {n}: {inviter_lp} invites {agent} into a {kind} room"

        async def settled() -> str | None:
            m = await inviter.membership(room_id, agent)
            return m if m in ("join", "leave") else None

        try:
            got = await wait_for(settled, 15, what=case)
        except AssertionError as e:
            return f"{case}: {e}"
        if got != ("join" if accepted else "leave"):
            return f"{case}: the puppet's membership became {got}"
        if not accepted:
            await asyncio.sleep(1)
            if await channel_row(db, room_id) is not None:
                return f"{case}: refused, yet a channels row was written"
            return ""
        try:
            channel = await wait_for(lambda: channel_row(db, room_id), 15, what="channel")
        except AssertionError:
            return f"{case}: accepted, but no channels row"
        microdao = await db.fetchval(
            "SELECT external_id FROM microdaos WHERE id = $1", channel["microdao_id"]
        )
        want = CORE if agent == SOFIA else e2e.microdao  # city has none: the default
        if microdao != want or channel["visibility"] != VISIBILITY[kind]:
            return f"{case}: channel of {microdao} with visibility {channel['visibility']}"
        member = await wait_for(lambda: member_row(db, channel["id"], agent), 15, what="member")
        if member["role"] != "agent" or member["member_user_id"] is not None:
            return f"{case}: member row {dict(member)}"
        return ""

    results = await asyncio.gather(*(attempt(n, *c) for n, c in enumerate(INVITE_CASES)))
    wrong = [r for r in results if r]
    assert not wrong, "\n".join(wrong)


async def test_agent_invited_into_an_existing_channel(e2e, bridge, people, db):
    owner = await people(AGENT_OWNER)
    room_id, channel = await open_channel(db, owner, e2e.bot, "E2E bot first", "private_chat")
    await owner.invite(room_id, SOFIA)
    await wait_membership(owner, room_id, SOFIA, "join")
    member = await wait_for(lambda: member_row(db, channel["id"], SOFIA), what="sofia's member row")
    assert member["role"] == "agent" and member["left_at"] is None
    session = await wait_for(lambda: open_session(db, SOFIA, channel["id"]), what="a session")
    assert_fresh_session_active(session)
    rows = await db.fetch("SELECT * FROM channels WHERE matrix_room_id = $1", room_id)
    assert len(rows) == 1
    assert rows[0]["microdao_id"] == channel["microdao_id"], "the channel keeps its microDAO"


async def test_bot_invited_into_an_agents_channel(e2e, bridge, people, db):
    owner = await people(AGENT_OWNER)
    room_id, channel = await agent_channel(db, owner, SOFIA, "E2E agent first")
    first_session = await open_session(db, SOFIA, channel["id"])
    await owner.invite(room_id, e2e.bot)
    await wait_membership(owner, room_id, e2e.bot, "join")
    await wait_for(lambda: member_row(db, channel["id"], e2e.bot), what="the bot's member row")
    rows = await db.fetch("SELECT * FROM channels WHERE matrix_room_id = $1", room_id)
    assert len(rows) == 1
    assert rows[0]["microdao_id"] == channel["microdao_id"], "the channel keeps its microDAO"
    sessions = await sessions_of(db, SOFIA, channel["id"])
    assert [s["id"] for s in sessions] == [first_session["id"]], [dict(s) for s in sessions]
    member = await member_row(db, channel["id"], SOFIA)
    assert member["role"] == "agent" and member["left_at"] is None


# -- messages and sessions --------------------------------------------------------------------


async def test_agent_message_is_indexed_as_agent(e2e, bridge, people, db, puppets):
    owner = await people(AGENT_OWNER)
    room_id, channel = await agent_channel(db, owner, SOFIA, "E2E agent speaks", "public_chat")
    cid = channel["id"]
    await owner.invite(room_id, CITY)  # a public room: anyone may bring the city's agent
    await wait_membership(owner, room_id, CITY, "join")
    city_before = await wait_for(lambda: open_session(db, CITY, cid), what="city's session")

    said = await puppets[SOFIA].send_text(room_id, "Hello from Sofia; City Helper, over to you")
    asked = await owner.send_text(room_id, "thanks")
    agent_msg = await wait_message(db, said)
    human_msg = await wait_message(db, asked)

    sofia = await agent_row(db, "agent:sofia")
    assert agent_msg["channel_id"] == cid
    assert agent_msg["sender_type"] == "agent"
    assert agent_msg["sender_agent_id"] == sofia["id"]
    assert agent_msg["sender_user_id"] is None
    assert agent_msg["content_preview"] == "Hello from Sofia; City Helper, over to you"
    assert agent_msg["created_at"] == await event_ts(owner, room_id, said)

    owner_user = await user_row(db, owner.user_id)
    assert human_msg["sender_type"] == "human"
    assert human_msg["sender_user_id"] == owner_user["id"]
    assert human_msg["sender_agent_id"] is None
    assert await user_row(db, SOFIA) is None, "a puppet is an agent, never a users row"

    # The agent's own message is its activity.
    said_at = await event_ts(owner, room_id, said)
    moved = await wait_for(
        lambda: session_where(db, SOFIA, cid, last_activity_at=said_at),
        what="sofia's session to move to her message",
    )
    assert_fresh_session_active(moved)
    # What an agent says never wakes another agent, even naming it.
    city_now = await open_session(db, CITY, cid)
    assert city_now["id"] == city_before["id"]
    assert city_now["last_activity_at"] == city_before["last_activity_at"], (
        "an agent's message counted as a mention"
    )
    # ... while a person naming it does (the same words, so the check above can fail).
    ping = await owner.send_text(room_id, "City Helper, over to you")
    ping_at = await event_ts(owner, room_id, ping)
    await wait_for(
        lambda: session_where(db, CITY, cid, last_activity_at=ping_at),
        what="a person's mention to move city's session",
    )

    bad = await db.fetchval(
        "SELECT count(*) FROM messages WHERE (sender_user_id IS NULL) = (sender_agent_id IS NULL)"
    )
    assert bad == 0, "rows with both or neither sender set"


async def test_session_turns_idle_after_the_timeout(e2e, bridge, people, db, puppets):
    owner = await people(AGENT_OWNER)
    room_id, channel = await agent_channel(db, owner, SOFIA, "E2E idle")
    cid = channel["id"]
    first = await open_session(db, SOFIA, cid)

    async def idle() -> Any:
        s = await open_session(db, SOFIA, cid)
        return s if s is not None and s["status"] == "idle" else None

    seen = await wait_for(idle, IDLE_LATEST + 5, interval=0.05, what="the session to turn idle")
    assert seen["id"] == first["id"]
    assert seen["quiet"] >= timedelta(seconds=IDLE_AFTER), f"idle too early: {seen['quiet']}"
    assert seen["quiet"] <= timedelta(seconds=IDLE_LATEST), f"idle too late: {seen['quiet']}"

    # The agent speaking makes the same session active again.
    said = await puppets[SOFIA].send_text(room_id, "I am back")
    said_at = await event_ts(owner, room_id, said)
    back = await wait_for(
        lambda: session_where(db, SOFIA, cid, last_activity_at=said_at),
        what="the agent's message to move the session",
    )
    assert_fresh_session_active(back)  # active again (unless it is already 2 s quiet)
    assert back["id"] == first["id"]
    assert len(await sessions_of(db, SOFIA, cid)) == 1


async def test_mentions_move_the_session(e2e, bridge, people, db):
    owner = await people(AGENT_OWNER)
    room_id, channel = await agent_channel(db, owner, SOFIA, "E2E mentions")
    cid = channel["id"]

    async def idle() -> Any:
        return await session_where(db, SOFIA, cid, status="idle")

    quiet = await wait_for(idle, IDLE_LATEST + 5, what="the session to turn idle")

    # Not a mention: her name inside a longer word.
    other = await owner.send_text(room_id, "Sofia Testovana is someone else")
    await wait_message(db, other)
    still = await open_session(db, SOFIA, cid)
    assert still["status"] == "idle"
    assert still["last_activity_at"] == quiet["last_activity_at"], "a non-mention moved it"

    previous = quiet["last_activity_at"]
    variants = {
        "m.mentions": {
            "msgtype": "m.text",
            "body": "could you help?",
            "m.mentions": {"user_ids": [SOFIA]},
        },
        "Matrix id in the body": {"msgtype": "m.text", "body": f"ping {SOFIA} please"},
        "display name in the body": {"msgtype": "m.text", "body": "sofia testova, what's up?"},
        "pill in formatted_body": {
            "msgtype": "m.text",
            "body": "hey you",
            "format": "org.matrix.custom.html",
            "formatted_body": f'hey <a href="https://matrix.to/#/{SOFIA}">you</a>',
        },
    }
    for what, content in variants.items():
        await asyncio.sleep(0.01)  # a later origin_server_ts than the last one
        event_id = await owner.send(room_id, "m.room.message", content)
        at = await event_ts(owner, room_id, event_id)
        moved = await wait_for(
            lambda at=at: session_where(db, SOFIA, cid, last_activity_at=at),
            what=f"a mention by {what} to move the session",
        )
        assert_fresh_session_active(moved)
        assert moved["id"] == quiet["id"], "a mention must move the open session, not open one"
        assert moved["last_activity_at"] > previous
        previous = moved["last_activity_at"]


async def test_leave_and_kick_close_the_session(e2e, bridge, people, db, puppets):
    owner = await people(AGENT_OWNER)
    left_room, left = await agent_channel(db, owner, SOFIA, "E2E sofia leaves")
    kicked_room, kicked = await agent_channel(db, owner, SOFIA, "E2E sofia kicked")

    await puppets[SOFIA].leave(left_room)
    await owner.kick(kicked_room, SOFIA, "e2e kick")

    for room_id, channel in ((left_room, left), (kicked_room, kicked)):

        async def closed(cid=channel["id"]) -> Any:
            sessions = await sessions_of(db, SOFIA, cid)
            return sessions if sessions and all(s["status"] == "closed" for s in sessions) else None

        sessions = await wait_for(closed, what=f"sofia's session in {room_id} to close")
        assert len(sessions) == 1
        member = await wait_for(
            lambda cid=channel["id"]: member_row(db, cid, SOFIA), what="sofia's member row"
        )
        assert member["left_at"] is not None, f"left_at not set in {room_id}"

    # Invited again: the member row comes back, and a new session opens beside the closed.
    old_member = await member_row(db, kicked["id"], SOFIA)
    await owner.invite(kicked_room, SOFIA)
    await wait_membership(owner, kicked_room, SOFIA, "join")
    fresh = await wait_for(lambda: open_session(db, SOFIA, kicked["id"]), what="a new session")
    assert_fresh_session_active(fresh)
    sessions = await sessions_of(db, SOFIA, kicked["id"])
    assert [s["status"] for s in sessions].count("closed") == 1, [dict(s) for s in sessions]
    assert len(sessions) == 2
    member = await wait_for(
        lambda: member_row(db, kicked["id"], SOFIA), what="sofia's member row again"
    )
    back = await wait_for(
        lambda: db.fetchrow(
            "SELECT * FROM channel_members WHERE id = $1 AND left_at IS NULL", old_member["id"]
        ),
        what="left_at cleared on the rejoin",
    )
    assert back["role"] == "agent" and member["id"] == old_member["id"]


# -- spaces -----------------------------------------------------------------------------------


async def test_rooms_in_a_microdao_space_are_its_channels(e2e, bridge, people, db, stack):
    owner = await people(AGENT_OWNER)
    space_owner = await people(DAO_OWNER)

    def parent(via: list[str]) -> list[dict[str, Any]]:
        return [
            {
                "type": "m.space.parent",
                "state_key": stack.space_id,
                "content": {"via": via, "canonical": True},
            }
        ]

    async def microdao_of(room_id: str) -> str:
        channel = await wait_for(lambda: channel_row(db, room_id), what=f"channel {room_id}")
        return await db.fetchval(
            "SELECT external_id FROM microdaos WHERE id = $1", channel["microdao_id"]
        )

    # The agent (whose own microDAO is ag-core) is invited into a room under the space,
    # its parent set by the space's owner (a parent set by someone without power in the
    # space counts for nothing: tests/e2e/test_hostile_rooms.py).
    agent_room, _ = await agent_channel(
        db, space_owner, SOFIA, "E2E space agent room", initial_state=parent([D])
    )
    # The bot (whose fallback is the default microDAO) likewise.
    bot_room, _ = await open_channel(
        db, space_owner, e2e.bot, "E2E space bot room", initial_state=parent([D])
    )
    # A room the space lists as its child, without a parent of its own (the bot is in the
    # public space since the start, so it can read the space's children).
    child_room = await owner.create_room(name="E2E space child room", preset="private_chat")
    await space_owner.put_state(stack.space_id, "m.space.child", {"via": [D]}, child_room)
    await owner.invite(child_room, e2e.bot)
    # An m.space.parent without `via` is no link.
    unlinked_room, _ = await open_channel(
        db, space_owner, e2e.bot, "E2E space no via", initial_state=parent([])
    )

    assert await microdao_of(agent_room) == SPACE_DAO
    assert await microdao_of(bot_room) == SPACE_DAO
    assert await microdao_of(child_room) == SPACE_DAO
    assert await microdao_of(unlinked_room) == e2e.microdao


async def test_a_channel_follows_its_room_into_a_space(e2e, bridge, people, db, stack):
    """After the room became a channel: the space's owner lists it as a child, and it
    moves to the space's microDAO; a stranger's m.space.parent moves nothing."""
    space_owner = await people(DAO_OWNER)
    stranger = await people(STRANGER2)

    async def microdao_of(room_id: str) -> str:
        sql = (
            "SELECT d.external_id FROM channels c JOIN microdaos d ON d.id = c.microdao_id "
            "WHERE c.matrix_room_id = $1"
        )
        return await db.fetchval(sql, room_id)

    listed, _ = await open_channel(db, space_owner, e2e.bot, "E2E listed later")
    claimed, _ = await open_channel(db, stranger, e2e.bot, "E2E claimed later")
    assert (await microdao_of(listed), await microdao_of(claimed)) == (e2e.microdao,) * 2

    await space_owner.put_state(stack.space_id, "m.space.child", {"via": [D]}, listed)
    await stranger.put_state(claimed, "m.space.parent", {"via": [D]}, stack.space_id)

    async def moved() -> bool:
        return await microdao_of(listed) == SPACE_DAO

    await wait_for(moved, what="the listed room's channel in the space's microDAO")

    # The stranger may not add children to the space: the bridge says it ignored the
    # claim, and the channel stayed.
    async def refused() -> bool:
        text = stack.log_file.read_text(encoding="utf-8", errors="replace")
        return f"Ignoring parent {stack.space_id} of {claimed}" in text

    await wait_for(refused, what="the stranger's parent ignored")
    assert await microdao_of(claimed) == e2e.microdao


# -- restart ----------------------------------------------------------------------------------


async def test_restart_keeps_sessions_and_sends_no_profiles(e2e, bridge, people, db, puppets):
    owner = await people(AGENT_OWNER)
    quiet_room, quiet = await agent_channel(db, owner, SOFIA, "E2E quiet over restart")
    busy_room, busy = await agent_channel(db, owner, SOFIA, "E2E busy over restart")
    before = await open_session(db, SOFIA, quiet["id"])
    assert_fresh_session_active(before)

    await bridge.stop()
    # While the bridge is down: the agent speaks in one room, the other stays quiet past
    # the timeout.
    said = await puppets[SOFIA].send_text(busy_room, "said while the bridge was down")
    said_at = await event_ts(owner, busy_room, said)
    await asyncio.sleep(IDLE_AFTER + 0.5)
    watch = LogWatch.from_now(bridge.log_file)
    await bridge.start()

    async def idle() -> Any:
        return await session_where(db, SOFIA, quiet["id"], status="idle")

    after = await wait_for(idle, 5, what="the quiet session to turn idle after the restart")
    assert after["id"] == before["id"]
    assert after["last_activity_at"] == before["last_activity_at"], "a restart is no activity"

    row = await wait_message(db, said, timeout=20)
    assert (row["sender_type"], row["sender_user_id"]) == ("agent", None)
    await wait_for(
        lambda: session_where(db, SOFIA, busy["id"], last_activity_at=said_at),
        what="the message sent while down to move the session",
    )
    await watch.wait("Config applied")
    set_up = watch.matching("is set up as")
    assert not set_up, f"profiles sent again though nothing changed: {set_up}"


# -- SIGHUP -----------------------------------------------------------------------------------


def edit_config(stack: AgentStack, edit) -> None:
    derive_config(stack.config, stack.config, edit)


def agent_entry(cfg: Any, external_id: str) -> Any:
    return next(a for a in cfg["agents"] if a["external_id"] == external_id)


async def test_sighup_adds_renames_and_removes_agents(e2e, bridge, people, db, stack):
    owner = await people(AGENT_OWNER)
    dao_owner = await people(DAO_OWNER)
    doomed_room, doomed_channel = await agent_channel(db, owner, DOOMED, "E2E doomed")
    renamed_room, renamed_channel = await agent_channel(db, owner, RENAMED, "E2E renamed")
    renamed_before = await agent_row(db, "agent:renamed")
    renamed_session = await open_session(db, RENAMED, renamed_channel["id"])
    assert await agent_row(db, "agent:newbie") is None
    sofia_room, sofia_channel = await agent_channel(db, owner, SOFIA, "E2E sofia over reload")
    sofia_idle = await wait_for(
        lambda: session_where(db, SOFIA, sofia_channel["id"], status="idle"),
        IDLE_LATEST + 5,
        what="sofia's session to turn idle",
    )
    pid, starts = bridge.proc.pid, bridge.starts

    def change(cfg: Any) -> None:
        cfg["blueprints"].append(
            {"code": "ag_new", "model": "new-model", "capabilities": {"tools": ["triage"]}}
        )
        cfg["agents"] = [a for a in cfg["agents"] if a["external_id"] != "agent:doomed"]
        agent_entry(cfg, "agent:renamed")["name"] = "New Name Agent"
        agent_entry(cfg, "agent:sofia")["avatar"] = NEW_AVATAR
        core = next(m for m in cfg["microdaos"] if m["external_id"] == CORE)
        core["members"][mxid(DAO_MEMBER)] = "admin"
        cfg["agents"].append(
            {
                "external_id": "agent:newbie",
                "name": "Newbie Agent",
                "kind": "assistant",
                "blueprint": "ag_new",
                "microdao": CORE,
            }
        )

    edit_config(stack, change)
    watch = LogWatch.from_now(stack.log_file)
    os.kill(pid, signal.SIGHUP)
    await watch.wait("Config applied")
    assert not watch.matching("Config not reloaded"), watch.lines()
    assert not watch.matching("restart the bridge"), "only the lists changed"

    # Added: its rows, its puppet with its name, live for the user query and invites.
    newbie = await agent_row(db, "agent:newbie")
    assert newbie is not None, "no agents row for the added agent"
    assert (newbie["name"], newbie["kind"], newbie["matrix_id"]) == (
        "Newbie Agent",
        "assistant",
        NEWBIE,
    )
    assert (newbie["blueprint_code"], newbie["microdao_external_id"]) == ("ag_new", CORE)
    assert (await profile(owner, NEWBIE)).get("displayname") == "Newbie Agent"
    assert await query_user(bridge.port, e2e.hs_token, NEWBIE) == 200
    await agent_channel(db, dao_owner, NEWBIE, "E2E newbie")  # the microDAO's owner may

    # A member made admin may now bring the microDAO's agent into a private room.
    promoted = await people(DAO_MEMBER)
    core_role = await db.fetchval(
        "SELECT m.role FROM microdao_members m JOIN microdaos d ON d.id = m.microdao_id "
        "JOIN users u ON u.id = m.user_id WHERE d.external_id = $1 AND u.matrix_id = $2",
        CORE,
        promoted.user_id,
    )
    assert core_role == "admin"
    await agent_channel(db, promoted, SOFIA, "E2E promoted member")

    # Renamed: the same row with the new name, on the homeserver and in its room.
    renamed = await agent_row(db, "agent:renamed")
    assert renamed["id"] == renamed_before["id"] and renamed["name"] == "New Name Agent"
    assert (await profile(owner, RENAMED)).get("displayname") == "New Name Agent"

    async def room_shows_new_name() -> bool:
        member = await owner.state(renamed_room, "m.room.member", RENAMED)
        return bool(member) and member.get("displayname") == "New Name Agent"

    await wait_for(room_shows_new_name, what="the room to show the new name")
    # The profile change is a join event: still the one session, the member still in.
    cid = renamed_channel["id"]
    await asyncio.sleep(0.5)
    assert (await open_session(db, RENAMED, cid))["id"] == renamed_session["id"]
    assert len(await sessions_of(db, RENAMED, cid)) == 1
    assert (await member_row(db, cid, RENAMED))["left_at"] is None
    # Mentions follow the new name, not the old one.
    old = await owner.send_text(renamed_room, "Old Name Agent, hello?")
    await wait_message(db, old)
    assert (await open_session(db, RENAMED, cid))["last_activity_at"] == renamed_session[
        "last_activity_at"
    ], "the old name still counts as a mention"
    new = await owner.send_text(renamed_room, "New Name Agent, hello!")
    new_at = await event_ts(owner, renamed_room, new)
    await wait_for(
        lambda: session_where(db, RENAMED, cid, last_activity_at=new_at),
        what="a mention by the new name to move the session",
    )

    # A new avatar: on the homeserver and in the room; the profile change (a join event
    # in each of the agent's rooms) is no activity: the idle session stays as it was.
    assert (await profile(owner, SOFIA)).get("avatar_url") == NEW_AVATAR

    async def room_shows_new_avatar() -> bool:
        member = await owner.state(sofia_room, "m.room.member", SOFIA)
        return bool(member) and member.get("avatar_url") == NEW_AVATAR

    await wait_for(room_shows_new_avatar, what="the room to show the new avatar")
    later = await owner.send_text(sofia_room, "nothing for agents here")
    await wait_message(db, later)  # pushed after the profile change's join event
    after = await open_session(db, SOFIA, sofia_channel["id"])
    assert after["id"] == sofia_idle["id"]
    assert after["status"] == "idle", "a profile change woke the session"
    assert after["last_activity_at"] == sofia_idle["last_activity_at"]

    # Removed: the row stays, the session closes, the puppet leaves its room.
    assert await agent_row(db, "agent:doomed") is not None, "a removed agent's row is kept"
    await wait_membership(owner, doomed_room, DOOMED, "leave")
    did = doomed_channel["id"]

    async def doomed_closed() -> Any:
        sessions = await sessions_of(db, DOOMED, did)
        return sessions if sessions and all(s["status"] == "closed" for s in sessions) else None

    await wait_for(doomed_closed, what="the removed agent's session to close")

    async def doomed_left() -> Any:
        m = await member_row(db, did, DOOMED)
        return m if m is not None and m["left_at"] is not None else None

    await wait_for(doomed_left, what="the removed agent's left_at")
    assert await query_user(bridge.port, e2e.hs_token, DOOMED) == 404

    # All without a restart.
    assert bridge.running and bridge.proc.pid == pid and bridge.starts == starts


async def test_sighup_with_a_broken_config_keeps_the_running_one(e2e, bridge, people, db, stack):
    owner = await people(AGENT_OWNER)
    room_id, channel = await agent_channel(db, owner, SOFIA, "E2E after broken reload")
    pid = bridge.proc.pid
    good = stack.config.read_bytes()
    n_agents = len(load_yaml(stack.config)["agents"])

    def unknown_blueprint(cfg: Any) -> None:
        cfg["agents"].append(
            {
                "external_id": "agent:broken",
                "name": "Broken",
                "kind": "assistant",
                "blueprint": "no_such_blueprint",
            }
        )

    def uncovered_localpart(cfg: Any) -> None:
        cfg["agents"].append(
            {
                "external_id": "agent:broken",
                "name": "Broken",
                "kind": "assistant",
                "blueprint": "ag_guide",
                "localpart": "broken-outside",
            }
        )

    cases = [
        (unknown_blueprint, (f"agents[{n_agents}] (agent:broken)", "no_such_blueprint")),
        (uncovered_localpart, ("agent:broken", f"@broken-outside:{D}")),
    ]
    try:
        for edit, needles in cases:
            edit_config(stack, edit)
            watch = LogWatch.from_now(stack.log_file)
            os.kill(pid, signal.SIGHUP)
            line = await watch.wait("Config not reloaded")
            for needle in needles:
                assert needle in line, f"{needle!r} not named in: {line}"
            await asyncio.sleep(0.5)  # anything else the reload would (wrongly) log
            errors = [x for x in watch.lines() if " ERROR " in x or "Traceback" in x]
            assert errors == [line], f"expected one error line, got {errors}"
            assert not watch.matching("Config applied")
            assert bridge.running and bridge.proc.pid == pid
            stack.config.write_bytes(good)
    finally:
        stack.config.write_bytes(good)

    assert await agent_row(db, "agent:broken") is None
    assert await query_user(bridge.port, e2e.hs_token, BROKEN) == 404
    assert await query_user(bridge.port, e2e.hs_token, SOFIA) == 200
    # Still indexing, with the roster it had.
    sent = await owner.send_text(room_id, f"{SOFIA_NAME}, still there?")
    at = await event_ts(owner, room_id, sent)
    assert (await wait_message(db, sent))["sender_type"] == "human"
    await wait_for(
        lambda: session_where(db, SOFIA, channel["id"], last_activity_at=at),
        what="mentions to work after the refused reload",
    )


async def test_sighup_says_other_sections_need_a_restart(e2e, bridge, db, stack):
    pid = bridge.proc.pid
    good = stack.config.read_bytes()

    def change(cfg: Any) -> None:
        cfg["bridge"]["preview_length"] = 100
        agent_entry(cfg, "agent:city")["kind"] = "node"

    try:
        edit_config(stack, change)
        watch = LogWatch.from_now(stack.log_file)
        os.kill(pid, signal.SIGHUP)
        await watch.wait("Config applied")
        warned = watch.matching("restart the bridge")
        assert len(warned) == 1, watch.lines()
        assert (await agent_row(db, "agent:city"))["kind"] == "node", "the lists still apply"
        assert bridge.running and bridge.proc.pid == pid
    finally:
        stack.config.write_bytes(good)
