"""Unit tests for daarion_bridge.translate.events (pure, no I/O)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daarion_bridge.translate.events import (
    BotInvited,
    EditMessage,
    JoinRules,
    Membership,
    NewMessage,
    PowerLevels,
    RedactMessage,
    RoomName,
    translate_event,
)
from daarion_bridge.translate.preview import BadEvent

BOT = "@daarion:localhost"
ROOM = "!core:localhost"
ALICE = "@alice:localhost"
BOB = "@bob:localhost"
TS = 1_732_530_000_123
TS_DT = datetime(2024, 11, 25, 10, 20, 0, 123_000, tzinfo=UTC)
SECRET = "the-secret-message-text"
ELLIPSIS = "\u2026"
_MISSING = object()


# --- builders --------------------------------------------------------------------


def event(etype: str, content: Any = None, **extra: Any) -> dict[str, Any]:
    """A room event as Synapse pushes it; keyword arguments override or add keys."""
    ev: dict[str, Any] = {
        "event_id": "$ev1",
        "room_id": ROOM,
        "sender": ALICE,
        "type": etype,
        "origin_server_ts": TS,
        "content": {} if content is None else content,
    }
    ev.update(extra)
    return ev


def msg(body: str, **extra: Any) -> dict[str, Any]:
    return event("m.room.message", {"msgtype": "m.text", "body": body}, **extra)


def edit(new_body: str, target: str = "$orig", **extra: Any) -> dict[str, Any]:
    content = {
        "msgtype": "m.text",
        "body": f"* {new_body}",
        "m.new_content": {"msgtype": "m.text", "body": new_body},
        "m.relates_to": {"rel_type": "m.replace", "event_id": target},
    }
    return event("m.room.message", content, event_id="$edit", **extra)


def state(etype: str, content: Any, state_key: str = "", **extra: Any) -> dict[str, Any]:
    return event(etype, content, state_key=state_key, **extra)


def member(user_id: Any, membership: Any, **extra: Any) -> dict[str, Any]:
    return state("m.room.member", {"membership": membership}, state_key=user_id, **extra)


def changed(ev: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of ev with key set to value, or removed when value is _MISSING."""
    out = copy.deepcopy(ev)
    if value is _MISSING:
        del out[key]
    else:
        out[key] = value
    return out


def translate(ev: Any, preview_length: int = 500) -> Any:
    return translate_event(ev, bot_mxid=BOT, preview_length=preview_length)


# --- messages ----------------------------------------------------------------------


def test_text_message_is_new_message() -> None:
    assert translate(msg("hello  world")) == NewMessage(
        room_id=ROOM, event_id="$ev1", sender=ALICE, ts=TS_DT, preview="hello world"
    )


def test_new_message_ts_is_utc_aware() -> None:
    op = translate(msg("hi"))
    assert op.ts.tzinfo is not None
    assert op.ts.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "ts",
    [
        0,
        1,
        999,
        1_000,
        1_732_530_000_123,
        1_732_530_000_999,
        4_102_444_799_999,  # 2099-12-31T23:59:59.999Z
    ],
)
def test_ts_is_exact_to_the_millisecond(ts: int) -> None:
    expected = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ts)
    assert translate(msg("hi", origin_server_ts=ts)).ts == expected


@pytest.mark.parametrize(
    "ts",
    [
        19_748_850_274_343,  # 2595-10-25T15:44:34.343Z
        253_402_300_799_999,  # 9999-12-31T23:59:59.999Z, the last datetime can hold
    ],
)
def test_ts_is_exact_to_the_millisecond_far_future(ts: int) -> None:
    expected = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ts)
    assert translate(msg("hi", origin_server_ts=ts)).ts == expected


@pytest.mark.parametrize("ts", [2**53 - 1, 10**15])
def test_ts_beyond_datetime_range_is_bad_event(ts: int) -> None:
    # Anything but BadEvent escapes the ingest loop and fails the whole transaction.
    with pytest.raises(BadEvent):
        translate(msg("hi", origin_server_ts=ts))


