"""`daarion-bridge dead-letters list|replay`: what was set aside, and putting it back.

Replay runs each dead-lettered event through today's translation and writer: once the
code that could not handle it is fixed, the event lands like any other, exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from ..config import Config
from ..db.bookkeeping import events_digest, ingest_transaction
from ..db.database import open_database, pool_of
from ..db.embedded import EmbeddedPostgres
from ..db.errors import WRITE_ERRORS, is_data_error
from ..translate.agents import AgentDirectory
from ..translate.events import translate_event
from ..translate.preview import BadEvent
from .writer import write_rows

LIST_LIMIT = 1000
T = TypeVar("T")


async def _with_pool(config: Config, action: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    embedded = None
    url = config.database.url
    if config.database.embedded:
        embedded = EmbeddedPostgres(config.database.embedded_dir)
        url = await embedded.start()
    where = "database.url embedded" if embedded else None
    db, _state = await open_database(url, where=where)
    try:
        return await action(pool_of(db))
    finally:
        await db.stop()
        if embedded is not None:
            await embedded.stop(only_if_started_here=True)


async def list_dead_letters(config: Config) -> list[str]:
    async def run(pool: asyncpg.Pool) -> list[str]:
        rows = await pool.fetch(
            "SELECT id, created_at, txn_id, event_id, room_id, event_type, reason "
            "FROM bridge_dead_letters ORDER BY id LIMIT $1",
            LIST_LIMIT,
        )
        return ["\t".join(_columns(r)) for r in rows]

    return await _with_pool(config, run)


def _columns(row: asyncpg.Record) -> list[str]:
    return [
        str(row["id"]),
        f"{row['created_at']:%Y-%m-%dT%H:%M:%S}Z",
        f"txn {row['txn_id']}",
        row["event_id"] or "-",
        row["room_id"] or "-",
        row["event_type"] or "-",
        row["reason"],
    ]


async def replay_dead_letters(config: Config, ids: list[int] | None) -> list[str]:
    """Replays the given dead letters (all when None); returns one line per letter."""

    async def run(pool: asyncpg.Pool) -> list[str]:
        rows = await pool.fetch(
            "SELECT id, event FROM bridge_dead_letters "
            "WHERE $1::bigint[] IS NULL OR id = ANY($1::bigint[]) ORDER BY id",
            ids,
        )
        report = []
        for row in rows:
            report.append(await _replay_one(pool, config, row["id"], row["event"]))
        return report

    return await _with_pool(config, run)


async def _replay_one(pool: asyncpg.Pool, config: Config, letter_id: int, raw_json: str) -> str:
    event = json.loads(raw_json)
    try:
        op = translate_event(
            event,
            bot_mxid=config.bot_mxid,
            preview_length=config.bridge.preview_length,
            agents=AgentDirectory(config.roster),
        )
    except BadEvent as e:
        return f"{letter_id}: still rejected: {e}"
    async with pool.acquire() as conn:
        try:
            async with ingest_transaction(conn):
                outcome = await write_rows(
                    conn, f"dead-letter-{letter_id}", events_digest([event]), [op]
                )
                await conn.execute("DELETE FROM bridge_dead_letters WHERE id = $1", letter_id)
        except WRITE_ERRORS as e:
            if not is_data_error(e):
                raise
            return f"{letter_id}: still rejected by the database: {type(e).__name__}"
    applied = sum(outcome.applied.values())
    return f"{letter_id}: replayed ({'applied' if applied else 'nothing to change'})"
