"""Ingestor.handle_transaction on a real database: the write that begins, claims and
looks up while the events are still being translated."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from daarion_bridge.ingest.ingestor import TRANSLATE_SLICE, Ingestor
from daarion_bridge.translate.agents import LiveDirectory
from tests.db.conftest import make_config
from tests.db.matrix_events import ALICE, event, member, text
from tests.db.test_writer import setup

ZOE = "@zoë:localhost"  # not plain ASCII: the raw guess leaves her out


@pytest.fixture
async def ingestor(pool: asyncpg.Pool) -> Ingestor:
    config = make_config()
    ingestor = Ingestor(pool, None, LiveDirectory(config.roster), config)  # type: ignore[arg-type]
    await ingestor.write_setups("setup", [setup()])
    return ingestor


def _is_write(task: asyncio.Task[Any]) -> bool:
    return getattr(task.get_coro(), "__qualname__", "") == "write_while_translating"


async def senders(pool: asyncpg.Pool) -> dict[str, str]:
    rows = await pool.fetch(
        "SELECT m.matrix_event_id, u.matrix_id FROM messages m "
        "JOIN users u ON u.id = m.sender_user_id"
    )
    return {r["matrix_event_id"]: r["matrix_id"] for r in rows}


async def test_a_transaction_of_every_kind_is_written_once(
    ingestor: Ingestor, pool: asyncpg.Pool
) -> None:
    first = text("hello", sender="@bob:localhost")
    events = [
        first,
        member("@dave:localhost", "join"),
        event("m.room.power_levels", {"users": {"@dave:localhost": 100}}, state_key=""),
        *(text(f"m{i}") for i in range(2 * TRANSLATE_SLICE)),  # several slices
        event("m.room.redaction", {}, sender="@bob:localhost", redacts=first["event_id"]),
    ]
    outcome = await ingestor.handle_transaction("t1", events)
    assert not outcome.replay
    assert outcome.applied["NewMessage"] == 1 + 2 * TRANSLATE_SLICE
    assert outcome.applied["RedactMessage"] == 1
    role = await pool.fetchval(
        "SELECT m.role FROM channel_members m JOIN users u ON u.id = m.member_user_id "
        "WHERE u.matrix_id = '@dave:localhost'"
    )
    assert role == "owner"  # joined, then raised by the power levels in the same transaction
    again = await ingestor.handle_transaction("t1", events)
    assert again.replay
    assert await pool.fetchval("SELECT count(*) FROM messages") == 1 + 2 * TRANSLATE_SLICE


async def test_what_the_guess_leaves_out_is_looked_up_after_translation(
    ingestor: Ingestor, pool: asyncpg.Pool
) -> None:
    """A person seen before but left out of the raw guess is found, not made again."""
    one, two = text("first", sender=ZOE), text("second", sender=ZOE)
    await ingestor.handle_transaction("t1", [one])
    await ingestor.handle_transaction("t2", [two, text("alice", sender=ALICE)])
    found = await senders(pool)
    assert found[one["event_id"]] == found[two["event_id"]] == ZOE
    assert await pool.fetchval("SELECT count(*) FROM users WHERE matrix_id = $1", ZOE) == 1


async def test_a_room_the_guess_leaves_out_is_looked_up_after_translation(
    ingestor: Ingestor, pool: asyncpg.Pool
) -> None:
    room = "!кімната:localhost"
    await ingestor.write_setups("setup-2", [setup(room_id=room, name="Кімната")])
    hello = text("привіт", room=room)
    assert (await ingestor.handle_transaction("t1", [hello])).applied["NewMessage"] == 1
    assert hello["event_id"] in await senders(pool)


async def test_translation_failing_midway_commits_nothing_and_frees_the_connection(
    ingestor: Ingestor, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in translation, raised while the write is under way: the write rolls back
    and hands its connection back before the error reaches the caller."""
    translate = ingestor.translate
    calls = 0

    def failing(events: Sequence[Any]) -> list[Any]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("translation bug")
        return translate(events)

    monkeypatch.setattr(ingestor, "translate", failing)
    events = [text(f"m{i}") for i in range(2 * TRANSLATE_SLICE)]
    with pytest.raises(RuntimeError, match="translation bug"):
        try:
            await ingestor.handle_transaction("broken", events)
        finally:  # no await before this look: the write must already be over
            writes = [t for t in asyncio.all_tasks() if _is_write(t)]
    assert writes == []
    assert (
        await pool.fetchval("SELECT count(*) FROM bridge_transactions WHERE txn_id = 'broken'") == 0
    )
    assert await pool.fetchval("SELECT count(*) FROM messages") == 0
    assert pool.get_idle_size() == pool.get_size()
    monkeypatch.setattr(ingestor, "translate", translate)
    assert not (await ingestor.handle_transaction("broken", events)).replay
    assert await pool.fetchval("SELECT count(*) FROM messages") == 2 * TRANSLATE_SLICE
