"""Bot commands end to end: a real Synapse, the real bridge process (its own database,
log and config: permissions, two microDAOs, two agents, NATS on), people typing
`!daarion ...` in a room with the bot and reading its answers from the room's history
as Element shows them (an `m.notice` from the bot, a reply to the command)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.e2e.agents_helpers import AsPuppet, as_token_of, open_session, wait_membership
from tests.e2e.helpers import (
    Person,
    channel_row,
    member_row,
    open_channel,
    own_fixtures,
    own_index,
    stream_events,
    wait_for,
)
from tests.e2e.test_log_hygiene import log_records

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

D = "localhost"
ADMIN, USER, NOBODY = "cmd.admin", "cmd.user", "cmd.nobody"
HELPER = f"@agent-cmdhelper:{D}"  # owned by cmd.user: the user may bring it anywhere
LOCKED = f"@agent-cmdlocked:{D}"  # of microDAO cmd-core, where cmd.user is nobody
CORE, LINKED = "microdao:cmd-core", "microdao:cmd-y"
DEFAULT = "microdao:e2e"  # the session config's bridge.default_microdao
CANARY = f"canary-{uuid.uuid4().hex[:12]}"


def mxid(localpart: str) -> str:
    return f"@{localpart}:{D}"


@dataclass
class Stack:
    config: Path
    database_url: str
    log_file: Path
    as_token: str
    base_url: str


own = own_fixtures("commands", index="stack")
nats, db, bridge = own.nats, own.db, own.bridge


@pytest.fixture(scope="module")
async def stack(e2e, pg_server_url, nats) -> Stack:
    def edit(cfg: Any) -> None:
        cfg["nats"] = {"url": nats.url, "stream": "CMDTEST"}
        cfg["bridge"]["permissions"] = {mxid(ADMIN): "admin", mxid(USER): "user"}
        cfg["microdaos"] = [
            {"external_id": CORE, "name": "Commands Core", "owner": mxid(ADMIN)},
            {"external_id": LINKED, "name": "Commands Y", "owner": mxid(ADMIN)},
        ]
        cfg["blueprints"] = [{"code": "cmd_bp", "model": "test"}]
        cfg["agents"] = [
            {"external_id": "agent:cmdhelper", "name": "Cmd Helper", "kind": "assistant",
             "blueprint": "cmd_bp", "owner": mxid(USER)},
            {"external_id": "agent:cmdlocked", "name": "Cmd Locked", "kind": "node",
             "blueprint": "cmd_bp", "microdao": CORE},
        ]  # fmt: skip

    index = await own_index(e2e, pg_server_url, "commands", edit)
    return Stack(
        index.config,
        index.database_url,
        index.log_file,
        as_token_of(index.config),
        e2e.synapse.base_url,
    )


@dataclass
class Room:
    room_id: str
    channel: Any
    admin: Person
    user: Person
    nobody: Person


@pytest.fixture(scope="module")
async def room(e2e, bridge, people, db) -> Room:
    """A private room of the admin with the bot (a channel of the default microDAO), the
    user and someone bridge.permissions does not list."""
    admin, user, nobody = await people(ADMIN), await people(USER), await people(NOBODY)
    room_id, channel = await open_channel(db, admin, e2e.bot, "E2E commands")
    for person in (user, nobody):
        await admin.invite(room_id, person.user_id)
        await person.join(room_id)
    return Room(room_id, channel, admin, user, nobody)


def reply_to(event: dict[str, Any]) -> str | None:
    relates = event.get("content", {}).get("m.relates_to")
    reply = relates.get("m.in_reply_to") if isinstance(relates, dict) else None
    return reply.get("event_id") if isinstance(reply, dict) else None


async def answers_to(reader: Person, room_id: str, event_id: str) -> list[dict[str, Any]]:
    return [e for e in await reader.history(room_id) if reply_to(e) == event_id]


async def ask(e2e: Any, person: Person, room_id: str, body: str) -> str:
    """Send a command as the person; the bot's answer as Element shows it."""
    event_id = await person.send_text(room_id, body)

    async def answered() -> list[dict[str, Any]]:
        return await answers_to(person, room_id, event_id)

    found = await wait_for(answered, 15, interval=0.1, what=f"an answer to {body!r}")
    assert len(found) == 1, found
    answer = found[0]
    assert answer["sender"] == e2e.bot
    assert answer["type"] == "m.room.message"
    assert answer["content"]["msgtype"] == "m.notice"
    return answer["content"]["body"]


async def microdao_of_channel(db: asyncpg.Pool, room_id: str) -> str:
    return await db.fetchval(
        "SELECT d.external_id FROM channels c JOIN microdaos d ON d.id = c.microdao_id "
        "WHERE c.matrix_room_id = $1",
        room_id,
    )


