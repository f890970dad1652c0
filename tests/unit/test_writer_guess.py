"""What the writer looks up while a transaction is still being translated: the guess
from the raw events must cover what the translated operations need (pure, no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from daarion_bridge.ingest.items import Rejected
from daarion_bridge.ingest.wanted import wanted_by_events, wanted_by_operations
from daarion_bridge.translate.agents import AgentDirectory
from daarion_bridge.translate.events import translate_event
from daarion_bridge.translate.preview import BadEvent
from tests.db.matrix_events import event, member, text
from tests.unit.test_agents import roster

BOT = "@daarion:localhost"
SOFIA = "@agent-sofia:localhost"
OTHER_ROOM = "!other:localhost"
AGENTS = AgentDirectory(roster(("agent:sofia", "Sofia", {})))


def operations(events: list[dict[str, Any]]) -> list[Any]:
    ops = []
    for e in events:
        try:
            op = translate_event(e, bot_mxid=BOT, preview_length=50, agents=AGENTS)
        except BadEvent as err:
            op = Rejected(e, str(err))
        if op is not None and not isinstance(op, Rejected):
            ops.append(op)
    return ops


def every_kind() -> list[dict[str, Any]]:
    original = text("hello", sender="@bob:localhost")
    return [
        original,
        text("elsewhere", room=OTHER_ROOM),
        event("m.sticker", {"body": "a sticker", "url": "mxc://x/y"}),
        event("m.room.encrypted", {"algorithm": "m.megolm.v1.aes-sha2"}),
        text(
            "* hi",
            **{
                "m.new_content": {"msgtype": "m.text", "body": "hi"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": original["event_id"]},
            },
        ),
        event("m.room.redaction", {}, sender="@carol:localhost", redacts=original["event_id"]),
        event("m.room.redaction", {"redacts": original["event_id"]}, room=OTHER_ROOM),
        member("@dave:localhost", "join"),
        member("@erin:localhost", "join", room=OTHER_ROOM),
        member("@dave:localhost", "leave"),
        member("@frank:localhost", "ban", sender="@alice:localhost"),
        member("@grace:localhost", "invite", sender="@alice:localhost"),
        member("@heidi:localhost", "knock"),
        member(SOFIA, "invite", sender="@alice:localhost"),
        member(BOT, "invite", sender="@alice:localhost"),
        member(SOFIA, "join"),
        event("m.room.power_levels", {"users": {"@bob:localhost": 50}}, state_key=""),
        event("m.room.name", {"name": "General"}, state_key=""),
        event("m.room.join_rules", {"join_rule": "public"}, state_key=""),
        event("m.reaction", {"m.relates_to": {"rel_type": "m.annotation"}}),
        event("m.room.topic", {"topic": "t"}, state_key=""),
    ]


def test_the_guess_covers_what_every_kind_of_event_needs() -> None:
    events = every_kind()
    ops = operations(events)
    assert len(ops) >= 17  # the builders above make operations, not rejections
    rooms, power, users = wanted_by_operations(ops)
    guessed_rooms, guessed_power, guessed_users = wanted_by_events(events)
    assert rooms <= guessed_rooms
    assert power <= guessed_power
    assert users <= guessed_users


@pytest.mark.parametrize("index", range(len(every_kind())))
def test_the_guess_covers_each_event_alone(index: int) -> None:
    events = [every_kind()[index]]
    needed = wanted_by_operations(operations(events))
    guessed = wanted_by_events(events)
    assert all(n <= g for n, g in zip(needed, guessed, strict=True)), (events, needed, guessed)


def test_power_is_guessed_only_where_it_is_needed() -> None:
    """Reading a room's power levels costs: messages and leaves do not need them."""
    events = [text("hi"), member("@dave:localhost", "leave"), text("x", room=OTHER_ROOM)]
    assert wanted_by_events(events)[1] == set()


def test_ids_that_are_not_plain_ascii_are_left_out() -> None:
    """Such ids are looked up after translation instead (the writer checks the guess)."""
    events = [
        text("hi", sender="@zoë:localhost"),
        text("nul", sender="@a\x00b:localhost"),
        text("room", room="!кімната:localhost"),
        {"type": ["m.room.redaction"], "room_id": {"x": 1}, "sender": 5},
        "not an event",
    ]
    rooms, power, users = wanted_by_events(events)
    assert users == {"@alice:localhost"}  # the sender of the message in the other room
    assert rooms == {"!room:localhost"}
    assert power == set()
