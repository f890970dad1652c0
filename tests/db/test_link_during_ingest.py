"""Linking a person's platform id while the ingest writes their first message: one
users row, and their edits and redactions of earlier messages still count as theirs."""

from __future__ import annotations

import asyncio

import asyncpg

from daarion_bridge.admin.service import Admin
from daarion_bridge.db import users
from daarion_bridge.db.bookkeeping import ingest_transaction
from tests.db.conftest import make_config
from tests.db.matrix_events import member, text
from tests.db.test_writer import Txns, edit_event, previews, redaction, setup

DAVE = "@dave:localhost"


async def rows_of(pool: asyncpg.Pool, matrix_id: str) -> list[str]:
    found = await pool.fetch(
        "SELECT external_id FROM users WHERE matrix_id = $1 ORDER BY external_id", matrix_id
    )
    return [r["external_id"] for r in found]


async def test_a_link_waits_for_the_ingest_and_takes_its_row(pool: asyncpg.Pool) -> None:
    admin = Admin(pool, None, None, None, make_config(), None)  # type: ignore[arg-type]

    async def link_waits() -> bool:
        return bool(
            await pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)"
            )
        )

    async with pool.acquire() as conn:
        async with ingest_transaction(conn):
            await users.create(conn, [DAVE])  # the ingest meets Dave for the first time
            link = asyncio.create_task(admin.link_user(DAVE, "user:7"))
            while not link.done() and not await link_waits():
                await asyncio.sleep(0.01)
        user, created = await link
    assert await rows_of(pool, DAVE) == ["user:7"]
    assert not created and user.external_id == "user:7"


async def test_a_person_with_two_rows_still_edits_and_redacts_their_messages(
    pool: asyncpg.Pool,
) -> None:
    """Rows made by the race before the fix: the bridge's own, which the messages carry,
    and the platform's, which lookups prefer from then on."""
    txns = Txns(pool)
    await txns.send([], [setup()])
    typo, doomed = text("tpyo", DAVE), text("oops", DAVE)
    await txns.send([member(DAVE, "join"), typo, doomed])
    await pool.execute(
        "INSERT INTO users (external_id, matrix_id, handle) VALUES ('user:7', $1, '@dave')", DAVE
    )
    await txns.send(
        [edit_event(typo["event_id"], "typo", DAVE), redaction(doomed["event_id"], DAVE)]
    )
    shown = await previews(pool)
    assert shown[typo["event_id"]] == "typo"
    assert shown[doomed["event_id"]] == "[deleted]"
    # Someone else still may not.
    await txns.send([edit_event(typo["event_id"], "forged", "@carol:localhost")])
    assert (await previews(pool))[typo["event_id"]] == "typo"
