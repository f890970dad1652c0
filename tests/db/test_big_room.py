"""A big room's set-up costs a bounded number of statements, not one per member: its
people are written in one pipelined round trip. Real PostgreSQL, the writer."""

from __future__ import annotations

from typing import Any

import asyncpg

from daarion_bridge.db.bookkeeping import events_digest
from daarion_bridge.ingest.channel_setup import ChannelSetup
from daarion_bridge.ingest.writer import write_transaction
from daarion_bridge.translate.rooms import snapshot_from_state
from tests.db.test_writer import ALICE, BOT, ROOM, room_state

PEOPLE = 300


async def test_a_big_rooms_people_are_written_in_one_round_trip(pool: asyncpg.Pool) -> None:
    crowd = [f"@p{i}:localhost" for i in range(PEOPLE)]
    state = room_state() + [
        {"type": "m.room.member", "state_key": m, "sender": m, "content": {"membership": "join"}}
        for m in crowd
    ]
    setup = ChannelSetup(snapshot_from_state(ROOM, state), "microdao:core", ALICE, BOT)
    statements: list[str] = []

    def logged(record: Any) -> None:
        if "channel_members" in record.query:
            statements.append(record.query)

    async with pool.acquire() as conn:
        conn.add_query_logger(logged)
        try:
            await write_transaction(conn, "big", events_digest([]), [], [setup])
        finally:
            conn.remove_query_logger(logged)
    members = await pool.fetchval(
        "SELECT count(*) FROM channel_members m JOIN users u ON u.id = m.member_user_id "
        "WHERE u.matrix_id LIKE '@p%' AND m.left_at IS NULL"
    )
    assert members == PEOPLE
    assert len(statements) < 10, f"{len(statements)} statements on channel_members"
