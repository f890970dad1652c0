"""Which of a room's current state events the catch-up feeds in (issue 19, item 9)."""

from __future__ import annotations

from typing import Any

from daarion_bridge.db.room_state import Mark
from daarion_bridge.ingest.catchup import state_to_reconcile

ROOM = "!r:hs"
BOT = "@daarion:hs"


def member(user: str, membership: str, ts: int, event_id: str) -> dict[str, Any]:
    return {"type": "m.room.member", "state_key": user, "content": {"membership": membership},
            "origin_server_ts": ts, "event_id": event_id, "sender": user}  # fmt: skip


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["event_id"] for e in events]


def test_only_state_newer_than_the_applied_mark_is_fed() -> None:
    state = [
        member("@a:hs", "join", 100, "$a"),  # applied already: the same mark
        member("@b:hs", "leave", 300, "$b"),  # newer than b's join
        member("@c:hs", "join", 50, "$c"),  # older than what was applied: a replay
        member("@d:hs", "join", 60, "$d"),  # never applied
        {
            "type": "m.room.name",
            "state_key": "",
            "content": {"name": "N"},
            "origin_server_ts": 400,
            "event_id": "$n",
        },  # fmt: skip
    ]
    marks = {
        ("m.room.member", "@a:hs"): Mark(100, "$a"),
        ("m.room.member", "@b:hs"): Mark(200, "$bj"),
        ("m.room.member", "@c:hs"): Mark(70, "$cl"),
    }
    fed = state_to_reconcile(state, ROOM, marks, BOT)
    assert ids(fed) == ["$b", "$d", "$n"]
    assert all(e["room_id"] == ROOM for e in fed)


def test_the_bot_other_kinds_and_odd_events_are_left_out() -> None:
    state = [
        member(BOT, "join", 1, "$bot"),
        {
            "type": "m.room.topic",
            "state_key": "",
            "content": {},
            "origin_server_ts": 1,
            "event_id": "$t",
        },  # fmt: skip
        {
            "type": "m.room.name",
            "state_key": "x",
            "content": {},
            "origin_server_ts": 1,
            "event_id": "$kx",
        },  # fmt: skip
        {
            "type": "m.room.join_rules",
            "state_key": "",
            "content": {"join_rule": "invite"},
            "event_id": "$no-ts",
        },  # fmt: skip
        {
            "type": "m.room.power_levels",
            "state_key": "",
            "content": {},
            "origin_server_ts": 1,
            "event_id": "$pl",
        },  # fmt: skip
    ]
    # An m.room.name with a state key is not the room's name: the writer would ignore it.
    assert ids(state_to_reconcile(state, ROOM, {}, BOT)) == ["$pl"]


def test_invited_or_knocking_is_not_joined() -> None:
    state = [member("@a:hs", "invite", 5, "$i"), member("@b:hs", "knock", 6, "$k"),
             member("@c:hs", "ban", 7, "$x")]  # fmt: skip
    fed = state_to_reconcile(state, ROOM, {}, BOT)
    assert [e["content"]["membership"] for e in fed] == ["leave", "leave", "ban"]
    assert state[0]["content"]["membership"] == "invite"  # the state read is not changed
