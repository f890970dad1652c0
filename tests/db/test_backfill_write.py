"""Backfill through the writer: a new channel records its wish in the commit that makes
it (an upgraded or re-joined one does not), and backfilled messages are announced with
`backfilled: true` but call no agent, run no command and count as no activity."""

from __future__ import annotations

from typing import Any

import asyncpg

from daarion_bridge.db import backfills
from daarion_bridge.ingest.channel_setup import ChannelSetup
from daarion_bridge.translate.rooms import snapshot_from_state
from tests.db.matrix_events import event, text
from tests.db.test_announce import ALICE, BOT, ROOM, SOFIA, Feed, feed, state, take

NEW_ROOM = "!new:localhost"
__all__ = ["feed"]  # the fixture, shared with test_announce


def setup_of(room: str, joined: list[str], **extra: Any) -> ChannelSetup:
    snapshot = snapshot_from_state(room, state(joined))
    return ChannelSetup(snapshot, "microdao:core", ALICE, BOT, **extra)


async def wishes(pool: asyncpg.Pool) -> list[tuple[Any, str]]:
    return [(p.channel_id, p.room_id) for p in await backfills.pending(pool)]


async def test_a_new_channel_wishes_its_history_once(pool: asyncpg.Pool, feed: Feed) -> None:
    outcome = await feed.send([], [setup_of(ROOM, [ALICE])])
    [channel] = outcome.new_channels
    assert outcome.backfills == [channel]
    assert await wishes(pool) == [(channel.id, ROOM)]
    # The bot invited into the channel again: its history is in the index already.
    again = await feed.send([], [setup_of(ROOM, [ALICE, BOT])])
    assert again.new_channels == [channel] and again.backfills == []
    assert await wishes(pool) == [(channel.id, ROOM)]
    await backfills.done(pool, channel.id)
    assert await wishes(pool) == []


async def test_a_channel_moved_by_an_upgrade_wishes_no_history(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    channel = (await feed.send([], [setup_of(ROOM, [ALICE])])).new_channels[0]
    await backfills.done(pool, channel.id)
    moved = await feed.send([], [setup_of(NEW_ROOM, [ALICE], replaces_room=ROOM)])
    assert [c.id for c in moved.new_channels] == [channel.id]
    assert moved.backfills == []
    assert await wishes(pool) == []


async def test_backfilled_messages_call_no_agent_and_run_no_command(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    await feed.send([], [setup_of(ROOM, [ALICE, SOFIA])])  # Alice alone with Sofia
    await take(pool)
    await pool.execute("UPDATE agent_sessions SET status = 'idle'")
    history = [
        text("Sofia, what do you think?"),
        text("!daarion help"),
        text("Sofia wrote this", sender=SOFIA),
    ]
    outcome = await feed.send(history, backfill=True)
    assert outcome.applied["NewMessage"] == 3
    assert outcome.commands == []
    found = await take(pool)
    assert [s for s, _ in found] == ["messaging.message.created"] * 3
    assert all(p["backfilled"] is True for _, p in found)
    status = "SELECT status FROM agent_sessions"
    assert await pool.fetchval(status) == "idle", "history counted as Sofia's activity"
    # The same kinds of message, live: Sofia is called, the command runs.
    outcome = await feed.send([text("Sofia, and now?"), text("!daarion help")])
    assert [op.preview for op in outcome.commands] == ["!daarion help"]
    assert await pool.fetchval(status) == "active"
    live = await take(pool)
    assert [s for s, _ in live].count("router.invoke.agent") == 1
    assert [p["backfilled"] for s, p in live if s == "messaging.message.created"] == [False] * 2


async def test_backfilled_edits_and_redactions_apply(pool: asyncpg.Pool, feed: Feed) -> None:
    await feed.send([], [setup_of(ROOM, [ALICE])])
    old, gone = text("draft"), text("oops")
    edit = text(
        "* final",
        **{"m.new_content": {"msgtype": "m.text", "body": "final"},
           "m.relates_to": {"rel_type": "m.replace", "event_id": old["event_id"]}},
    )  # fmt: skip
    redaction = event("m.room.redaction", {}, redacts=gone["event_id"])
    outcome = await feed.send([old, gone, edit, redaction], backfill=True)
    assert (outcome.applied["EditMessage"], outcome.applied["RedactMessage"]) == (1, 1)
    rows = dict(
        await pool.fetch(
            "SELECT matrix_event_id, content_preview FROM messages WHERE matrix_event_id = "
            "ANY($1::text[])",
            [old["event_id"], gone["event_id"]],
        )
    )
    assert rows[old["event_id"]] == "final"
    assert rows[gone["event_id"]] == "[deleted]"