def test_sticker_is_new_message() -> None:
    ev = event("m.sticker", {"body": "Happy cat", "url": "mxc://localhost/abc", "info": {}})
    op = translate(ev)
    assert isinstance(op, NewMessage)
    assert op.preview == "[sticker] Happy cat"
    assert (op.room_id, op.event_id, op.sender, op.ts) == (ROOM, "$ev1", ALICE, TS_DT)


def test_encrypted_is_new_message_with_marker_only() -> None:
    content = {
        "algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": "AwgAEnACgAkLmt6qF84IK++J7UDH2Za1YVchHyprqTqsg...",
        "device_id": "RJYKSTBOIE",
        "sender_key": "IlRMeOPX2e0MurIyfWEucYBRVOEEUMrOHqn/8mLqMjA",
        "session_id": "X3lUlvLELLYxeTx4yOVu6UDpasGEVO0Jbu+QFnm0cKQ",
    }
    op = translate(event("m.room.encrypted", content))
    assert isinstance(op, NewMessage)
    assert op.preview == "[encrypted]"


def test_preview_length_is_honoured() -> None:
    op = translate(msg("word " * 400), preview_length=50)
    assert isinstance(op, NewMessage)
    assert len(op.preview) <= 50
    assert op.preview.startswith("word word")
    assert op.preview.endswith(ELLIPSIS)


def test_preview_length_default_keeps_short_text_whole() -> None:
    assert translate(msg("x" * 500)).preview == "x" * 500
    assert translate(msg("x" * 501)).preview == "x" * 499 + ELLIPSIS


# --- edits -------------------------------------------------------------------------


def test_edit_is_edit_message_with_new_content() -> None:
    assert translate(edit("fixed  text")) == EditMessage(
        room_id=ROOM,
        event_id="$edit",
        target_event_id="$orig",
        ts_ms=TS,
        preview="fixed text",
        sender=ALICE,
    )


def test_edit_preview_is_not_the_fallback_body() -> None:
    op = translate(edit("new words"))
    assert not op.preview.startswith("*")


def test_edit_preview_length_is_honoured() -> None:
    op = translate(edit("word " * 400), preview_length=20)
    assert isinstance(op, EditMessage)
    assert len(op.preview) <= 20
    assert op.preview.endswith(ELLIPSIS)


@pytest.mark.parametrize("new_content", [_MISSING, None, "new text", ["new text"]])
def test_edit_without_new_content_object_is_bad_event(new_content: Any) -> None:
    ev = edit(SECRET)
    if new_content is _MISSING:
        del ev["content"]["m.new_content"]
    else:
        ev["content"]["m.new_content"] = new_content
    with pytest.raises(BadEvent) as info:
        translate(ev)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("target", [None, "", 5])
def test_edit_without_target_event_id_is_bad_event(target: Any) -> None:
    ev = edit("new")
    ev["content"]["m.relates_to"]["event_id"] = target
    with pytest.raises(BadEvent):
        translate(ev)


def test_encrypted_edit_is_edit_message_with_marker() -> None:
    content = {
        "algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": "AwgAEnAC...",
        "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"},
    }
    op = translate(event("m.room.encrypted", content, event_id="$edit"))
    assert op == EditMessage(ROOM, "$edit", "$orig", TS, "[encrypted]", ALICE)


def test_reply_is_a_new_message_not_an_edit() -> None:
    ev = msg("> <@bob:localhost> question\n\nanswer")
    ev["content"]["m.relates_to"] = {"m.in_reply_to": {"event_id": "$parent"}}
    expected = NewMessage(ROOM, "$ev1", ALICE, TS_DT, "answer", reply_to="$parent")
    assert translate(ev) == expected


# --- redactions --------------------------------------------------------------------


def test_redacted_message_is_deleted() -> None:
    ev = event(
        "m.room.message",
        {},
        unsigned={"redacted_because": {"type": "m.room.redaction", "sender": ALICE}},
    )
    assert translate(ev) == NewMessage(ROOM, "$ev1", ALICE, TS_DT, "[deleted]")


def test_redaction_with_top_level_redacts() -> None:
    ev = event("m.room.redaction", {"reason": "spam"}, event_id="$red", redacts="$victim")
    assert translate(ev) == RedactMessage(ROOM, "$red", "$victim", ALICE, TS_DT)


