"""Which events of a room's history the backfill reads back (ingest/backfill.py): those
before the reader's latest join, up to max_messages and max_age before that join, plus
the edits and redactions since the join; oldest first."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from daarion_bridge.ingest.backfill import earlier_events
from daarion_bridge.translate import bus

BOT = "@daarion:localhost"
ALICE = "@alice:localhost"
_ids = itertools.count(1)
DAY_MS = 86_400_000


def at(ts: int, etype: str = "m.room.message", **fields: Any) -> dict[str, Any]:
    content = fields.pop("content", {"msgtype": "m.text", "body": "hi"})
    return {"type": etype, "event_id": f"$e{next(_ids)}", "sender": ALICE,
            "origin_server_ts": ts, "content": content, **fields}  # fmt: skip


def join(ts: int, user: str = BOT, before: str | None = None) -> dict[str, Any]:
    unsigned = {"prev_content": {"membership": before}} if before else {}
    return at(ts, "m.room.member", state_key=user, sender=user,
              content={"membership": "join"}, unsigned=unsigned)  # fmt: skip


def read(timeline: list[dict[str, Any]], max_messages: int = 1000, max_age: float = 1e9) -> list:
    """`timeline` oldest first, as a room shows it; paged newest first, 3 a page."""
    newest_first = timeline[::-1]

    async def pages() -> AsyncIterator[list[dict[str, Any]]]:
        for start in range(0, len(newest_first), 3):
            yield newest_first[start : start + 3]

    return asyncio.run(earlier_events(pages(), BOT, max_messages, max_age))


def test_history_before_the_join_oldest_first_without_state_or_live_messages() -> None:
    before = [at(1), at(2), at(3, "m.room.name", state_key="", content={"name": "x"}), at(4)]
    live = [at(20), at(21)]
    found = read([*before, join(10), *live])
    assert found == [before[0], before[1], before[3]]


def test_a_rename_of_the_bot_is_no_join() -> None:
    older, newer = at(1), at(5)
    found = read([older, join(2), newer, join(6, before="join"), at(7)])
    assert found == [older]


def test_at_most_max_messages_the_newest_ones() -> None:
    timeline = [at(ts) for ts in range(1, 11)]
    found = read([*timeline, join(20)], max_messages=4)
    assert found == timeline[-4:]


def test_nothing_older_than_max_age_before_the_join() -> None:
    old, recent = at(1 * DAY_MS), at(9 * DAY_MS)
    found = read([old, recent, join(10 * DAY_MS)], max_age=2 * 86400)
    assert found == [recent]


def test_edits_and_redactions_since_the_join_come_after_the_history() -> None:
    message = at(1)
    relates = {"rel_type": "m.replace", "event_id": message["event_id"]}
    edit = at(20, content={"msgtype": "m.text", "body": "* x", "m.relates_to": relates})
    redaction = at(21, "m.room.redaction", redacts=message["event_id"])
    found = read([message, join(10), at(15), edit, redaction])
    assert found == [message, edit, redaction]


def test_no_join_seen_reads_nothing() -> None:
    assert read([at(1), at(2)]) == []


def test_message_created_says_whether_it_was_backfilled() -> None:
    ref = bus.ChannelRef(uuid.uuid4(), "microdao:7", "!r:x")
    sender = bus.Sender("user:1", "human")
    args = (ref, uuid.uuid4(), "$e", sender, datetime.now(UTC))
    assert bus.message_created(*args, "hi").payload["backfilled"] is False
    assert bus.message_created(*args, "hi", None, True).payload["backfilled"] is True
