"""Messages become rows with a preview: replies, edits, redactions, long texts."""

from __future__ import annotations

import pytest

from tests.e2e.helpers import datetime_to_ms, open_channel, user_row, wait_for

pytestmark = pytest.mark.e2e

ELLIPSIS = "\u2026"


async def message_rows(db, channel_id) -> dict[str, object]:
    rows = await db.fetch("SELECT * FROM messages WHERE channel_id = $1", channel_id)
    return {r["matrix_event_id"]: r for r in rows}


async def test_texts_reply_edit_redaction(e2e, bridge, people, db):
    alice = await people("alice.msg")
    room_id, channel = await open_channel(db, alice, e2e.bot, "E2E messages")
    cid = channel["id"]

    first = await alice.send_text(room_id, "first message")
    second = await alice.send_text(room_id, "second message, soon deleted")
    third = await alice.send_text(room_id, "third message\nwith a second line")
    reply = await alice.reply(
        room_id, third, alice.user_id, "third message\nwith a second line", "a reply to the third"
    )
    edit = await alice.edit(room_id, first, "first message, edited")
    redaction = await alice.redact(room_id, second, "e2e")

    expected = {
        first: "first message, edited",
        second: "[deleted]",
        third: "third message with a second line",
        reply: "a reply to the third",
    }

    async def settled():
        rows = await message_rows(db, cid)
        previews = {k: r["content_preview"] for k, r in rows.items()}
        return rows if previews == expected else None

    try:
        rows = await wait_for(settled, what="one row per message with its final preview")
    except AssertionError:
        rows = await message_rows(db, cid)
        got = {k: r["content_preview"] for k, r in rows.items()}
        assert got == expected, (
            f"edit {edit} and redaction {redaction} must not have rows of their own"
        )
        raise

    assert edit not in rows and redaction not in rows
    alice_user = await user_row(db, alice.user_id)
    assert alice_user is not None
    assert alice_user["handle"] == "@alice.msg"
    assert alice_user["external_id"] == f"matrix:{alice.user_id}"

    for event_id, row in rows.items():
        assert row["sender_type"] == "human"
        assert row["sender_user_id"] == alice_user["id"]
        assert row["sender_agent_id"] is None
        event = await alice.get_event(room_id, event_id)
        ts = event["origin_server_ts"]
        assert abs(datetime_to_ms(row["created_at"]) - ts) < 0.5, (
            f"{event_id}: created_at {row['created_at']} != origin_server_ts {ts}"
        )


async def test_long_message_is_cut_to_500(e2e, bridge, people, db):
    alice = await people("alice.msg")
    room_id, channel = await open_channel(db, alice, e2e.bot, "E2E long")
    unit = "Grüße 👩\u200d💻 from DAARION 🚀 — "  # includes a ZWJ sequence and astral emoji
    text = (unit * (2000 // len(unit) + 1))[:2000]
    assert len(text) == 2000
    event_id = await alice.send_text(room_id, text)

    row = await wait_for(
        lambda: db.fetchrow("SELECT * FROM messages WHERE matrix_event_id = $1", event_id),
        what="the long message's row",
    )
    preview = row["content_preview"]
    assert len(preview) <= 500, len(preview)
    assert len(preview) >= 490, f"cut far too early: {len(preview)} code points"
    assert preview.endswith(ELLIPSIS)
    kept = preview[: -len(ELLIPSIS)]
    assert text.startswith(kept)
    assert not kept.endswith("\u200d"), "cut inside a ZWJ emoji sequence"
