"""What a runtime reads of a message (issue 17, item 1): full text, edits applied, reply
fallback removed, the platform's cap, media labels, redactions."""

from __future__ import annotations

from typing import Any

import pytest

from daarion_bridge.translate.context import MAX_TEXT, is_message, view

ALICE, BOB = "@alice:x", "@bob:x"


def event(content: dict[str, Any], etype: str = "m.room.message", **extra: Any) -> dict:
    return {
        "type": etype,
        "event_id": "$m",
        "sender": ALICE,
        "origin_server_ts": 1_700_000_000_000,
        "content": content,
        **extra,
    }


def text(body: str, **more: Any) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body, **more}


def test_the_whole_text_with_its_lines_beyond_any_preview() -> None:
    body = "line one\n\n" + "word " * 600  # 3,000+ characters over several lines
    v = view(event(text(body)))
    assert (v.text, v.truncated, v.edited, v.deleted) == (body, False, False, False)


def test_the_platforms_cap_with_the_flag() -> None:
    v = view(event(text("a" * (MAX_TEXT + 5))))
    assert v.text == "a" * MAX_TEXT and v.truncated


def test_the_latest_edit_of_the_sender_is_applied() -> None:
    edit = {"sender": ALICE, "content": {"m.new_content": text("fixed"), "body": "* fixed"}}
    v = view(event(text("typo"), unsigned={"m.relations": {"m.replace": edit}}))
    assert (v.text, v.edited) == ("fixed", True)
    forged = {**edit, "sender": BOB}
    v = view(event(text("typo"), unsigned={"m.relations": {"m.replace": forged}}))
    assert (v.text, v.edited) == ("typo", False)


def test_reply_fallback_is_removed_from_text_and_html() -> None:
    content = text(
        "> <@bob:x> question\n\nanswer",
        format="org.matrix.custom.html",
        formatted_body="<mx-reply><blockquote>q</blockquote></mx-reply><b>answer</b>",
        **{"m.relates_to": {"m.in_reply_to": {"event_id": "$q"}}},
    )
    v = view(event(content))
    assert (v.text, v.html, v.reply_to, v.thread_root) == ("answer", "<b>answer</b>", "$q", None)


def test_a_redacted_message_is_deleted_without_text() -> None:
    v = view(event({}, unsigned={"redacted_because": {"type": "m.room.redaction"}}))
    assert (v.text, v.html, v.deleted) == (None, None, True)


@pytest.mark.parametrize(
    ("content", "etype", "shown"),
    [
        ({"msgtype": "m.image", "body": "cat.png", "url": "mxc://x/y"}, "m.room.message",
         "[image] cat.png"),
        ({"msgtype": "m.file", "body": "see this", "filename": "a.pdf"}, "m.room.message",
         "[file] a.pdf: see this"),
        ({"body": "wave"}, "m.sticker", "[sticker] wave"),
        ({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "zz"}, "m.room.encrypted",
         "[encrypted]"),
    ],
)  # fmt: skip
def test_media_show_their_label_and_name(content: dict, etype: str, shown: str) -> None:
    assert view(event(content, etype)).text == shown


def test_a_message_in_a_thread_names_its_root() -> None:
    relates = {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": True,
               "m.in_reply_to": {"event_id": "$last"}}  # fmt: skip
    v = view(event(text("in thread", **{"m.relates_to": relates})))
    assert (v.thread_root, v.reply_to) == ("$root", None)


def test_edits_and_state_are_not_messages_of_the_conversation() -> None:
    assert is_message(event(text("hi")))
    edit = text("* x", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$m"}})
    assert not is_message(event(edit))
    assert not is_message(event({"name": "n"}, "m.room.name", state_key=""))
    assert not is_message(event({"m.relates_to": {}}, "m.reaction"))


def test_a_shape_no_client_sends_has_no_text_and_no_error() -> None:
    v = view(event({"msgtype": 5, "body": "x"}))
    assert (v.text, v.deleted) == (None, False)