# -- the commands --------------------------------------------------------------------------


async def test_help_lists_what_each_may_use(e2e, room) -> None:
    admin_help = await ask(e2e, room.admin, room.room_id, "!daarion help")
    user_help = await ask(e2e, room.user, room.room_id, "!daarion")  # bare: help
    assert admin_help.startswith("!daarion commands you may use (admin):")
    assert user_help.startswith("!daarion commands you may use (user):")
    for usage in ("help", "status", "agents", "invite <agent>"):
        assert f"!daarion {usage}:" in admin_help and f"!daarion {usage}:" in user_help
    for usage in ("link <microdao>", "unlink"):
        assert f"!daarion {usage}:" in admin_help
        assert f"!daarion {usage}:" not in user_help


async def test_status(e2e, room, db) -> None:
    answer = await ask(e2e, room.user, room.room_id, "!daarion status")
    lines = answer.splitlines()
    assert lines[0] == "Bridge status:"
    assert re.fullmatch(r"  Homeserver: reachable \(\d+ ms\)", lines[1]), lines
    assert lines[2] == "  Database: reachable"
    assert lines[3] == "  NATS: connected"
    backlog = re.fullmatch(r"  Outbox backlog: (\d+) event\(s\) not yet published", lines[4])
    assert backlog is not None, lines
    # The publisher keeps up: what was waiting then is sent within moments.
    await wait_for(
        lambda: db.fetchval(
            "SELECT count(*) = 0 FROM bridge_outbox "
            "WHERE id > (SELECT last_sent_id FROM bridge_outbox_cursor)"
        ),
        10,
        what="an empty outbox backlog",
    )


async def test_unknown_command_and_missing_rights(e2e, room) -> None:
    assert await ask(e2e, room.user, room.room_id, "!daarion frobnicate now") == (
        "Unknown command 'frobnicate'. Say !daarion help for the list."
    )
    refused = "You may not use the bridge's commands here (bridge.permissions does not list you)."
    assert await ask(e2e, room.nobody, room.room_id, "!daarion help") == refused
    assert await ask(e2e, room.nobody, room.room_id, f"!daarion link {LINKED}") == refused


async def test_link_and_unlink(e2e, room, db) -> None:
    assert await microdao_of_channel(db, room.room_id) == DEFAULT
    answer = await ask(e2e, room.user, room.room_id, f"!daarion link {LINKED}")
    assert answer == "!daarion link needs the admin level; you have user."
    assert await microdao_of_channel(db, room.room_id) == DEFAULT

    answer = await ask(e2e, room.admin, room.room_id, f"!daarion link {LINKED}")
    assert answer.startswith(f"This room is now a channel of {LINKED}, was {DEFAULT}; slug ")
    assert await microdao_of_channel(db, room.room_id) == LINKED
    # The platform hears of it once, on NATS (through the outbox).
    updated = await wait_for(
        lambda: db.fetchrow(
            "SELECT payload::text AS payload FROM bridge_outbox "
            "WHERE id <= (SELECT last_sent_id FROM bridge_outbox_cursor) "
            "AND subject = 'messaging.channel.updated' AND payload->>'microdao_id' = $1",
            LINKED,
        ),
        10,
        what="the channel.updated event published",
    )
    assert f'"previous_microdao_id": "{DEFAULT}"' in updated["payload"]

    answer = await ask(e2e, room.admin, room.room_id, "!daarion unlink")
    assert answer.startswith(f"This room is now a channel of {DEFAULT}, was {LINKED}")
    assert await microdao_of_channel(db, room.room_id) == DEFAULT


