"""Removing an edit (Element's "Remove" on an edit redacts the `m.replace` event) shows
the version before it, and announces it: the removed text, a pasted password say, stays
nowhere in the index."""

from __future__ import annotations

import itertools
import json
from typing import Any

import asyncpg
import pytest

from daarion_bridge.db.bookkeeping import events_digest
from daarion_bridge.ingest.items import Announce, Outcome
from daarion_bridge.ingest.writer import write_transaction
from tests.db.matrix_events import member, text
from tests.db.test_writer import (
    BOB,
    BOT,
    CAROL,
    edit_event,
    items_of,
    previews,
    redaction,
    setup,
)

SECRET = "hunter2 password"


class Feed:
    """Transactions with their outbox events; `isolate`: the slow path, event by event."""

    def __init__(self, pool: asyncpg.Pool, isolate: bool) -> None:
        self.pool = pool
        self.isolate = isolate
        self.n = itertools.count(1)

    async def send(self, events: list[dict[str, Any]], setups: Any = ()) -> Outcome:
        async with self.pool.acquire() as conn:
            return await write_transaction(
                conn,
                f"t{next(self.n)}",
                events_digest(events),
                items_of(events),
                setups,
                events=events if self.isolate else None,
                announce=Announce(BOT),
            )

    async def updates(self) -> list[tuple[str, str]]:
        """The message.updated events written since the last call: (cause, preview)."""
        rows = await self.pool.fetch(
            "DELETE FROM bridge_outbox RETURNING id, subject, payload::text"
        )
        found = []
        for r in sorted(rows, key=lambda r: r["id"]):
            payload = json.loads(r["payload"])
            if r["subject"] == "messaging.message.updated":
                found.append((payload["edit_event_id"], payload["content_preview"]))
        return found


@pytest.fixture(params=[False, True], ids=["batched", "isolated"])
async def feed(pool: asyncpg.Pool, request: pytest.FixtureRequest) -> Feed:
    f = Feed(pool, request.param)
    await f.send([], [setup()])
    await f.send([member(CAROL, "join")])
    await f.updates()
    return f


async def stored_text(pool: asyncpg.Pool) -> list[str]:
    """Every text the bridge's edit bookkeeping holds."""
    rows = await pool.fetch(
        "SELECT preview AS t FROM bridge_message_edits WHERE preview IS NOT NULL "
        "UNION ALL SELECT original_preview FROM bridge_message_state "
        "WHERE original_preview IS NOT NULL"
    )
    return [r["t"] for r in rows]


async def test_removing_the_latest_edit_shows_the_one_before(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    original = text("first")
    fixed = edit_event(original["event_id"], "second")
    await feed.send([original, fixed])
    leak = edit_event(original["event_id"], SECRET)
    await feed.send([leak])
    assert (await previews(pool))[original["event_id"]] == SECRET
    await feed.updates()
    remove = redaction(leak["event_id"])
    outcome = await feed.send([remove])
    assert (await previews(pool))[original["event_id"]] == "second"
    assert await feed.updates() == [(remove["event_id"], "second")]
    assert outcome.applied["RedactMessage"] == 1
    assert not any(t.startswith("hunter2") for t in await stored_text(pool))


async def test_removing_every_edit_shows_the_original(pool: asyncpg.Pool, feed: Feed) -> None:
    original = text("first")
    one, two = edit_event(original["event_id"], "one"), edit_event(original["event_id"], "two")
    await feed.send([original, one, two])
    # The older edit first: nothing shows it, so nothing changes or is announced.
    await feed.send([redaction(one["event_id"])])
    assert (await previews(pool))[original["event_id"]] == "two"
    await feed.updates()
    await feed.send([redaction(two["event_id"])])
    assert (await previews(pool))[original["event_id"]] == "first"
    assert [preview for _, preview in await feed.updates()] == ["first"]


async def test_an_edit_and_its_removal_in_one_transaction(pool: asyncpg.Pool, feed: Feed) -> None:
    original = text("first")
    leak = edit_event(original["event_id"], SECRET)
    await feed.send([original, leak, redaction(leak["event_id"])])
    assert (await previews(pool))[original["event_id"]] == "first"


async def test_a_removed_edit_sent_again_stays_removed(pool: asyncpg.Pool, feed: Feed) -> None:
    original = text("first")
    leak = edit_event(original["event_id"], SECRET)
    await feed.send([original, leak])
    await feed.send([redaction(leak["event_id"])])
    await feed.send([dict(leak)])
    assert (await previews(pool))[original["event_id"]] == "first"


async def test_only_the_sender_or_a_moderator_removes_an_edit(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    """CAROL has no power to redact; BOB has 50."""
    original = text("first")
    edit = edit_event(original["event_id"], "second")
    await feed.send([original, edit])
    await feed.send([redaction(edit["event_id"], sender=CAROL)])
    assert (await previews(pool))[original["event_id"]] == "second"
    await feed.send([redaction(edit["event_id"], sender=BOB)])
    assert (await previews(pool))[original["event_id"]] == "first"


async def test_redacting_a_message_forgets_its_versions(pool: asyncpg.Pool, feed: Feed) -> None:
    original = text("first")
    leak = edit_event(original["event_id"], SECRET)
    await feed.send([original, leak])
    assert await stored_text(pool) != []
    await feed.send([redaction(original["event_id"])])
    assert await stored_text(pool) == []
    # Removing the edit afterwards brings nothing back.
    await feed.send([redaction(leak["event_id"])])
    assert (await previews(pool))[original["event_id"]] == "[deleted]"