def test_redaction_with_redacts_in_content_room_v11() -> None:
    ev = event("m.room.redaction", {"redacts": "$victim"}, event_id="$red")
    assert translate(ev) == RedactMessage(ROOM, "$red", "$victim", ALICE, TS_DT)


@pytest.mark.parametrize(
    "ev",
    [
        event("m.room.redaction", {}),
        event("m.room.redaction", {"redacts": ""}),
        event("m.room.redaction", {"redacts": 5}),
        event("m.room.redaction", {}, redacts=None),
    ],
)
def test_redaction_without_redacts_is_bad_event(ev: dict[str, Any]) -> None:
    with pytest.raises(BadEvent):
        translate(ev)


# --- membership --------------------------------------------------------------------


@pytest.mark.parametrize("membership", ["join", "leave", "ban"])
def test_membership(membership: str) -> None:
    ev = member(BOB, membership, event_id="$m")
    assert translate(ev) == Membership(ROOM, "$m", BOB, membership, TS_DT)


def test_membership_user_is_state_key_not_sender() -> None:
    ev = member(BOB, "ban", sender=ALICE)
    assert translate(ev).user_id == BOB


def test_bot_invite_is_bot_invited() -> None:
    ev = member(BOT, "invite", event_id="$inv", sender=ALICE)
    assert translate(ev) == BotInvited(ROOM, "$inv", inviter=ALICE)


def test_bot_join_is_plain_membership() -> None:
    ev = member(BOT, "join", sender=BOT)
    assert translate(ev) == Membership(ROOM, "$ev1", BOT, "join", TS_DT)


def test_other_user_invite_is_membership() -> None:
    ev = member(BOB, "invite", event_id="$inv", sender=ALICE)
    assert translate(ev) == Membership(ROOM, "$inv", BOB, "invite", TS_DT)


def test_bot_invite_with_other_bot_mxid_is_membership() -> None:
    ev = member(BOT, "invite")
    op = translate_event(ev, bot_mxid="@other:localhost", preview_length=500)
    assert isinstance(op, Membership)


@pytest.mark.parametrize("state_key", ["alice", "", "@alice", "alice:localhost", "#room:localhost"])
def test_member_state_key_not_a_user_id_is_bad_event(state_key: str) -> None:
    with pytest.raises(BadEvent):
        translate(member(state_key, "join"))


@pytest.mark.parametrize("membership", [None, 5, ["join"], {"m": "join"}])
def test_member_membership_not_a_string_is_bad_event(membership: Any) -> None:
    with pytest.raises(BadEvent):
        translate(member(BOB, membership))


def test_member_without_membership_is_bad_event() -> None:
    with pytest.raises(BadEvent):
        translate(state("m.room.member", {"displayname": "Bob"}, state_key=BOB))


@pytest.mark.parametrize("ts", [_MISSING, "1732530000123", True, -1])
def test_member_with_bad_ts_is_bad_event(ts: Any) -> None:
    with pytest.raises(BadEvent):
        translate(changed(member(BOB, "join"), "origin_server_ts", ts))


# --- room state --------------------------------------------------------------------


def test_power_levels() -> None:
    content = {"users": {ALICE: 100, BOB: 50}, "users_default": 0, "events": {}}
    op = translate(state("m.room.power_levels", content))
    assert op == PowerLevels(ROOM, content)
    assert isinstance(op.content, dict)


def test_room_name() -> None:
    assert translate(state("m.room.name", {"name": "Core team"})) == RoomName(ROOM, "Core team")


@pytest.mark.parametrize("content", [{"name": ""}, {"name": "   "}, {}, {"name": 5}])
def test_blank_room_name_is_none(content: dict[str, Any]) -> None:
    assert translate(state("m.room.name", content)) == RoomName(ROOM, None)


@pytest.mark.parametrize(
    ("join_rule", "visibility"),
    [
        ("public", "public"),
        ("restricted", "microdao"),
        ("knock_restricted", "microdao"),
        ("invite", "private"),
        ("knock", "private"),
        ("private", "private"),
        (None, "private"),
    ],
)
def test_join_rules(join_rule: Any, visibility: str) -> None:
    op = translate(state("m.room.join_rules", {"join_rule": join_rule}))
    assert op == JoinRules(ROOM, visibility)


