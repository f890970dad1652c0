"""Whom a room is open to, and who may invite into it (translate/rooms.py, policy/)."""

from __future__ import annotations

from typing import Any

import pytest

from daarion_bridge.config.roster import AgentSpec
from daarion_bridge.policy.invites import agent_invite_allowed, spaces_open_to
from daarion_bridge.translate.rooms import (
    Access,
    access_from,
    invite_level,
    may_invite,
    open_to,
    snapshot_from_state,
)

X_SPACE, Y_SPACE = "!xspace:localhost", "!yspace:localhost"
PRIVATE = "!mine:localhost"  # someone's private room
LINKED = {X_SPACE: "microdao:x", Y_SPACE: "microdao:y"}
MEMBER = "@member:localhost"


def agent(microdao: str | None) -> AgentSpec:
    return AgentSpec("agent:a", "A", "assistant", "bp", "@agent-a:localhost", microdao)


def allow(*rooms: Any) -> list[Any]:
    return [{"type": "m.room_membership", "room_id": r} for r in rooms]


@pytest.mark.parametrize(
    ("content", "access"),
    [
        ({"join_rule": "public"}, Access("public")),
        ({"join_rule": "restricted", "allow": allow(X_SPACE, PRIVATE)},
         Access("restricted", (X_SPACE, PRIVATE))),
        # Only room-membership entries with a room id name a room.
        ({"join_rule": "restricted", "allow": [{"type": "other", "room_id": X_SPACE},
                                               {"type": "m.room_membership"}, "x", *allow(5, "")]},
         Access("restricted")),
        ({"join_rule": "restricted", "allow": "x"}, Access("restricted")),
        ({"join_rule": 5}, Access(None)),
        ({}, Access(None)),
        ("junk", Access(None)),
    ],
)  # fmt: skip
def test_access_from(content: Any, access: Access) -> None:
    assert access_from(content) == access


@pytest.mark.parametrize(
    ("access", "spaces", "visibility"),
    [
        (Access("public"), set(), "public"),
        (Access("restricted", (X_SPACE,)), {X_SPACE}, "microdao"),
        (Access("knock_restricted", (PRIVATE, X_SPACE)), {X_SPACE}, "microdao"),
        # The repro: restricted to a private room of the inviter's own.
        (Access("restricted", (PRIVATE,)), {X_SPACE}, "private"),
        (Access("restricted", (Y_SPACE,)), {X_SPACE}, "private"),  # another microDAO's
        (Access("restricted", (X_SPACE,)), set(), "private"),  # the microDAO has no space
        (Access("restricted"), {X_SPACE}, "private"),
        (Access("invite"), {X_SPACE}, "private"),
        (Access("knock"), {X_SPACE}, "private"),
        (Access(None), {X_SPACE}, None),
        (None, {X_SPACE}, None),
    ],
)
def test_open_to(access: Access | None, spaces: set[str], visibility: str | None) -> None:
    assert open_to(access, spaces) == visibility


def test_spaces_open_to_an_agent() -> None:
    assert spaces_open_to(agent("microdao:x"), LINKED) == {X_SPACE}
    assert spaces_open_to(agent("microdao:z"), LINKED) == frozenset()
    assert spaces_open_to(agent(None), LINKED) == {X_SPACE, Y_SPACE}  # the city's agents


def test_a_member_may_not_bring_the_agent_into_a_room_restricted_to_their_own() -> None:
    """Item 2 of the hardening issue, as the puppet's rules and the command see it."""
    x_agent = agent("microdao:x")
    mine = open_to(Access("restricted", (PRIVATE,)), spaces_open_to(x_agent, LINKED))
    assert not agent_invite_allowed(MEMBER, x_agent, "member", mine)
    x_room = open_to(Access("restricted", (X_SPACE,)), spaces_open_to(x_agent, LINKED))
    assert agent_invite_allowed(MEMBER, x_agent, "member", x_room)
    # The city's agent: a room restricted to a microDAO's space is open, a private room not.
    city = agent(None)
    y_room = open_to(Access("restricted", (Y_SPACE,)), spaces_open_to(city, LINKED))
    assert agent_invite_allowed(MEMBER, city, None, y_room)
    mine = open_to(Access("restricted", (PRIVATE,)), spaces_open_to(city, LINKED))
    assert not agent_invite_allowed(MEMBER, city, None, mine)


@pytest.mark.parametrize(
    ("power", "creators", "allowed"),
    [
        (None, (), True),  # no power levels: anyone
        ({"users": {}}, (), True),  # invite defaults to 0
        ({"invite": 50, "users": {MEMBER: 0}}, (), False),
        ({"invite": 50, "users": {MEMBER: 50}}, (), True),
        ({"invite": "50", "users_default": 10}, (), False),
        ({"invite": 50}, (MEMBER,), True),  # a creator of a version 12 room
        ({"invite": "junk"}, (), True),
    ],
)
def test_may_invite(power: Any, creators: tuple[str, ...], allowed: bool) -> None:
    assert may_invite(MEMBER, power, creators) is allowed


def test_invite_level_and_access_in_the_snapshot() -> None:
    def ev(etype: str, content: Any) -> dict[str, Any]:
        return {"type": etype, "state_key": "", "sender": MEMBER, "content": content}

    snap = snapshot_from_state(
        "!r:localhost",
        [
            ev("m.room.create", {"room_version": "10"}),
            ev("m.room.power_levels", {"invite": 50, "users": {MEMBER: 100}}),
            ev("m.room.join_rules", {"join_rule": "restricted", "allow": allow(PRIVATE)}),
        ],
    )
    assert snap.access == Access("restricted", (PRIVATE,))
    assert snap.visibility == "microdao"  # the channel's column: how the room is joined
    assert invite_level(snap.power_levels) == 50
    assert invite_level(None) == 0
