"""Which m.space.parent claims put a room in a space (translate/spaces.py)."""

from __future__ import annotations

from typing import Any

import pytest

from daarion_bridge.translate.rooms import snapshot_from_state
from daarion_bridge.translate.spaces import may_send_state, parent_is_valid

ROOM = "!room:localhost"
SPACE = "!space:localhost"
ADMIN = "@admin:localhost"  # created the space
MOD = "@mod:localhost"  # power 50 in the space
EVE = "@eve:localhost"  # nobody in the space


def ev(etype: str, content: Any, key: str = "", sender: str = ADMIN) -> dict[str, Any]:
    return {"type": etype, "state_key": key, "sender": sender, "content": content}


def space(version: str = "10", power: dict[str, Any] | None = None, *extra: Any) -> list[Any]:
    state = [ev("m.room.create", {"room_version": version, "type": "m.space"})]
    if power is not None:
        state.append(ev("m.room.power_levels", power))
    return [*state, *extra]


DEFAULT_POWER = {"users": {ADMIN: 100, MOD: 50}, "users_default": 0}


def test_a_parent_named_by_someone_without_power_is_no_parent() -> None:
    """The issue's repro: Eve names a microDAO's space as her room's parent."""
    assert not parent_is_valid(ROOM, EVE, space("10", DEFAULT_POWER))
    assert not parent_is_valid(ROOM, EVE, space("12", DEFAULT_POWER))


def test_the_space_listing_the_room_makes_any_parent_valid() -> None:
    child = ev("m.space.child", {"via": ["localhost"]}, ROOM)
    assert parent_is_valid(ROOM, EVE, space("10", DEFAULT_POWER, child))
    # A child link without via is removed; another room's link is not this one's.
    gone = ev("m.space.child", {"via": []}, ROOM)
    other = ev("m.space.child", {"via": ["localhost"]}, "!other:localhost")
    assert not parent_is_valid(ROOM, EVE, space("10", DEFAULT_POWER, gone, other))


@pytest.mark.parametrize(
    ("power", "sender", "valid"),
    [
        (DEFAULT_POWER, ADMIN, True),
        (DEFAULT_POWER, MOD, True),  # state_default 50 by default
        ({**DEFAULT_POWER, "state_default": 60}, MOD, False),
        ({**DEFAULT_POWER, "events": {"m.space.child": 40}}, MOD, True),
        ({**DEFAULT_POWER, "events": {"m.space.child": 75}}, MOD, False),
        ({**DEFAULT_POWER, "events": {"m.space.child": "75"}}, MOD, False),
        ({**DEFAULT_POWER, "events": {"m.space.child": 0}}, EVE, True),
        ({**DEFAULT_POWER, "users_default": 50}, EVE, True),
        ({**DEFAULT_POWER, "events": "junk", "state_default": "junk"}, MOD, True),
    ],
)
def test_power_to_add_children_makes_the_parent_valid(
    power: dict[str, Any], sender: str, valid: bool
) -> None:
    assert parent_is_valid(ROOM, sender, space("10", power)) is valid


def test_creators_of_version_12_spaces_hold_power_without_being_listed() -> None:
    power = {"users": {MOD: 50}, "events": {"m.space.child": 100}}
    assert parent_is_valid(ROOM, ADMIN, space("12", power))
    assert not parent_is_valid(ROOM, ADMIN, space("10", power))
    assert not parent_is_valid(ROOM, MOD, space("12", power))


def test_a_space_without_power_levels_follows_the_spec() -> None:
    # No m.room.power_levels: the creator has 100 and state needs 0.
    assert parent_is_valid(ROOM, ADMIN, space("10"))
    assert may_send_state(EVE, "m.space.child", None, ())


def test_state_without_a_create_event_is_no_space() -> None:
    assert not parent_is_valid(ROOM, EVE, [])
    junk = [{"type": 1}, {"state_key": None}, "junk", ev("m.room.power_levels", "junk")]
    assert not parent_is_valid(ROOM, EVE, junk)
    child = ev("m.space.child", {"via": ["localhost"]}, ROOM)
    assert not parent_is_valid(ROOM, EVE, [child])


def test_the_snapshot_records_who_named_each_parent() -> None:
    snap = snapshot_from_state(
        ROOM,
        [
            ev("m.room.create", {"room_version": "12"}, sender=EVE),
            ev("m.space.parent", {"via": ["localhost"]}, SPACE, sender=EVE),
            ev("m.space.parent", {"via": ["localhost"]}, "!b:localhost", sender=MOD),
            ev("m.space.parent", {"via": []}, "!gone:localhost", sender=MOD),
        ],
    )
    assert snap.space_parents == (SPACE, "!b:localhost")
    assert snap.parent_senders == {SPACE: EVE, "!b:localhost": MOD}
