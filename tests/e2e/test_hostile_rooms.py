"""Local users who try to use the bridge against a microDAO, end to end: a real Synapse,
the real bridge process with a microDAO whose space is linked, a database of its own.

Each test is an attack a plain user of the homeserver can mount from Element, and the
legitimate way of doing the same thing next to it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.e2e.agents_helpers import wait_membership
from tests.e2e.helpers import (
    BridgeProcess,
    channel_row,
    index_pool,
    open_channel,
    own_index,
    running_bridge,
    wait_for,
)
from tests.e2e.test_bot_commands import ask

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

D = "localhost"
HX = "microdao:hx"  # has a space
DEFAULT = "microdao:e2e"  # the session config's bridge.default_microdao
SPACE_ADMIN, MOD, MEMBER, EVE = "hx.admin", "hx.mod", "hx.member", "hx.eve"
CITY = f"@agent-hxcity:{D}"  # no owner, no microDAO: anyone may bring it into open rooms
HELPER = f"@agent-hxhelper:{D}"  # of HX: its members may bring it into rooms open to HX


def mxid(localpart: str) -> str:
    return f"@{localpart}:{D}"


@dataclass
class Stack:
    config: Path
    database_url: str
    log_file: Path
    space_id: str


@pytest.fixture(scope="module")
async def stack(e2e, pg_server_url, people) -> Stack:
    """A public space of HX's admin (made before the bridge starts, as an admin would),
    where MOD holds power 50; the bridge links it to HX by its alias."""
    admin, mod = await people(SPACE_ADMIN), await people(MOD)
    alias = f"hx-space-{uuid.uuid4().hex[:8]}"
    space_id = await admin.create_room(
        name="E2E hostile space",
        preset="public_chat",
        creation_content={"type": "m.space"},
        room_alias_name=alias,
    )
    await mod.join(space_id)
    await admin.set_power_level(space_id, mod.user_id, 50)

    def edit(cfg: Any) -> None:
        cfg["microdaos"] = [
            {
                "external_id": HX,
                "name": "Hostile X",
                "owner": mxid(SPACE_ADMIN),
                "members": {mxid(MEMBER): "member"},
                "space": f"#{alias}:{D}",
            }
        ]
        cfg["blueprints"] = [{"code": "hx_bp", "model": "test"}]
        cfg["agents"] = [
            {"external_id": "agent:hxcity", "name": "HX City", "kind": "system",
             "blueprint": "hx_bp"},
            {"external_id": "agent:hxhelper", "name": "HX Helper", "kind": "assistant",
             "blueprint": "hx_bp", "microdao": HX},
        ]  # fmt: skip

    index = await own_index(e2e, pg_server_url, "hostile", edit)
    return Stack(index.config, index.database_url, index.log_file, space_id)


@pytest.fixture(scope="module")
async def db(stack) -> AsyncIterator[asyncpg.Pool]:
    async with index_pool(stack) as pool:
        yield pool


@pytest.fixture(scope="module")
async def bridge(e2e, stack) -> AsyncIterator[BridgeProcess]:
    async with running_bridge(e2e, "hostile", stack) as proc:
        yield proc


async def microdao_of(db: asyncpg.Pool, room_id: str) -> str:
    channel = await wait_for(lambda: channel_row(db, room_id), what=f"channel {room_id}")
    return await db.fetchval(
        "SELECT external_id FROM microdaos WHERE id = $1", channel["microdao_id"]
    )


def parent_of(space_id: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "m.space.parent",
            "state_key": space_id,
            "content": {"via": [D], "canonical": True},
        }
    ]


# -- item 1: a room claims a microDAO's space as its parent -----------------------------------


async def test_a_parent_without_the_spaces_consent_does_not_map_the_room(
    e2e, bridge, people, db, stack
) -> None:
    """Eve (of this homeserver, nobody in the space) names HX's space as her room's
    parent and invites the bot, or the city's agent: the room does not become HX's
    channel, and Eve owns nothing in HX."""
    eve = await people(EVE)
    bot_room, _ = await open_channel(
        db, eve, e2e.bot, "general", initial_state=parent_of(stack.space_id)
    )
    agent_room, _ = await open_channel(
        db,
        eve,
        CITY,
        "E2E hostile agent room",
        preset="public_chat",
        initial_state=parent_of(stack.space_id),
    )
    assert await microdao_of(db, bot_room) == DEFAULT
    assert await microdao_of(db, agent_room) == DEFAULT
    assert not await db.fetchval(
        "SELECT count(*) FROM microdao_members m JOIN microdaos d ON d.id = m.microdao_id "
        "JOIN users u ON u.id = m.user_id WHERE d.external_id = $1 AND u.matrix_id = $2",
        HX,
        eve.user_id,
    )


async def test_a_parent_the_space_accepts_maps_the_room(e2e, bridge, people, db, stack) -> None:
    """The legitimate ways: the parent set by someone who may add children to the space
    (its creator; a moderator with power 50), or a room the space lists."""
    admin, mod, eve = await people(SPACE_ADMIN), await people(MOD), await people(EVE)
    by_admin, _ = await open_channel(
        db, admin, e2e.bot, "E2E parent by admin", initial_state=parent_of(stack.space_id)
    )
    by_mod, _ = await open_channel(
        db, mod, e2e.bot, "E2E parent by mod", initial_state=parent_of(stack.space_id)
    )
    # Eve's parent, and the space's admin lists the room as its child before the bot comes.
    listed = await eve.create_room(name="E2E listed", initial_state=parent_of(stack.space_id))
    await admin.put_state(stack.space_id, "m.space.child", {"via": [D]}, listed)
    await eve.invite(listed, e2e.bot)
    await wait_membership(eve, listed, e2e.bot, "join")
    assert await microdao_of(db, by_admin) == HX
    assert await microdao_of(db, by_mod) == HX
    assert await microdao_of(db, listed) == HX


# -- item 2: bringing an agent where the room's rules do not let you --------------------------


def restricted_to(*rooms: str) -> list[dict[str, Any]]:
    allow = [{"type": "m.room_membership", "room_id": r} for r in rooms]
    return [
        {
            "type": "m.room.join_rules",
            "state_key": "",
            "content": {"join_rule": "restricted", "allow": allow},
        }
    ]


async def test_the_command_needs_the_rooms_invite_level(e2e, bridge, people, db) -> None:
    """The room's moderators raised `invite` to 50: a member of power 0 cannot bring an
    agent in through the bot, though HX's rules would let them; the room's creator can."""
    admin, member = await people(SPACE_ADMIN), await people(MEMBER)
    room_id, _ = await open_channel(
        db,
        admin,
        e2e.bot,
        "E2E invite level",
        preset="public_chat",
        power_level_content_override={"invite": 50},
    )
    await member.join(room_id)
    answer = await ask(e2e, member, room_id, "!daarion invite agent:hxhelper")
    assert answer == (
        "You may not invite HX Helper (agent:hxhelper) here: inviting into this room needs "
        "power level 50."
    )
    assert await member.membership(room_id, HELPER) is None
    answer = await ask(e2e, admin, room_id, "!daarion invite agent:hxhelper")
    assert answer == "HX Helper (agent:hxhelper) joined this room."


async def test_restricted_to_a_private_room_is_not_open_to_the_microdao(
    e2e, bridge, people, db, stack
) -> None:
    """A member of HX may bring HX's agent into rooms open to HX through the bot. A room
    restricted to a private room of the member's own is not open to HX; a room restricted
    to HX's space is."""
    member = await people(MEMBER)
    mine = await member.create_room(name="E2E my private room")
    by_command, _ = await open_channel(
        db, member, e2e.bot, "E2E restricted to mine", initial_state=restricted_to(mine)
    )
    answer = await ask(e2e, member, by_command, "!daarion invite agent:hxhelper")
    assert answer.startswith("You may not invite HX Helper (agent:hxhelper) here: ask its owner")
    assert await member.membership(by_command, HELPER) is None

    in_space, _ = await open_channel(
        db,
        member,
        e2e.bot,
        "E2E restricted to the space",
        initial_state=restricted_to(stack.space_id),
    )
    answer = await ask(e2e, member, in_space, "!daarion invite agent:hxhelper")
    assert answer == "HX Helper (agent:hxhelper) joined this room."


async def test_the_agent_refuses_a_room_restricted_to_a_private_room(
    e2e, bridge, people, db, stack
) -> None:
    """The puppet's own rules, for the member's direct invite: the same line."""
    member = await people(MEMBER)
    mine = await member.create_room(name="E2E my private room")
    direct = await member.create_room(name="E2E direct", initial_state=restricted_to(mine))
    await member.invite(direct, HELPER)
    await wait_membership(member, direct, HELPER, "leave")
    assert await channel_row(db, direct) is None

    direct_ok = await member.create_room(
        name="E2E direct in space", initial_state=restricted_to(mine, stack.space_id)
    )
    await member.invite(direct_ok, HELPER)
    await wait_membership(member, direct_ok, HELPER, "join")
