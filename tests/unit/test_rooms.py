"""Unit tests for daarion_bridge.translate.rooms (pure, no I/O)."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from daarion_bridge.translate.rooms import (
    alias_localpart,
    creators_of,
    name_from_members,
    role_for,
    role_for_level,
    slugify,
    snapshot_from_state,
    visibility_for,
)

ROOM = "!OpaqueRoomId:localhost"
ALICE = "@alice:localhost"
BOB = "@bob:localhost"
CAROL = "@carol:localhost"
DAVE = "@dave:localhost"
SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_ids = itertools.count(1)


# --- builders --------------------------------------------------------------------


def state(etype: str, content: dict[str, Any], state_key: str = "", sender: str = ALICE) -> dict:
    n = next(_ids)
    return {
        "type": etype,
        "state_key": state_key,
        "content": content,
        "sender": sender,
        "room_id": ROOM,
        "event_id": f"$state{n}",
        "origin_server_ts": 1_732_530_000_000 + n,
    }


def create(version: str | None = "12", sender: str = ALICE, **extra: Any) -> dict:
    content: dict[str, Any] = {**extra}
    if version is not None:
        content["room_version"] = version
    return state("m.room.create", content, sender=sender)


def member(user_id: str, membership: str, sender: str | None = None) -> dict:
    return state("m.room.member", {"membership": membership}, user_id, sender or user_id)


POWER_LEVELS = {
    "users": {BOB: 50},
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
    "ban": 50,
    "kick": 50,
    "redact": 50,
    "invite": 0,
}


def full_state(
    name: str | None = "General",
    alias: str | None = "#general-core:localhost",
    version: str = "12",
    power_levels: dict[str, Any] | None = POWER_LEVELS,
) -> list[dict]:
    events = [create(version)]
    events.append(member(ALICE, "join"))
    if power_levels is not None:
        events.append(state("m.room.power_levels", power_levels))
    events.append(state("m.room.join_rules", {"join_rule": "public"}))
    events.append(state("m.room.history_visibility", {"history_visibility": "shared"}))
    if name is not None:
        events.append(state("m.room.name", {"name": name}))
    if alias is not None:
        events.append(state("m.room.canonical_alias", {"alias": alias, "alt_aliases": []}))
    events.append(state("m.room.topic", {"topic": "Where the core team talks"}))
    events.append(member(BOB, "join"))
    events.append(member(CAROL, "invite", sender=ALICE))
    events.append(member(DAVE, "leave"))
    return events


# --- visibility ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("join_rule", "expected"),
    [
        ("public", "public"),
        ("restricted", "microdao"),
        ("knock_restricted", "microdao"),
        ("invite", "private"),
        ("knock", "private"),
        ("private", "private"),
        ("PUBLIC", "private"),
        ("", "private"),
        (None, "private"),
        (5, "private"),
    ],
)
def test_visibility_for(join_rule: Any, expected: str) -> None:
    assert visibility_for(join_rule) == expected


# --- roles -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "role"),
    [
        (-100, "member"),
        (0, "member"),
        (49, "member"),
        (50, "admin"),
        (99, "admin"),
        (100, "owner"),
        (9000, "owner"),
    ],
)
def test_role_for_level(level: int, role: str) -> None:
    assert role_for_level(level) == role


USERS_PL = {
    "users": {
        ALICE: 100,
        BOB: 50,
        CAROL: "50",
        DAVE: " 100 ",
        "@erin:localhost": 49,
        "@frank:localhost": "not a number",
    },
    "users_default": 0,
}


@pytest.mark.parametrize(
    ("user_id", "role"),
    [
        (ALICE, "owner"),
        (BOB, "admin"),
        (CAROL, "admin"),  # string level
        (DAVE, "owner"),  # string level with spaces
        ("@erin:localhost", "member"),
        ("@frank:localhost", "member"),  # unparseable: users_default
        ("@nobody:localhost", "member"),  # not listed: users_default
    ],
)
def test_role_for_users_map(user_id: str, role: str) -> None:
    assert role_for(user_id, USERS_PL, ()) == role


def test_role_for_users_default() -> None:
    pl = {"users": {ALICE: 100}, "users_default": 50}
    assert role_for(BOB, pl, ()) == "admin"
    assert role_for(ALICE, pl, ()) == "owner"


def test_role_for_users_default_as_string() -> None:
    assert role_for(BOB, {"users": {}, "users_default": "100"}, ()) == "owner"


def test_role_for_missing_users_default_is_zero() -> None:
    assert role_for(BOB, {"users": {ALICE: 100}}, ()) == "member"


def test_role_for_bool_level_is_ignored() -> None:
    # True would be level 1 (member) if treated as an int; it must fall back to users_default.
    pl = {"users": {BOB: True, CAROL: False}, "users_default": 50}
    assert role_for(BOB, pl, ()) == "admin"
    assert role_for(CAROL, pl, ()) == "admin"


def test_role_for_bool_users_default_is_ignored() -> None:
    pl = {"users": {BOB: 100}, "users_default": True}
    assert role_for(CAROL, pl, ()) == "member"


def test_role_for_users_not_a_mapping_uses_default() -> None:
    pl = {"users": [BOB, 100], "users_default": 50}
    assert role_for(BOB, pl, ()) == "admin"


def test_role_for_creator_is_always_owner() -> None:
    pl = {"users": {ALICE: 0}, "users_default": 0}
    assert role_for(ALICE, pl, (ALICE,)) == "owner"
    assert role_for(ALICE, None, [ALICE]) == "owner"
    assert role_for(BOB, pl, (ALICE,)) == "member"


@pytest.mark.parametrize("power_levels", [None, {}])
def test_role_for_without_power_levels_is_member(power_levels: Any) -> None:
    assert role_for(BOB, power_levels, ()) == "member"


# --- creators --------------------------------------------------------------------


@pytest.mark.parametrize("version", ["12", "org.matrix.hydra.11"])
@pytest.mark.parametrize("has_power_levels", [True, False])
def test_creators_in_creator_power_versions(version: str, has_power_levels: bool) -> None:
    ev = create(version, additional_creators=[BOB, ALICE, 5, CAROL])
    assert creators_of(ev, has_power_levels) == (ALICE, BOB, CAROL)


def test_creators_v12_without_additional_creators() -> None:
    assert creators_of(create("12"), True) == (ALICE,)


@pytest.mark.parametrize("version", ["1", "6", "10", "11", None])
def test_creators_in_older_versions(version: str | None) -> None:
    ev = create(version, additional_creators=[BOB])
    assert creators_of(ev, has_power_levels=False) == (ALICE,)
    assert creators_of(ev, has_power_levels=True) == ()


@pytest.mark.parametrize("create_event", [None, {}])
def test_creators_without_create_event(create_event: Any) -> None:
    assert creators_of(create_event, True) == ()
    assert creators_of(create_event, False) == ()


# --- slugs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("general", "general"),
        ("General Chat", "general-chat"),
        ("  Hello,   World!! ", "hello-world"),
        ("DAO_7 / Core", "dao-7-core"),
        ("Café Ünïcode naïve", "cafe-unicode-naive"),
        ("--edge--", "edge"),
        ("🎉🎉🎉", "room"),
        ("", "room"),
        ("---", "room"),
        ("🎉 party 🎉", "party"),
    ],
)
def test_slugify(text: str, slug: str) -> None:
    assert slugify(text) == slug


def test_slugify_caps_at_64() -> None:
    assert slugify("a" * 100) == "a" * 64


def test_slugify_cut_leaves_no_trailing_dash() -> None:
    # The 64th character is the dash between the words.
    assert slugify("a" * 63 + " bcd") == "a" * 63


@pytest.mark.parametrize(
    "text", ["a" * 63 + " bcd", "Word " * 40, "x" * 64 + "!", "É" * 80, "a-" * 50]
)
def test_slugify_output_shape(text: str) -> None:
    slug = slugify(text)
    assert len(slug) <= 64
    assert SLUG.match(slug), slug


@pytest.mark.parametrize(
    ("alias", "localpart"),
    [
        ("#general-core:localhost", "general-core"),
        ("#city_kyiv:matrix.daarion.city", "city_kyiv"),
        ("#a:server.org:8448", "a"),
        ("general", "general"),
    ],
)
def test_alias_localpart(alias: str, localpart: str) -> None:
    assert alias_localpart(alias) == localpart


# --- snapshot --------------------------------------------------------------------


def test_snapshot_from_full_state() -> None:
    snap = snapshot_from_state(ROOM, full_state())
    assert snap.room_id == ROOM
    assert snap.name == "General"
    assert snap.slug == "general-core"
    assert snap.visibility == "public"
    assert snap.room_version == "12"
    assert snap.creators == (ALICE,)
    assert snap.power_levels == POWER_LEVELS
    assert snap.joined == (ALICE, BOB)


def test_a_space_is_known_by_its_create_event() -> None:
    assert snapshot_from_state(ROOM, full_state()).is_space is False
    space = [create("12", type="m.space"), member(ALICE, "join")]
    assert snapshot_from_state(ROOM, space).is_space is True


def test_snapshot_joined_keeps_state_order() -> None:
    events = [create("12"), member(BOB, "join"), member(ALICE, "join"), member(CAROL, "ban")]
    assert snapshot_from_state(ROOM, events).joined == (BOB, ALICE)


def test_snapshot_roles_follow_creators_and_power_levels() -> None:
    snap = snapshot_from_state(ROOM, full_state())
    roles = {u: role_for(u, snap.power_levels, snap.creators) for u in snap.joined}
    assert roles == {ALICE: "owner", BOB: "admin"}


def test_snapshot_name_falls_back_to_alias() -> None:
    snap = snapshot_from_state(ROOM, full_state(name=None))
    assert snap.name == "#general-core:localhost"
    assert snap.slug == "general-core"


def test_snapshot_blank_name_falls_back_to_alias() -> None:
    snap = snapshot_from_state(ROOM, full_state(name="   "))
    assert snap.name == "#general-core:localhost"


def test_snapshot_without_name_or_alias_is_named_after_its_members() -> None:
    snap = snapshot_from_state(ROOM, full_state(name=None, alias=None))
    # Joined: Alice and Bob (no display names: localparts); Carol is only invited.
    assert (snap.name, snap.slug, snap.from_members) == ("alice and bob", "alice-and-bob", True)


def test_snapshot_members_name_uses_display_names_and_leaves_out_the_bot() -> None:
    bot = "@daarion:localhost"
    events = [create(), member(ALICE, "join"), member(bot, "join"), member(BOB, "join")]
    events[1]["content"]["displayname"] = "Alice Liddell"
    events[2]["content"]["displayname"] = "DAARION"
    snap = snapshot_from_state(ROOM, events, bot)
    assert (snap.name, snap.slug) == ("Alice Liddell and bob", "alice-liddell-and-bob")
    assert snap.display_names == {ALICE: "Alice Liddell", bot: "DAARION"}
    assert snap.bot_mxid == bot


def test_snapshot_name_falls_back_to_room_id() -> None:
    """Nobody but the bot: no name to make from members."""
    bot = "@daarion:localhost"
    snap = snapshot_from_state(ROOM, [create(), member(bot, "join")], bot)
    assert snap.name == ROOM and snap.from_members
    assert SLUG.match(snap.slug)


def test_a_named_or_aliased_room_is_not_named_after_members() -> None:
    assert not snapshot_from_state(ROOM, full_state()).from_members
    assert not snapshot_from_state(ROOM, full_state(name=None)).from_members


@pytest.mark.parametrize(
    ("members", "name"),
    [
        ([], None),
        ([(BOB, "Bob")], "Bob"),
        ([(BOB, "Bob"), (ALICE, "Alice")], "Alice and Bob"),
        ([(BOB, "Bob"), (ALICE, "Alice"), (CAROL, None)], "Alice and 2 others"),
        ([(BOB, None), (ALICE, "  ")], "alice and bob"),  # blank: the localpart
        ([(BOB, "zed"), (ALICE, "Anna"), (DAVE, "bea")], "Anna and 2 others"),
    ],
)
def test_name_from_members_as_element(members: list[tuple[str, str | None]], name: str) -> None:
    assert name_from_members(members) == name
    assert name_from_members(reversed(members)) == name  # whatever order they come in


def test_snapshot_slug_from_name_without_alias() -> None:
    snap = snapshot_from_state(ROOM, full_state(name="Core Team Café", alias=None))
    assert snap.name == "Core Team Café"
    assert snap.slug == "core-team-cafe"


def test_snapshot_name_is_trimmed() -> None:
    assert snapshot_from_state(ROOM, full_state(name="  General  ")).name == "General"


def test_snapshot_older_room_with_power_levels_has_no_implicit_creators() -> None:
    pl = {"users": {ALICE: 100}, "users_default": 0}
    snap = snapshot_from_state(ROOM, full_state(version="10", power_levels=pl))
    assert snap.room_version == "10"
    assert snap.creators == ()
    assert role_for(ALICE, snap.power_levels, snap.creators) == "owner"


def test_snapshot_older_room_without_power_levels() -> None:
    snap = snapshot_from_state(ROOM, full_state(version="10", power_levels=None))
    assert snap.power_levels is None
    assert snap.creators == (ALICE,)


def test_snapshot_empty_state() -> None:
    snap = snapshot_from_state(ROOM, [])
    assert snap.name == ROOM
    assert snap.visibility == "private"
    assert snap.room_version == "1"
    assert snap.creators == ()
    assert snap.power_levels is None
    assert snap.joined == ()


def test_snapshot_skips_events_without_string_type_or_state_key() -> None:
    events = full_state()
    events.append({"type": "m.room.name", "content": {"name": "Not state"}})
    events.append({"type": "m.room.member", "state_key": 5, "content": {"membership": "join"}})
    events.append({"state_key": "", "content": {"name": "No type"}})
    snap = snapshot_from_state(ROOM, events)
    assert snap.name == "General"
    assert snap.joined == (ALICE, BOB)


# --- who may invite the bot ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("inviter", "federated", "allowed"),
    [
        ("@alice:localhost", False, True),
        ("@eve:elsewhere.org", False, False),
        ("@eve:localhost.evil.org", False, False),
        ("@eve:elsewhere.org", True, True),
    ],
)
def test_invite_allowed(inviter: str, federated: bool, allowed: bool) -> None:
    from daarion_bridge.config import BridgeConfig
    from daarion_bridge.policy.invites import bot_invite_allowed

    bridge = BridgeConfig(
        preview_length=500,
        default_microdao=None,
        allow_federated_invites=federated,
        agent_localpart_template="agent-{name}",
        catch_up_window=600,
        agent_session_idle_after=1800,
    )
    assert bot_invite_allowed(inviter, "localhost", bridge) is allowed


# --- upgrades --------------------------------------------------------------------------

OLD = "!OldRoom:localhost"


@pytest.mark.parametrize(
    ("predecessor", "expected"),
    [
        ({"room_id": OLD, "event_id": "$last"}, OLD),  # before room version 12
        ({"room_id": OLD}, OLD),  # room version 12 drops the event id
        ({"room_id": "#alias:localhost"}, None),
        ({"room_id": 7}, None),
        ("!NotAnObject:localhost", None),
        (None, None),
    ],
)
def test_the_predecessor_comes_from_the_create_event(predecessor: Any, expected: Any) -> None:
    extra = {} if predecessor is None else {"predecessor": predecessor}
    assert snapshot_from_state(ROOM, [create(**extra)]).predecessor == expected


def test_the_replacement_comes_from_the_tombstone() -> None:
    tombstone = state("m.room.tombstone", {"body": "moved", "replacement_room": "!New:localhost"})
    assert snapshot_from_state(ROOM, [create(), tombstone]).replacement == "!New:localhost"
    assert snapshot_from_state(ROOM, [create()]).replacement is None
