"""Whom an outgoing room key goes to, and which events make the senders start a new one
(crypto/outbound.py, its pure part)."""

from __future__ import annotations

from typing import Any

from daarion_bridge.crypto.outbound import changed_rooms, recipients

R = "!room:localhost"
OURS = {"@agent-sofia:localhost", "@daarion:localhost"}
ENCRYPTION = {"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_msgs": 5}


def member(user: str, membership: str, before: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "m.room.member",
        "room_id": R,
        "state_key": user,
        "content": {"membership": membership},
    }
    if before is not None:
        event["unsigned"] = {"prev_content": {"membership": before}}
    return event


def state(visibility: str | None) -> list[dict[str, Any]]:
    events = [
        {"type": "m.room.encryption", "state_key": "", "content": ENCRYPTION},
        member("@alice:localhost", "join"),
        member("@bob:localhost", "invite"),
        member("@carol:localhost", "leave"),
        member("@dave:localhost", "ban"),
        member("@agent-sofia:localhost", "join"),
        member("@daarion:localhost", "join"),
    ]
    if visibility is not None:
        events.append(
            {
                "type": "m.room.history_visibility",
                "state_key": "",
                "content": {"history_visibility": visibility},
            }
        )
    return events


def test_joined_and_invited_members_get_the_key_but_not_the_bridges_own_users() -> None:
    assert recipients(state(None), OURS) == (["@alice:localhost", "@bob:localhost"], ENCRYPTION)
    assert recipients(state("shared"), OURS)[0] == ["@alice:localhost", "@bob:localhost"]
    assert recipients(state("invited"), OURS)[0] == ["@alice:localhost", "@bob:localhost"]


def test_history_for_joined_members_only_leaves_invitees_out() -> None:
    assert recipients(state("joined"), OURS)[0] == ["@alice:localhost"]


def test_malformed_state_is_skipped() -> None:
    assert recipients([None, {"type": "m.room.member"}, "x"], OURS) == ([], None)


def test_membership_changes_of_people_make_a_new_session() -> None:
    events = [
        member("@alice:localhost", "leave", before="join"),  # left
        {**member("@bob:localhost", "join", before="invite"), "room_id": "!b:localhost"},
        {**member("@carol:localhost", "join"), "room_id": "!c:localhost"},  # no prev: new
    ]
    assert changed_rooms(events, OURS) == {R, "!b:localhost", "!c:localhost"}


def test_profile_changes_and_the_bridges_own_users_leaving_do_not() -> None:
    events = [
        member("@alice:localhost", "join", before="join"),  # a new display name
        member("@agent-sofia:localhost", "join", before="join"),
        member("@agent-sofia:localhost", "leave", before="join"),
        member("@agent-sofia:localhost", "invite", before="leave"),
        {"type": "m.room.message", "room_id": R, "content": {"membership": "leave"}},
    ]
    assert changed_rooms(events, OURS) == set()


def test_one_of_ours_joining_again_makes_a_new_session() -> None:
    """Away, it saw no one leave: the session it had must not go on to them."""
    events = [member("@agent-sofia:localhost", "join", before="invite")]
    assert changed_rooms(events, OURS) == {R}


def test_a_new_encryption_event_makes_a_new_session() -> None:
    event = {"type": "m.room.encryption", "room_id": R, "state_key": "", "content": ENCRYPTION}
    assert changed_rooms([event], OURS) == {R}
