"""bridge_transactions and bridge_dead_letters: the bridge's own records."""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
from asyncpg import Connection, Pool

from ..translate.preview import storable


def events_digest(events: Sequence[Any]) -> str:
    """Identifies a transaction's content: the homeserver resends the same events."""
    ids = (e.get("event_id") if isinstance(e, dict) else None for e in events)
    joined = "\n".join(str(i) for i in ids)
    return hashlib.sha256(joined.encode("utf-8", "surrogatepass")).hexdigest()


# One writer at a time across every bridge process on this database (a rolling restart,
# an HA pair): Synapse sends one transaction at a time anyway, and serial writers can
# neither deadlock nor race each other to create the same channel or slug.
INGEST_LOCK_KEY = 0x6461_6172  # "daar"
# Sent as one simple query: the lock costs no round trip of its own, and every statement
# after it takes its snapshot with the lock held, so it sees what the writer before
# committed (a statement that took the lock itself would have taken its snapshot first).
_BEGIN_LOCKED = f"BEGIN; SELECT pg_advisory_xact_lock({INGEST_LOCK_KEY})"
_ROLLBACK_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


@asynccontextmanager
async def ingest_transaction(conn: Connection) -> AsyncIterator[None]:
    """A transaction that holds the ingest lock from its start: committed at the end of
    the block, rolled back if the block raises."""
    await conn.execute(_BEGIN_LOCKED)
    try:
        yield
    except BaseException:
        # The error that got here is what the caller must see; a connection too broken
        # to roll back is rolled back by the server, and the pool replaces it.
        with contextlib.suppress(*_ROLLBACK_FAILURES):
            await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


async def lock_ingest(conn: Connection) -> None:
    """Held until the surrounding transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", INGEST_LOCK_KEY)


async def is_committed(conn: Connection | Pool, txn_id: str, digest: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT 1 FROM bridge_transactions WHERE txn_id = $1 AND events_digest = $2",
            txn_id,
            digest,
        )
    )


# What every transaction does first besides reading what it refers to (lookup.py), as
# that statement's CTEs: record the id, and note which rooms saw events for the catch-up
# ($1: the room ids; $4, $5, $6: the transaction's id, digest and event count). The note
# is kept to the second: a room busy in every transaction is not rewritten each time, and
# the catch-up's window is minutes. `claimed` has a row unless the id was committed
# before with the same events: (xmax = 0) tells a new id from one reused for others.
CLAIM_CTES = """
touched AS (
    UPDATE bridge_rooms SET last_event_at = now()
    WHERE room_id = ANY($1::text[]) AND last_event_at < now() - interval '1 second'
),
claimed AS (
    INSERT INTO bridge_transactions (txn_id, events_digest, event_count)
    VALUES ($4, $5, $6)
    ON CONFLICT (txn_id) DO UPDATE SET
        events_digest = EXCLUDED.events_digest,
        event_count = EXCLUDED.event_count,
        processed_at = now()
    WHERE bridge_transactions.events_digest <> EXCLUDED.events_digest
    RETURNING (xmax = 0) AS inserted
)"""


class Claim(enum.Enum):
    NEW = "new"
    REPLAY = "replay"  # committed before: nothing to do
    REUSED = "reused"  # an id seen before with other events: the homeserver reset its counter


async def missing_transactions(pool: Pool, txn_ids: Sequence[str]) -> list[str]:
    """Those of these transaction ids no bridge on this database has committed."""
    rows = await pool.fetch(
        "SELECT t FROM unnest($1::text[]) AS t "
        "WHERE NOT EXISTS (SELECT 1 FROM bridge_transactions b WHERE b.txn_id = t)",
        list(txn_ids),
    )
    return [r["t"] for r in rows]


def claim_of(inserted: bool | None) -> Claim:
    """The claim by `claimed`'s row: none, or its `inserted`."""
    if inserted is None:
        return Claim.REPLAY
    return Claim.NEW if inserted else Claim.REUSED


def _scrub(value: Any) -> Any:
    """The event as JSON PostgreSQL accepts: no NUL, no lone surrogates."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(str(k)): _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no Infinity or NaN, though Python's parser takes them
    return value


def _event_json(event: Any) -> str:
    try:
        return json.dumps(_scrub(event))
    except (RecursionError, ValueError, TypeError):
        return json.dumps({"unstorable": "event too deeply nested or not JSON"})


# Stored once per event id, and only for rooms that are channels (or events that name no
# room): the index has nothing to do with other rooms' events, however broken.
_DEAD_LETTER = """
INSERT INTO bridge_dead_letters (txn_id, event_id, room_id, event_type, reason, event)
SELECT $1, $2, $3, $4, $5, $6::jsonb
WHERE $3::text IS NULL OR EXISTS (SELECT 1 FROM channels WHERE matrix_room_id = $3)
ON CONFLICT (event_id) WHERE event_id IS NOT NULL DO NOTHING
"""


async def dead_letter(conn: Connection, txn_id: str, event: Any, reason: str) -> bool:
    """Set the event aside; False when it was not stored (its room is no channel, or a
    letter for the event exists already)."""
    fields = event if isinstance(event, dict) else {}

    def text(key: str) -> str | None:
        value = fields.get(key)
        return storable(value) if isinstance(value, str) else None

    status = await conn.execute(
        _DEAD_LETTER,
        storable(txn_id),
        text("event_id"),
        text("room_id"),
        text("type"),
        reason,
        _event_json(event),
    )
    return status.endswith(" 1")


# A redacted letter keeps what Element keeps of a redacted event: no content, and the
# redaction in `unsigned`, so a replay indexes it as deleted.
@dataclass(frozen=True, slots=True)
class LetterRedaction:
    target_event_id: str
    redaction_event_id: str
    room_id: str
    sender: str
    may_redact_others: bool


async def redact_dead_letters(conn: Connection, redactions: Sequence[LetterRedaction]) -> int:
    """Strip the content of dead letters these redactions name (by their sender, or by
    someone with the power to redact others, in the same room); returns how many."""
    if not redactions:
        return 0
    status = await conn.execute(
        """
        UPDATE bridge_dead_letters d
        SET event = jsonb_set(d.event, '{content}', '{}'::jsonb)
            || jsonb_build_object(
                'unsigned',
                COALESCE(d.event -> 'unsigned', '{}'::jsonb)
                || jsonb_build_object('redacted_because', jsonb_build_object('event_id', r.cause))
            )
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[])
            AS r(target, cause, room_id, sender, others)
        WHERE d.event_id = r.target AND d.room_id = r.room_id
          AND (r.others OR d.event ->> 'sender' = r.sender)
          AND jsonb_typeof(d.event) = 'object'
        """,
        [r.target_event_id for r in redactions],
        [r.redaction_event_id for r in redactions],
        [r.room_id for r in redactions],
        [r.sender for r in redactions],
        [r.may_redact_others for r in redactions],
    )
    return int(status.split()[-1])


async def prune_dead_letters(pool: Pool, retention: timedelta) -> int:
    status = await pool.execute(
        "DELETE FROM bridge_dead_letters WHERE created_at < now() - $1::interval", retention
    )
    return int(status.split()[-1])
