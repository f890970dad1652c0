"""Dead letters stay bounded and forget what was deleted: one per event however often it
comes back (every catch-up round feeds it again), none for rooms that are not channels,
content gone when the event is redacted, pruned after the retention. Real PostgreSQL,
the writer as ingest drives it."""

from __future__ import annotations

import json
from datetime import timedelta

import asyncpg
import pytest

from daarion_bridge.crypto.service import DECRYPTED
from daarion_bridge.db import bookkeeping, maintenance
from tests.db.matrix_events import event, text
from tests.db.test_writer import ALICE, Txns, setup

STRANGER_ROOM = "!elsewhere:localhost"


@pytest.fixture
async def feed(pool: asyncpg.Pool) -> Txns:
    """The writer's feed with one channel, the test room (Bob has power 50 there)."""
    t = Txns(pool)
    await t.send([], [setup()])
    return t


def broken(body: str, sender: str = ALICE, room: str | None = None) -> dict:
    """A message that can never be written: it has no origin_server_ts."""
    bad = text(body, sender) if room is None else text(body, sender, room)
    del bad["origin_server_ts"]
    return bad


async def letters(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM bridge_dead_letters ORDER BY id")


async def test_an_event_fed_again_is_set_aside_once(pool: asyncpg.Pool, feed: Txns) -> None:
    bad = broken("the same broken event")
    first = await feed.send([bad])
    again = await feed.send([bad])  # as a catch-up round feeds it again
    assert (first.dead_letters, again.dead_letters) == (1, 0)
    assert again.ignored["Rejected"] == 1
    assert [r["event_id"] for r in await letters(pool)] == [bad["event_id"]]


async def test_an_event_of_a_room_that_is_no_channel_is_not_kept(
    pool: asyncpg.Pool, feed: Txns
) -> None:
    outcome = await feed.send([broken("not ours", room=STRANGER_ROOM)])
    assert outcome.dead_letters == 0
    assert await letters(pool) == []


async def test_a_redaction_by_the_sender_removes_the_letters_text(
    pool: asyncpg.Pool, feed: Txns
) -> None:
    bad = broken("a pasted password")
    await feed.send([bad])
    redaction = event("m.room.redaction", {}, ALICE, redacts=bad["event_id"])
    await feed.send([redaction])
    (letter,) = await letters(pool)
    stored = json.loads(letter["event"])
    assert stored["content"] == {}
    assert stored["unsigned"]["redacted_because"] == {"event_id": redaction["event_id"]}
    assert "a pasted password" not in letter["event"]


async def test_a_redaction_without_the_power_leaves_the_letter(
    pool: asyncpg.Pool, feed: Txns
) -> None:
    bad = broken("alice's words")
    await feed.send([bad])
    # Carol is a plain member: she may not redact others' events.
    redaction = event("m.room.redaction", {}, "@carol:localhost", redacts=bad["event_id"])
    await feed.send([redaction])
    (letter,) = await letters(pool)
    assert json.loads(letter["event"])["content"]["body"] == "alice's words"


async def test_old_letters_are_pruned(pool: asyncpg.Pool, feed: Txns) -> None:
    old, new = broken("old"), broken("new")
    await feed.send([old])
    await feed.send([new])
    await pool.execute(
        "UPDATE bridge_dead_letters SET created_at = now() - interval '31 days' "
        "WHERE event_id = $1",
        old["event_id"],
    )
    pruned = await bookkeeping.prune_dead_letters(pool, maintenance.DEAD_LETTER_RETENTION)
    assert pruned == 1
    assert [r["event_id"] for r in await letters(pool)] == [new["event_id"]]
    assert maintenance.DEAD_LETTER_RETENTION == timedelta(days=30)


async def test_a_decrypted_event_is_set_aside_without_its_text(
    pool: asyncpg.Pool, feed: Txns
) -> None:
    bad = {**broken("the decrypted secret"), DECRYPTED: "now"}
    await feed.send([bad])
    (letter,) = await letters(pool)
    assert json.loads(letter["event"])["content"] == {}
    assert "decrypted secret" not in letter["event"]
