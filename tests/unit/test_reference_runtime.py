"""The reference runtime's pure parts: the conversation a model hears, the post's id."""

from __future__ import annotations

import re

from daarion_bridge.devtools.demo_runtime import conversation, txn_id_for


def m(sender_id: str, name: str, text: str | None) -> dict:
    return {"sender_id": sender_id, "sender_name": name, "text": text}


def test_the_agents_own_words_are_the_assistants_and_deleted_ones_are_left_out() -> None:
    context = {
        "history": [
            m("user:1", "Alice", "Lunch?"),
            m("agent:sofia", "Sofia", "Sure."),
            m("user:2", "Bob", None),  # deleted
        ],
        "message": m("user:1", "Alice", "Sofia, when?"),
    }
    chat = conversation("agent:sofia", "Sofia", context)
    assert chat[0]["role"] == "system" and "Sofia" in chat[0]["content"]
    assert chat[1:] == [
        {"role": "user", "content": "Alice: Lunch?"},
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "Alice: Sofia, when?"},
    ]


def test_the_txn_id_is_one_per_answer_and_fits_the_endpoint() -> None:
    one = txn_id_for("agent:sofia", "0193e3a5-7f00-7000-8000-000000000001")
    assert one == txn_id_for("agent:sofia", "0193e3a5-7f00-7000-8000-000000000001")
    assert one != txn_id_for("agent:quiet", "0193e3a5-7f00-7000-8000-000000000001")
    assert re.fullmatch(r"[A-Za-z0-9._~-]{1,64}", one)
