"""Threads and replies (issue 17, items 2 to 4): what a message's relations say, the
payloads that carry them, and the relation of an answer in a thread."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from daarion_bridge.translate import bus
from daarion_bridge.translate.events import NewMessage, translate_event
from daarion_bridge.translate.relations import Relations, relations_of, reply_relation

ROOT, LATEST, PARENT = "$root", "$latest", "$parent"
REF = bus.ChannelRef(uuid.uuid4(), "microdao:7", "!r:x")
AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _thread(falling_back: bool, parent: str = LATEST) -> dict[str, Any]:
    return {
        "rel_type": "m.thread",
        "event_id": ROOT,
        "is_falling_back": falling_back,
        "m.in_reply_to": {"event_id": parent},
    }


@pytest.mark.parametrize(
    ("relates", "expected"),
    [
        (None, Relations()),
        ({"m.in_reply_to": {"event_id": PARENT}}, Relations(None, PARENT)),
        (_thread(True), Relations(ROOT, None)),  # Element's fallback: not a reply
        (_thread(False, PARENT), Relations(ROOT, PARENT)),
        ({"rel_type": "m.thread", "event_id": ROOT}, Relations(ROOT, None)),
        ({"rel_type": "m.annotation", "event_id": ROOT, "key": "x"}, Relations()),
        ({"rel_type": "m.thread", "event_id": 7}, Relations()),
        ({"rel_type": "m.thread", "event_id": "$a\x00b"}, Relations()),
        ({"rel_type": "m.thread", "event_id": "$" + "a" * 300}, Relations()),
        ({"m.in_reply_to": {"event_id": "not-an-id"}}, Relations()),
        ({"m.in_reply_to": "$x"}, Relations()),
        ("nonsense", Relations()),
    ],
)
def test_relations_of(relates: Any, expected: Relations) -> None:
    content: dict[str, Any] = {"msgtype": "m.text", "body": "hi"}
    if relates is not None:
        content["m.relates_to"] = relates
    assert relations_of(content) == expected


def _message(content: dict[str, Any], etype: str = "m.room.message") -> NewMessage:
    event = {
        "type": etype,
        "room_id": "!r:x",
        "event_id": "$m",
        "sender": "@a:x",
        "origin_server_ts": 1,
        "content": content,
    }
    op = translate_event(event, bot_mxid="@bot:x", preview_length=100)
    assert isinstance(op, NewMessage)
    return op


def test_a_message_in_a_thread_carries_its_root_and_real_reply() -> None:
    op = _message({"msgtype": "m.text", "body": "q", "m.relates_to": _thread(False, PARENT)})
    assert (op.thread_root, op.reply_to, op.notice) == (ROOT, PARENT, False)
    plain = _message({"msgtype": "m.text", "body": "q"})
    assert (plain.thread_root, plain.reply_to) == (None, None)


def test_an_encrypted_message_keeps_its_thread() -> None:
    """The relation stays in the clear in an encrypted event."""
    content = {
        "algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": "x",
        "m.relates_to": _thread(True),
    }
    op = _message(content, "m.room.encrypted")
    assert (op.thread_root, op.reply_to) == (ROOT, None)


def test_a_notice_is_marked() -> None:
    assert _message({"msgtype": "m.notice", "body": "done"}).notice
    assert not _message({"msgtype": "m.text", "body": "done"}).notice


def test_message_created_carries_thread_root_null_outside_threads() -> None:
    sender = bus.Sender("user:1", "human")
    mid = uuid.uuid4()
    outside = bus.message_created(REF, mid, "$e", sender, AT, "hi").payload
    inside = bus.message_created(REF, mid, "$e", sender, AT, "hi", ROOT).payload
    assert "thread_root" in outside and outside["thread_root"] is None
    assert inside["thread_root"] == ROOT
    assert {k: v for k, v in inside.items() if k != "thread_root"} == {
        k: v for k, v in outside.items() if k != "thread_root"
    }


def test_invocation_carries_thread_root_and_reply_to_and_stays_small() -> None:
    mid = uuid.uuid4()
    event = bus.invoke_agent("agent:sofia", "channel_message", REF, mid, "$e", ROOT, PARENT)
    assert event.subject == bus.INVOKE_AGENT
    assert event.payload == {
        "agent_id": "agent:sofia",
        "entrypoint": "channel_message",
        "payload": {
            "channel_id": str(REF.id),
            "message_id": str(mid),
            "matrix_event_id": "$e",
            "matrix_room_id": "!r:x",
            "microdao_id": "microdao:7",
            "thread_root": ROOT,
            "reply_to": PARENT,
        },
    }
    plain = bus.invoke_agent("agent:sofia", "direct", REF, mid, "$e").payload["payload"]
    assert (plain["thread_root"], plain["reply_to"]) == (None, None)


def test_reply_relation_in_and_out_of_a_thread() -> None:
    assert reply_relation(PARENT, None) == {"m.in_reply_to": {"event_id": PARENT}}
    assert reply_relation(PARENT, ROOT) == {
        "rel_type": "m.thread",
        "event_id": ROOT,
        "is_falling_back": False,
        "m.in_reply_to": {"event_id": PARENT},
    }
