"""Room keys rotate for membership changes the bridge learns only from the catch-up: a
member gone (or new) in the room's state read back, which Synapse never pushed, ends
every sender's outgoing session in that room, as a pushed membership event does. The
catch-up's own path from the state it read (state_to_reconcile, then CatchUp.feed into
the ingestor) on real PostgreSQL with mautrix's crypto store tables."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from mautrix.util.async_db import Database

from daarion_bridge.db import room_state
from daarion_bridge.ingest.catchup import CatchUp, state_to_reconcile
from daarion_bridge.ingest.ingestor import Ingestor
from tests.db.matrix_events import event
from tests.db.test_late_decryption import make_ingestor
from tests.db.test_writer import ALICE, BOB, BOT, ROOM, roles

SOFIA = "@agent-sofia:localhost"
ELSEWHERE = "!elsewhere:localhost"


@pytest.fixture
async def ingestor(database_url, databases: tuple[Database, Database]) -> AsyncIterator[Ingestor]:
    async for made in make_ingestor(database_url, databases, plaintext_previews=False):
        yield made


async def outgoing_sessions(pool: asyncpg.Pool, *rooms: str) -> set[str]:
    """Sofia's outgoing sessions in these rooms (made, or still there): their rooms."""
    for room in rooms:
        await pool.execute(
            "INSERT INTO crypto_megolm_outbound_session (account_id, room_id, session_id, "
            "session, shared, max_messages, message_count, max_age, created_at, last_used) "
            "VALUES ($1, $2, 'out-' || $2, '\\x00', true, 100, 0, 0, now(), now()) "
            "ON CONFLICT DO NOTHING",
            SOFIA,
            room,
        )
    rows = await pool.fetch("SELECT room_id FROM crypto_megolm_outbound_session")
    return {r[0] for r in rows}


def member_now(user: str, membership: str, before: str, **content: Any) -> dict[str, Any]:
    """The member's event in the room's state, as the homeserver gives it back."""
    found = event(
        "m.room.member", {"membership": membership, **content}, user, ROOM, state_key=user
    )
    found["unsigned"] = {"prev_content": {"membership": before}}
    del found["room_id"]  # /state gives none; state_to_reconcile adds it
    return found


async def catch_up(ingestor: Ingestor, state: list[dict[str, Any]]) -> int:
    """What CatchUp.catch_up_room does with the room's state once read."""
    async with ingestor.pool.acquire() as conn:
        marks = await room_state.marks(conn, ROOM)
    newer = state_to_reconcile(state, ROOM, marks, BOT)
    catchup = CatchUp(ingestor.pool, None, ingestor, window_seconds=60)  # type: ignore[arg-type]
    await catchup.feed(newer, "catch-up")
    return len(newer)


async def test_a_member_gone_by_catch_up_rotates_the_rooms_keys(
    ingestor: Ingestor, pool: asyncpg.Pool
) -> None:
    assert await outgoing_sessions(pool, ROOM, ELSEWHERE) == {ROOM, ELSEWHERE}
    # Bob left while Synapse's pushes were lost; Carol joined.
    state = [
        member_now(BOB, "leave", before="join"),
        member_now("@carol:localhost", "join", before="invite"),
    ]
    assert await catch_up(ingestor, state) == 2
    assert (await roles(pool))[BOB][1] is False  # the index closed Bob's membership
    assert await outgoing_sessions(pool) == {ELSEWHERE}  # a new session for what follows


async def test_a_profile_change_by_catch_up_rotates_nothing(
    ingestor: Ingestor, pool: asyncpg.Pool
) -> None:
    """The counterpart: a state event newer than the index that is no membership change."""
    assert await outgoing_sessions(pool, ROOM) == {ROOM}
    state = [member_now(ALICE, "join", before="join", displayname="Alice B.")]
    assert await catch_up(ingestor, state) == 1
    assert await outgoing_sessions(pool) == {ROOM}
