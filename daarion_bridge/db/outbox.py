"""bridge_outbox: platform events written in the same commit as the rows they describe.

The publisher (publisher.py) sends them to NATS in id order and moves the cursor in
bridge_outbox_cursor past them only after the server acknowledged them, so a crash
anywhere loses nothing; JetStream's de-duplication by message id drops the resend.

The cursor is sound because ids are handed out in commit order: every insert holds the
ingest lock until its transaction ends, so no row can commit later with a smaller id
than one the publisher has already passed. That needs the id sequence's CACHE to stay 1
(a cache gives each session its own block of ids); a schema test checks it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import orjson
from asyncpg import Connection, Pool

from ..translate.bus import BusEvent, Sender
from .bookkeeping import INGEST_LOCK_KEY

# The writers hold the ingest lock already; taking it again costs nothing and makes the
# commit order of ids (see above) a property of this statement, not of its callers.
_INSERT = """
INSERT INTO bridge_outbox (subject, msg_id, payload)
SELECT s, m, p::jsonb
FROM unnest($1::text[], $2::text[], $3::text[]) AS o(s, m, p),
     (SELECT pg_advisory_xact_lock($4)) AS held
"""
_AFTER_CURSOR = "id > (SELECT last_sent_id FROM bridge_outbox_cursor)"

HUMAN, AGENT = "human", "agent"
Resolve = Callable[[str, UUID], Sender]


@dataclass(frozen=True, slots=True)
class Pending:
    id: int
    subject: str
    msg_id: str
    payload: bytes


async def add(conn: Connection, events: Sequence[BusEvent]) -> None:
    if events:
        await conn.execute(
            _INSERT,
            [e.subject for e in events],
            [e.msg_id for e in events],
            [_json(e.payload) for e in events],
            INGEST_LOCK_KEY,
        )


def _json(payload: dict[str, Any]) -> str:
    """orjson on the hot path; the standard encoder for what it refuses (a lone
    surrogate), so that fails as a data error in the database, as any other row would."""
    try:
        return orjson.dumps(payload).decode()
    except orjson.JSONEncodeError:
        return json.dumps(payload, ensure_ascii=False)


async def unsent(conn: Connection | Pool, limit: int) -> list[Pending]:
    rows = await conn.fetch(
        "SELECT id, subject, msg_id, payload::text AS payload FROM bridge_outbox "
        f"WHERE {_AFTER_CURSOR} ORDER BY id LIMIT $1",
        limit,
    )
    return [Pending(r["id"], r["subject"], r["msg_id"], r["payload"].encode()) for r in rows]


async def mark_sent(conn: Connection | Pool, last_id: int) -> None:
    """Everything up to `last_id` is published (the publisher sends in id order)."""
    await conn.execute(
        "UPDATE bridge_outbox_cursor SET last_sent_id = $1 WHERE last_sent_id < $1", last_id
    )


async def backlog(conn: Connection | Pool) -> int:
    return await conn.fetchval(f"SELECT count(*) FROM bridge_outbox WHERE {_AFTER_CURSOR}")


async def prune(conn: Connection | Pool, retention: timedelta) -> int:
    """Published rows written more than `retention` ago; unpublished rows always stay."""
    status = await conn.execute(
        "DELETE FROM bridge_outbox WHERE created_at < now() - $1::interval "
        f"AND NOT ({_AFTER_CURSOR})",
        retention,
    )
    return int(status.split()[-1])


class Emitter:
    """Collects a transaction's platform events; `flush` writes them into the outbox.

    Builders receive a resolver from row ids to platform ids. The writer hands over the
    ids it read anyway (`know`); the rest are read at flush, one query per table."""

    def __init__(self) -> None:
        self._builders: list[Callable[[Resolve], BusEvent]] = []
        self._wanted: dict[str, set[UUID]] = {HUMAN: set(), AGENT: set()}
        self._known: dict[tuple[str, UUID], str] = {}

    def know(self, platform_ids: dict[tuple[str, UUID], str]) -> None:
        """(HUMAN or AGENT, row id) -> platform id, as read in this transaction."""
        self._known.update(platform_ids)

    def add(self, build: Callable[[Resolve], BusEvent], *who: tuple[str, UUID]) -> None:
        self._builders.append(build)
        for kind, row_id in who:
            self._wanted[kind].add(row_id)

    async def flush(self, conn: Connection) -> int:
        if not self._builders:
            return 0
        found = self._known
        for kind, table in ((HUMAN, "users"), (AGENT, "agents")):
            missing = [row_id for row_id in self._wanted[kind] if (kind, row_id) not in found]
            if missing:
                rows = await conn.fetch(
                    f"SELECT id, external_id FROM {table} WHERE id = ANY($1::uuid[])", missing
                )
                found.update({(kind, r["id"]): r["external_id"] for r in rows})

        def resolve(kind: str, row_id: UUID) -> Sender:
            return Sender(found[kind, row_id], kind)

        events = [build(resolve) for build in self._builders]
        await add(conn, events)
        count = len(events)
        self._builders.clear()
        return count


class NoEmitter(Emitter):
    """NATS is off: nothing is collected, nothing written."""

    def know(self, platform_ids: dict[tuple[str, UUID], str]) -> None:
        return None

    def add(self, build: Callable[[Resolve], BusEvent], *who: tuple[str, UUID]) -> None:
        return None