async def test_agents_and_invite(e2e, room, db, stack) -> None:
    answer = await ask(e2e, room.user, room.room_id, "!daarion agents")
    assert answer.splitlines() == [
        "Agents:",
        "  Cmd Helper (agent:cmdhelper): not in this room, no open session here",
        "  Cmd Locked (agent:cmdlocked): not in this room, no open session here",
    ]

    # Not the user's to bring: refused, and the puppet is not even invited.
    answer = await ask(e2e, room.user, room.room_id, "!daarion invite agent:cmdlocked")
    assert answer.startswith("You may not invite Cmd Locked (agent:cmdlocked) here")
    assert await room.user.membership(room.room_id, LOCKED) is None

    # The user owns Cmd Helper: the bot invites it and it joins, and stays.
    answer = await ask(e2e, room.user, room.room_id, "!daarion invite agent:cmdhelper")
    assert answer == "Cmd Helper (agent:cmdhelper) joined this room."
    await wait_membership(room.user, room.room_id, HELPER, "join")
    history = await room.user.history(room.room_id)
    invites = [
        e
        for e in history
        if e["type"] == "m.room.member"
        and e.get("state_key") == HELPER
        and e["content"].get("membership") == "invite"
    ]
    assert [e["sender"] for e in invites] == [e2e.bot]
    member = await wait_for(
        lambda: member_row(db, room.channel["id"], HELPER), what="the agent's member row"
    )
    assert member["role"] == "agent" and member["left_at"] is None
    await wait_for(lambda: open_session(db, HELPER, room.channel["id"]), what="its session")

    answer = await ask(e2e, room.user, room.room_id, "!daarion invite Cmd Helper")
    assert answer == "Cmd Helper (agent:cmdhelper) is already in this room."
    answer = await ask(e2e, room.user, room.room_id, "!daarion agents")
    assert "  Cmd Helper (agent:cmdhelper): in this room, session active" in answer.splitlines()
    # The puppet's invite rules did not send it away in the meantime.
    assert await room.user.membership(room.room_id, HELPER) == "join"

    # An agent's "command" is no command.
    puppet = AsPuppet(stack.base_url, HELPER, stack.as_token)
    try:
        from_agent = await puppet.send_text(room.room_id, "!daarion help")
    finally:
        await puppet.close()
    # Anything after it is answered, so by then the agent's message was seen and ignored.
    await ask(e2e, room.user, room.room_id, "!daarion help")
    assert await answers_to(room.user, room.room_id, from_agent) == []


async def test_the_bots_answers_are_no_commands(e2e, room) -> None:
    await ask(e2e, room.user, room.room_id, "!daarion help")
    history = await room.user.history(room.room_id)
    by_bot = {e["event_id"] for e in history if e["sender"] == e2e.bot}
    assert by_bot, "the bot answered nothing"
    assert not [e for e in history if reply_to(e) in by_bot]


async def test_the_bot_is_the_system_agent_never_a_person(e2e, room, db, nats) -> None:
    """Its answer is an agent's message, its membership an agent's, and it has no person
    row in the channel (issue 19, item 7)."""
    question = await room.user.send_text(room.room_id, "!daarion help")
    answered = await wait_for(
        lambda: answers_to(room.user, room.room_id, question), 15, what="the bot's answer"
    )
    answer_id = answered[0]["event_id"]
    row = await wait_for(
        lambda: db.fetchrow(
            "SELECT m.sender_type, m.sender_user_id, a.external_id, a.kind FROM messages m "
            "LEFT JOIN agents a ON a.id = m.sender_agent_id WHERE m.matrix_event_id = $1",
            answer_id,
        ),
        15,
        what="the answer indexed",
    )
    assert tuple(row) == ("agent", None, "system:daarion", "system")
    members = await db.fetch(
        "SELECT a.external_id, m.role, m.member_user_id FROM channel_members m "
        "JOIN agents a ON a.id = m.member_agent_id "
        "WHERE m.channel_id = $1 AND m.left_at IS NULL",
        room.channel["id"],
    )
    assert ("system:daarion", "agent", None) in [tuple(r) for r in members]
    as_person = await db.fetchval(
        "SELECT count(*) FROM channel_members m JOIN users u ON u.id = m.member_user_id "
        "WHERE u.matrix_id = $1",
        e2e.bot,
    )
    assert as_person == 0

    async def published() -> list[dict[str, Any]]:
        found = await stream_events(nats.url, "CMDTEST", "messaging.message.created")
        return [e for e in found if e["matrix_event_id"] == answer_id]

    [created] = await wait_for(published, 15, what="the answer on NATS")
    assert (created["sender_id"], created["sender_type"]) == ("system:daarion", "agent")


async def test_command_text_is_not_logged_above_debug(e2e, room, stack) -> None:
    answer = await ask(e2e, room.user, room.room_id, f"!daarion invite {CANARY}")
    assert answer == f"No agent '{CANARY}'. Say !daarion agents for the list."
    answer = await ask(e2e, room.admin, room.room_id, f"!daarion {CANARY}")
    assert answer.startswith(f"Unknown command '{CANARY}'")
    records = log_records(stack.log_file.read_text(encoding="utf-8"))
    with_canary = [(level, r) for level, r in records if CANARY in r]
    assert any(level == "DEBUG" for level, _ in with_canary), "the log under test lacks them"
    assert not [r for level, r in with_canary if level != "DEBUG"]
    assert any("Bot command invite from" in r for level, r in records if level == "INFO")


async def test_channel_row_still_one(db, room) -> None:
    """All of the above changed the room's channel, never made another."""
    row = await channel_row(db, room.room_id)
    assert row is not None and row["id"] == room.channel["id"]
    assert await db.fetchval("SELECT count(*) FROM channels") == 1
