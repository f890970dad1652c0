"""Polls, locations, voice messages and verification requests: what the index keeps.

Contents are as Element Web 1.12 and the stable spec forms send them.
"""

from __future__ import annotations

from typing import Any

import pytest

from daarion_bridge.translate.events import (
    NewMessage,
    RoomTombstoned,
    SpaceLinkChanged,
    translate_event,
)
from daarion_bridge.translate.preview import BadEvent, render_preview

from .test_agents import AGENTS, HELPER, SOFIA

ROOM, ALICE, BOT = "!r:localhost", "@alice:localhost", "@daarion:localhost"
UNSTABLE = "org.matrix.msc3381.poll.start"
TEXT = "org.matrix.msc1767.text"


def element_poll(question: str, answers: list[str]) -> dict[str, Any]:
    """What Element Web sends for a new poll (MSC3381 with MSC1767 text)."""
    return {
        UNSTABLE: {
            "question": {TEXT: question, "body": question, "msgtype": "m.text"},
            "kind": "org.matrix.msc3381.poll.disclosed",
            "max_selections": 1,
            "answers": [{"id": f"a{i}", TEXT: a} for i, a in enumerate(answers)],
        },
        TEXT: question + "".join(f"\n{i + 1}. {a}" for i, a in enumerate(answers)),
    }


def stable_poll(question: str, answers: list[str]) -> dict[str, Any]:
    return {
        "m.poll": {
            "kind": "m.disclosed",
            "max_selections": 1,
            "question": {"m.text": [{"body": question}]},
            "answers": [{"m.id": f"a{i}", "m.text": [{"body": a}]} for i, a in enumerate(answers)],
        },
        "m.text": [{"body": question}],
    }


def event(etype: str, content: dict[str, Any], sender: str = ALICE) -> dict[str, Any]:
    return {
        "type": etype,
        "room_id": ROOM,
        "event_id": "$e",
        "sender": sender,
        "origin_server_ts": 1_732_530_000_123,
        "content": content,
    }


def translate(ev: dict[str, Any], limit: int = 500) -> Any:
    return translate_event(ev, bot_mxid=BOT, preview_length=limit, agents=AGENTS)


# --- polls ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("etype", "content"),
    [
        (UNSTABLE, element_poll("Lunch where?", ["Pizza", "Sushi"])),
        ("m.poll.start", stable_poll("Lunch where?", ["Pizza", "Sushi"])),
    ],
)
def test_a_poll_is_a_message_with_its_question_and_answers(
    etype: str, content: dict[str, Any]
) -> None:
    op = translate(event(etype, content))
    assert isinstance(op, NewMessage)
    assert op.preview == "[poll] Lunch where? (Pizza / Sushi)"


def test_answers_that_do_not_fit_are_left_out() -> None:
    op = translate(event(UNSTABLE, element_poll("Lunch where?", ["Pizza", "Sushi"])), limit=30)
    assert op.preview == "[poll] Lunch where?"


def test_a_poll_mentions_the_agents_named_in_its_question() -> None:
    op = translate(event(UNSTABLE, element_poll("Sofia, which is best?", ["A", "B"])))
    assert op.may_mention is not None
    assert op.may_mention.among(None) == (SOFIA,)


def test_a_poll_answer_naming_an_agent_is_not_a_mention() -> None:
    op = translate(event(UNSTABLE, element_poll("Which is best?", ["R2.D2", "Sofia"])))
    assert op.may_mention is not None
    assert op.may_mention.among(None) == ()


def test_a_poll_by_an_agent_calls_nobody() -> None:
    op = translate(event(UNSTABLE, element_poll("Sofia?", ["A"]), sender=HELPER))
    assert op.may_mention is None


@pytest.mark.parametrize(
    "etype", ["org.matrix.msc3381.poll.response", "org.matrix.msc3381.poll.end", "m.poll.end"]
)
def test_responses_and_ends_change_nothing(etype: str) -> None:
    assert translate(event(etype, {"m.relates_to": {"event_id": "$p"}})) is None


@pytest.mark.parametrize("content", [{}, {UNSTABLE: {"question": {}}}, {"m.poll": "x"}])
def test_a_poll_without_a_question_is_a_bad_event(content: dict[str, Any]) -> None:
    with pytest.raises(BadEvent):
        render_preview(UNSTABLE, content, 500)


# --- locations -------------------------------------------------------------------------


