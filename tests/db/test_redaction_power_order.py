"""A redaction is judged by the power levels in force where it stands in its
transaction, as the homeserver judged it: not by those the transaction ends with."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from daarion_bridge.db.bookkeeping import events_digest
from daarion_bridge.ingest.writer import write_transaction
from tests.db.matrix_events import event, member, text
from tests.db.test_writer import ALICE, BOB, CAROL, items_of, previews, redaction, setup


async def send(pool: asyncpg.Pool, txn_id: str, events: list[Any], isolate: bool) -> None:
    async with pool.acquire() as conn:
        await write_transaction(
            conn,
            txn_id,
            events_digest(events),
            items_of(events),
            events=events if isolate else None,
        )


def levels(users: dict[str, int]) -> dict[str, Any]:
    return event("m.room.power_levels", {"users": users}, ALICE, state_key="")


@pytest.mark.parametrize("isolate", [False, True], ids=["batched", "isolated"])
async def test_a_moderator_demoted_after_redacting_keeps_the_redaction(
    pool: asyncpg.Pool, isolate: bool
) -> None:
    """BOB has 50 by the room's state, CAROL 0."""
    async with pool.acquire() as conn:
        await write_transaction(conn, "setup", events_digest([]), [], [setup()])
    spam, kept = text("spam"), text("not spam")
    await send(pool, "t1", [member(CAROL, "join"), spam, kept], isolate)
    await send(
        pool,
        "t2",
        [
            redaction(spam["event_id"], sender=BOB),  # a moderator still
            levels({BOB: 0, CAROL: 50}),  # demoted; Carol promoted
        ],
        isolate,
    )
    shown = await previews(pool)
    assert shown[spam["event_id"]] == "[deleted]"
    await send(
        pool,
        "t3",
        [
            redaction(kept["event_id"], sender=BOB),  # no longer a moderator
            levels({BOB: 50, CAROL: 50}),  # promoted again, too late
        ],
        isolate,
    )
    assert (await previews(pool))[kept["event_id"]] == "not spam"
