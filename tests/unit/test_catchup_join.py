"""Where the catch-up stops reading a room back: the reading account's own join."""

from __future__ import annotations

from typing import Any

from daarion_bridge.ingest.catchup import is_join_of

BOT = "@daarion:localhost"


def member(user: str, membership: str, before: dict[str, Any] | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "m.room.member",
        "state_key": user,
        "content": {"membership": membership, "displayname": "DAARION 2"},
    }
    if before is not None:
        event["unsigned"] = {"prev_content": before}
    return event


def test_the_bots_join_is_where_reading_back_stops() -> None:
    assert is_join_of(member(BOT, "join"), BOT)
    assert is_join_of(member(BOT, "join", {"membership": "invite"}), BOT)
    assert is_join_of(member(BOT, "join", {"membership": "leave"}), BOT)


def test_a_profile_change_of_the_bot_is_not_its_join() -> None:
    renamed = member(BOT, "join", {"membership": "join", "displayname": "DAARION"})
    assert not is_join_of(renamed, BOT)
    old_style = member(BOT, "join")
    old_style["prev_content"] = {"membership": "join"}  # prev_content outside unsigned
    assert not is_join_of(old_style, BOT)


def test_other_members_and_memberships_are_not_the_bots_join() -> None:
    assert not is_join_of(member("@alice:localhost", "join"), BOT)
    assert not is_join_of(member(BOT, "leave"), BOT)
    assert not is_join_of({"type": "m.room.message", "state_key": BOT}, BOT)