@pytest.mark.parametrize(
    "etype", ["m.room.name", "m.room.power_levels", "m.room.join_rules", "m.room.topic"]
)
def test_state_event_with_non_empty_state_key_is_ignored(etype: str) -> None:
    content = {"name": "X", "join_rule": "public", "users": {ALICE: 100}}
    assert translate(state(etype, content, state_key="@alice:localhost")) is None


@pytest.mark.parametrize(
    "ev",
    [
        state("m.room.topic", {"topic": "hello"}),
        state("m.room.history_visibility", {"history_visibility": "shared"}),
        state("m.room.create", {"room_version": "12"}),
    ],
)
def test_other_state_events_are_ignored(ev: dict[str, Any]) -> None:
    assert translate(ev) is None


@pytest.mark.parametrize(
    "ev",
    [
        event(
            "m.reaction",
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x", "key": "+1"}},
        ),
        event("m.call.invite", {"call_id": "c1", "version": "1", "lifetime": 60000}),
        event("org.example.custom", {"body": SECRET}),
    ],
)
def test_unknown_non_state_events_are_ignored(ev: dict[str, Any]) -> None:
    assert translate(ev) is None


@pytest.mark.parametrize("state_key", ["", "something"])
@pytest.mark.parametrize("etype", ["m.room.message", "m.sticker", "m.room.encrypted"])
def test_message_type_with_state_key_is_not_a_message(etype: str, state_key: str) -> None:
    ev = event(etype, {"msgtype": "m.text", "body": "hi"}, state_key=state_key)
    assert not isinstance(translate(ev), NewMessage | EditMessage)


# --- malformed events --------------------------------------------------------------


@pytest.mark.parametrize("ev", [None, "m.room.message", ["m.room.message"], 5, b"{}"])
def test_not_a_dict_is_bad_event(ev: Any) -> None:
    with pytest.raises(BadEvent):
        translate(ev)


BAD_FIELDS = [
    ("type", _MISSING),
    ("type", None),
    ("type", 5),
    ("type", ""),
    ("room_id", _MISSING),
    ("room_id", None),
    ("room_id", 5),
    ("room_id", ""),
    ("event_id", _MISSING),
    ("event_id", None),
    ("event_id", ["$ev"]),
    ("event_id", ""),
    ("sender", _MISSING),
    ("sender", None),
    ("sender", 5),
    ("origin_server_ts", _MISSING),
    ("origin_server_ts", "1732530000123"),
    ("origin_server_ts", True),
    ("origin_server_ts", False),
    ("origin_server_ts", -1),
    ("origin_server_ts", 1.7e12),
    ("origin_server_ts", None),
    ("origin_server_ts", 2**53),
    ("content", SECRET),
    ("content", [SECRET]),
]


@pytest.mark.parametrize(("key", "value"), BAD_FIELDS)
def test_malformed_message_is_bad_event_without_body(key: str, value: Any) -> None:
    with pytest.raises(BadEvent) as info:
        translate(changed(msg(SECRET), key, value))
    assert str(info.value)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)


@pytest.mark.parametrize(("key", "value"), [k for k in BAD_FIELDS if k[0] != "content"])
def test_malformed_edit_is_bad_event_without_body(key: str, value: Any) -> None:
    with pytest.raises(BadEvent) as info:
        translate(changed(edit(SECRET), key, value))
    assert SECRET not in str(info.value)


def test_malformed_message_content_is_bad_event_without_body() -> None:
    ev = event("m.room.message", {"body": SECRET})  # no msgtype
    with pytest.raises(BadEvent) as info:
        translate(ev)
    assert SECRET not in str(info.value)


def test_bad_event_is_not_swallowed_as_none_for_a_message() -> None:
    # Dead-lettering needs the exception; None would silently drop the message.
    ev = changed(msg("hi"), "sender", _MISSING)
    with pytest.raises(BadEvent, match="sender"):
        translate(ev)


def test_input_event_is_not_mutated() -> None:
    ev = edit("new")
    before = copy.deepcopy(ev)
    translate(ev)
    assert ev == before