def location(body: str, description: str | None = None) -> dict[str, Any]:
    loc: dict[str, Any] = {"uri": "geo:51.5008,-0.1247;u=35"}
    if description is not None:
        loc["description"] = description
    return {
        "msgtype": "m.location",
        "body": body,
        "geo_uri": "geo:51.5008,-0.1247;u=35",
        "org.matrix.msc3488.location": loc,
        "org.matrix.msc3488.asset": {"type": "m.self"},
    }


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (location("User Location geo:51.5008,-0.1247;u=35 at 2026-12-03T21:00:00Z"), "[location]"),
        (location("Location geo:51.5008,-0.1247;u=35 at 2026-12-03T21:00:00Z"), "[location]"),
        (location("Shared a location: GEO:51.5,-0.12"), "[location]"),
        (location("geo:51.5,-0.12", description="Big Ben"), "[location] Big Ben"),
        (
            {"msgtype": "m.location", "body": "Kyiv", "geo_uri": "geo:50.45,30.52"},
            "[location] Kyiv",
        ),
    ],
)
def test_a_location_keeps_the_description_and_never_the_coordinates(
    content: dict[str, Any], expected: str
) -> None:
    preview = translate(event("m.room.message", content)).preview
    assert preview == expected
    assert "51.5" not in preview and "geo:" not in preview.lower()


# --- voice messages ------------------------------------------------------------------


def voice(duration_ms: Any) -> dict[str, Any]:
    """Element's voice message."""
    return {
        "msgtype": "m.audio",
        "body": "Voice message",
        "url": "mxc://localhost/abc",
        "info": {"mimetype": "audio/ogg", "size": 1234, "duration": duration_ms},
        "org.matrix.msc1767.audio": {"duration": duration_ms, "waveform": [1, 2]},
        "org.matrix.msc1767.text": "Voice message",
        "org.matrix.msc3245.voice": {},
    }


@pytest.mark.parametrize(
    ("duration", "expected"),
    [
        (7_400, "[voice message 0:07]"),
        (125_000, "[voice message 2:05]"),
        (None, "[voice message]"),
        (0, "[voice message]"),
        ("7s", "[voice message]"),
    ],
)
def test_a_voice_message_says_so_with_its_length(duration: Any, expected: str) -> None:
    assert translate(event("m.room.message", voice(duration))).preview == expected


def test_plain_audio_is_still_audio() -> None:
    content = {"msgtype": "m.audio", "body": "song.ogg", "url": "mxc://localhost/a"}
    assert translate(event("m.room.message", content)).preview == "[audio] song.ogg"


# --- verification requests ---------------------------------------------------------


def test_a_key_verification_request_is_not_a_message() -> None:
    content = {
        "msgtype": "m.key.verification.request",
        "body": "Alice is requesting to verify your key, but your client does not support it",
        "to": "@bob:localhost",
        "from_device": "DEV",
        "methods": ["m.sas.v1"],
    }
    assert translate(event("m.room.message", content)) is None


# --- emotes ----------------------------------------------------------------------


def test_an_emote_keeps_elements_form_with_the_senders_name() -> None:
    found = translate(event("m.room.message", {"msgtype": "m.emote", "body": "waves  hello"}))
    assert isinstance(found, NewMessage)
    assert found.preview == "* alice waves hello"


def test_an_edited_emote_keeps_the_form() -> None:
    content = {
        "msgtype": "m.emote",
        "body": "* waves again",
        "m.new_content": {"msgtype": "m.emote", "body": "waves again"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": "$original"},
    }
    found = translate(event("m.room.message", content))
    assert found.preview == "* alice waves again"


def test_a_long_emote_is_cut_to_the_limit_with_its_name_first() -> None:
    found = render_preview("m.room.message", {"msgtype": "m.emote", "body": "x" * 600}, 20, ALICE)
    assert found.startswith("* ") and len(found) == 20


# --- room upgrades ---------------------------------------------------------------


def tombstone(content: dict[str, Any]) -> dict[str, Any]:
    return {**event("m.room.tombstone", content), "state_key": ""}


def test_a_tombstone_names_the_replacement() -> None:
    found = translate(tombstone({"body": "upgraded", "replacement_room": "!new:localhost"}))
    assert found == RoomTombstoned(ROOM, "$e", ALICE, "!new:localhost")


@pytest.mark.parametrize("replacement", ["", "#alias:localhost", None, 5])
def test_a_tombstone_without_a_room_closes_the_room(replacement: Any) -> None:
    content: dict[str, Any] = {"body": "closed"}
    if replacement is not None:
        content["replacement_room"] = replacement
    assert translate(tombstone(content)) == RoomTombstoned(ROOM, "$e", ALICE, None)


def test_a_tombstone_with_a_state_key_means_nothing() -> None:
    odd = {**event("m.room.tombstone", {"replacement_room": "!new:localhost"}), "state_key": "x"}
    assert translate(odd) is None


# --- space links -----------------------------------------------------------------


def test_a_rooms_parent_and_a_spaces_child_name_the_room_to_map_again() -> None:
    parent = {**event("m.space.parent", {"via": ["localhost"]}), "state_key": "!space:localhost"}
    assert translate(parent) == SpaceLinkChanged(ROOM, "$e", ROOM)
    child = {**event("m.space.child", {"via": ["localhost"]}), "state_key": "!child:localhost"}
    assert translate(child) == SpaceLinkChanged(ROOM, "$e", "!child:localhost")
    odd = {**event("m.space.child", {"via": ["localhost"]}), "state_key": "not a room"}
    assert translate(odd) is None
