"""messages: one row per Matrix message, idempotent by event id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import uuid_utils
from asyncpg import Connection

DELETED = "[deleted]"

# Exactly one of sender_user_id and sender_agent_id is set; sender_type follows it.
# The ids are time-ordered (UUIDv7, made here so any PostgreSQL version will do): each
# insert lands on the primary key's newest page. A random id would touch a random page
# of an index bigger than the buffer cache, and log a full page image for it.
_INSERT_MANY = """
INSERT INTO messages (id, channel_id, matrix_event_id, sender_user_id, sender_agent_id,
                      sender_type, content_preview, created_at)
SELECT id, channel_id, event_id, sender_user_id, sender_agent_id,
       CASE WHEN sender_agent_id IS NULL THEN 'human' ELSE 'agent' END, preview, created_at
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::uuid[], $6::text[],
            $7::timestamptz[])
    AS m(id, channel_id, event_id, sender_user_id, sender_agent_id, preview, created_at)
ON CONFLICT (matrix_event_id) DO NOTHING
RETURNING matrix_event_id, id
"""
# The state row makes edits and redactions order-independent: only a newer edit wins,
# and a redaction is final. One statement per edit or redaction, each a pair of
# primary-key lookups; all of a transaction's go in one pipelined round trip.
# An edit counts only from the original's sender and in the original's room; a
# redaction only in its room, from the sender or someone with the power to redact ($6).
# The same sender is the same Matrix user ($m): a person can have two rows (one made by
# the bridge, one linked by the platform), and the message may carry the other one.
_SAME_SENDER = """(
    (sender_user_id IS NOT DISTINCT FROM ${u} AND sender_agent_id IS NOT DISTINCT FROM ${a})
    OR COALESCE((SELECT matrix_id FROM agents WHERE id = sender_agent_id),
                (SELECT matrix_id FROM users WHERE id = sender_user_id)) = ${m}::text)"""
# Every edit is kept with its preview (bridge_message_edits), and the first one keeps the
# original's: removing an edit shows the version before it. An edit removed before
# never shows again.
_EDIT = """
WITH mine AS (
    SELECT content_preview FROM messages
    WHERE matrix_event_id = $1 AND channel_id = $5 AND SAME_SENDER
), kept AS (
    INSERT INTO bridge_message_edits (edit_event_id, message_event_id, edit_ts, preview)
    SELECT $3, $1, $2, $4 FROM mine
    ON CONFLICT (edit_event_id) DO NOTHING
), won AS (
    INSERT INTO bridge_message_state AS s
        (matrix_event_id, last_edit_ts, last_edit_event_id, original_preview)
    SELECT $1, $2, $3, content_preview FROM mine
    WHERE NOT EXISTS (
        SELECT 1 FROM bridge_message_edits WHERE edit_event_id = $3 AND preview IS NULL)
    ON CONFLICT (matrix_event_id) DO UPDATE SET
        last_edit_ts = EXCLUDED.last_edit_ts, last_edit_event_id = EXCLUDED.last_edit_event_id,
        original_preview = COALESCE(s.original_preview, EXCLUDED.original_preview)
    WHERE NOT s.redacted
      AND (s.last_edit_ts IS NULL OR (s.last_edit_ts, s.last_edit_event_id)
                                     < (EXCLUDED.last_edit_ts, EXCLUDED.last_edit_event_id))
    RETURNING 1
)
UPDATE messages SET content_preview = $4
WHERE matrix_event_id = $1 AND EXISTS (SELECT 1 FROM won)
RETURNING id, channel_id, sender_user_id, sender_agent_id, matrix_event_id, $3::text AS cause
"""
_REDACT = """
WITH done AS (
    INSERT INTO bridge_message_state AS s (matrix_event_id, redacted)
    SELECT $1, true WHERE EXISTS (
        SELECT 1 FROM messages WHERE matrix_event_id = $1 AND channel_id = $3
        AND ($6 OR (SAME_SENDER)))
    ON CONFLICT (matrix_event_id) DO UPDATE SET redacted = true, original_preview = NULL
    RETURNING 1
), forgotten AS (
    UPDATE bridge_message_edits SET preview = NULL
    WHERE message_event_id = $1 AND preview IS NOT NULL AND EXISTS (SELECT 1 FROM done)
)
UPDATE messages SET content_preview = $2
WHERE matrix_event_id = $1 AND EXISTS (SELECT 1 FROM done)
RETURNING id, channel_id, sender_user_id, sender_agent_id, matrix_event_id, $7::text AS cause
"""
# A redaction of an edit ($1), by its sender or someone with the power to redact ($5):
# the edit is forgotten, and where its message showed it, the message shows the newest
# edit left, or the original. A redaction that names no edit finds no row.
_REMOVE_EDIT = """
WITH target AS (
    SELECT e.message_event_id FROM bridge_message_edits e
    JOIN messages m ON m.matrix_event_id = e.message_event_id
    WHERE e.edit_event_id = $1 AND e.preview IS NOT NULL AND m.channel_id = $2
      AND ($5 OR (SAME_SENDER))
), removed AS (
    UPDATE bridge_message_edits SET preview = NULL
    WHERE edit_event_id = $1 AND EXISTS (SELECT 1 FROM target)
), previous AS (
    SELECT edit_event_id, edit_ts, preview FROM bridge_message_edits
    WHERE message_event_id = (SELECT message_event_id FROM target)
      AND preview IS NOT NULL AND edit_event_id <> $1
    ORDER BY edit_ts DESC, edit_event_id DESC LIMIT 1
), shown AS (
    UPDATE bridge_message_state s
    SET last_edit_ts = p.edit_ts, last_edit_event_id = p.edit_event_id
    FROM (SELECT 1) AS one LEFT JOIN previous p ON true
    WHERE s.matrix_event_id = (SELECT message_event_id FROM target)
      AND s.last_edit_event_id = $1 AND NOT s.redacted
    RETURNING s.matrix_event_id, COALESCE(p.preview, s.original_preview) AS preview
)
UPDATE messages m SET content_preview = shown.preview
FROM shown WHERE m.matrix_event_id = shown.matrix_event_id AND shown.preview IS NOT NULL
RETURNING m.id, m.channel_id, m.sender_user_id, m.sender_agent_id, m.matrix_event_id,
          $6::text AS cause, m.content_preview
"""
# A message decrypted after it was indexed as `[encrypted]` ($1), with its text as the
# index keeps it ($2): shown unless the message was redacted (it stays `[deleted]`) or an
# edit shows (the edit wins; the text is what removing the edits brings back).
_REVEAL = """
WITH state AS (
    SELECT redacted, last_edit_event_id IS NOT NULL AS edited
    FROM bridge_message_state WHERE matrix_event_id = $1
), original AS (
    UPDATE bridge_message_state SET original_preview = $2
    WHERE matrix_event_id = $1 AND NOT redacted AND original_preview IS NOT NULL
), shown AS (
    UPDATE messages SET content_preview = $2
    WHERE matrix_event_id = $1 AND content_preview IS DISTINCT FROM $2
      AND NOT EXISTS (SELECT 1 FROM state WHERE redacted OR edited)
    RETURNING 1
)
SELECT id, channel_id, sender_user_id, sender_agent_id, matrix_event_id,
       matrix_event_id AS cause, EXISTS (SELECT 1 FROM shown),
       COALESCE((SELECT redacted FROM state), false)
FROM messages WHERE matrix_event_id = $1
"""
# An edit decrypted after it was applied as `[encrypted]` ($1, its text $2): the edit
# keeps its text, and the message shows it where that edit is the one shown.
_REVEAL_EDIT = """
WITH kept AS (
    UPDATE bridge_message_edits SET preview = $2
    WHERE edit_event_id = $1 AND preview IS NOT NULL AND preview IS DISTINCT FROM $2
    RETURNING message_event_id
), shown AS (
    SELECT s.matrix_event_id FROM bridge_message_state s JOIN kept k
        ON k.message_event_id = s.matrix_event_id
    WHERE s.last_edit_event_id = $1 AND NOT s.redacted
)
UPDATE messages SET content_preview = $2
WHERE matrix_event_id = (SELECT matrix_event_id FROM shown)
  AND content_preview IS DISTINCT FROM $2
RETURNING id, channel_id, sender_user_id, sender_agent_id, matrix_event_id, $1::text AS cause
"""
_EDIT = _EDIT.replace("SAME_SENDER", _SAME_SENDER.format(u=6, a=7, m=8))
_REDACT = _REDACT.replace("SAME_SENDER", _SAME_SENDER.format(u=4, a=5, m=8))
_REMOVE_EDIT = _REMOVE_EDIT.replace("SAME_SENDER", _SAME_SENDER.format(u=3, a=4, m=7))
# The ERD has no column for it: a bridge table, one row per message in a thread.
_THREAD = """
INSERT INTO bridge_message_threads (matrix_event_id, thread_root) VALUES ($1, $2)
ON CONFLICT (matrix_event_id) DO NOTHING
"""


def new_id() -> uuid_utils.UUID:
    """A message's id: time-ordered (see _INSERT_MANY), and unique like any UUID.

    uuid_utils' own UUID, not the stdlib's: asyncpg encodes either from `.bytes`, and
    making the stdlib's (`uuid_utils.compat`) costs several times more per message.
    The id goes only to the database; the rows read back are asyncpg's UUIDs."""
    return uuid_utils.uuid7()


@dataclass(frozen=True, slots=True)
class Author:
    """Where a message is and who wrote it: an edit or redaction must match."""

    channel_id: UUID
    user_id: UUID | None
    agent_id: UUID | None
    matrix_id: str


@dataclass(frozen=True, slots=True)
class Edit:
    target_event_id: str
    edit_event_id: str
    ts_ms: int
    preview: str
    author: Author


@dataclass(frozen=True, slots=True)
class NewRow:
    channel_id: UUID
    event_id: str
    sender_user_id: UUID | None
    sender_agent_id: UUID | None
    preview: str
    created_at: datetime
    thread_root: str | None = None  # the root event of the thread it is in


@dataclass(frozen=True, slots=True)
class Changed:
    """A row an edit or redaction changed, and the edit or redaction event that did."""

    id: UUID
    channel_id: UUID
    sender_user_id: UUID | None
    sender_agent_id: UUID | None
    event_id: str
    cause: str


async def insert_many(conn: Connection, rows: Sequence[NewRow]) -> dict[str, UUID]:
    """One statement for a run of messages: one round trip instead of one per message.

    Returns event id -> row id of the rows actually inserted (not already there)."""
    if not rows:
        return {}
    inserted = await conn.fetch(
        _INSERT_MANY,
        [new_id() for _ in rows],
        [r.channel_id for r in rows],
        [r.event_id for r in rows],
        [r.sender_user_id for r in rows],
        [r.sender_agent_id for r in rows],
        [r.preview for r in rows],
        [r.created_at for r in rows],
    )
    new = {r[0]: r[1] for r in inserted}
    threads = [(r.event_id, r.thread_root) for r in rows if r.thread_root and r.event_id in new]
    if threads:
        await conn.executemany(_THREAD, threads)
    return new


async def edit_many(conn: Connection, edits: Sequence[Edit]) -> list[Changed]:
    """Show each edit's text on its original row, in order; returns the rows changed."""
    if not edits:
        return []
    args = [
        (
            e.target_event_id,
            e.ts_ms,
            e.edit_event_id,
            e.preview,
            *_author(e.author),
            e.author.matrix_id,
        )
        for e in edits
    ]
    return [Changed(*r) for r in await conn.fetchmany(_EDIT, args)]


@dataclass(frozen=True, slots=True)
class Redaction:
    target_event_id: str
    redaction_event_id: str
    author: Author  # of the redaction
    may_redact_others: bool


async def redact_many(conn: Connection, redactions: Sequence[Redaction]) -> list[Changed]:
    """Set each target row to `[deleted]` for good; returns the rows changed."""
    if not redactions:
        return []
    args = [
        (
            r.target_event_id,
            DELETED,
            *_author(r.author),
            r.may_redact_others,
            r.redaction_event_id,
            r.author.matrix_id,
        )
        for r in redactions
    ]
    return [Changed(*r) for r in await conn.fetchmany(_REDACT, args)]


async def remove_edits(
    conn: Connection, redactions: Sequence[Redaction]
) -> list[tuple[Changed, str]]:
    """Redactions that may name edits rather than messages: each edit named is forgotten.
    Returns the rows whose preview went back to an earlier version, with that preview."""
    if not redactions:
        return []
    args = [
        (
            r.target_event_id,
            *_author(r.author),
            r.may_redact_others,
            r.redaction_event_id,
            r.author.matrix_id,
        )
        for r in redactions
    ]
    return [(Changed(*r[:6]), r[6]) for r in await conn.fetchmany(_REMOVE_EDIT, args)]


@dataclass(frozen=True, slots=True)
class Revealed:
    """A message decrypted late, as its row stands."""

    row: Changed  # its cause: the message's own event id
    shown: bool  # its preview changed to the decrypted one
    redacted: bool  # deleted meanwhile: its text acts on nothing


async def reveal(conn: Connection, texts: Sequence[tuple[str, str]]) -> dict[str, Revealed]:
    """Messages (event id, preview) decrypted after they were indexed as `[encrypted]`:
    each shows its preview unless redacted or edited (see _REVEAL). By event id, those
    indexed."""
    if not texts:
        return {}
    rows = await conn.fetchmany(_REVEAL, list(texts))
    return {r[4]: Revealed(Changed(*r[:6]), r[6], r[7]) for r in rows}


async def reveal_edits(conn: Connection, texts: Sequence[tuple[str, str]]) -> list[Changed]:
    """Edits (event id, preview) decrypted after they were applied as `[encrypted]`;
    returns the rows whose preview changed (the edit is the one they show)."""
    if not texts:
        return []
    return [Changed(*r) for r in await conn.fetchmany(_REVEAL_EDIT, list(texts))]


async def row_id(conn: Connection, event_id: str) -> UUID | None:
    return await conn.fetchval("SELECT id FROM messages WHERE matrix_event_id = $1", event_id)


async def thread_roots(conn: Connection, event_ids: Sequence[str]) -> dict[str, str]:
    """The thread root of each of these messages that is in a thread."""
    rows = await conn.fetch(
        "SELECT matrix_event_id, thread_root FROM bridge_message_threads "
        "WHERE matrix_event_id = ANY($1::text[])",
        list(event_ids),
    )
    return {r[0]: r[1] for r in rows}


def _author(author: Author) -> tuple[UUID, UUID | None, UUID | None]:
    return author.channel_id, author.user_id, author.agent_id


@dataclass(frozen=True, slots=True)
class Listed:
    """A message as the admin API lists it."""

    id: UUID
    matrix_event_id: str
    sender_type: str
    sender_id: str | None  # platform id (users.external_id / agents.external_id)
    sender_matrix_id: str | None
    content_preview: str
    created_at: datetime | None  # NULL only if written by someone else than the bridge


# Newest first, keyed by (created_at, id) so equal times page without gaps or repeats.
# `created_at <= $2` is the bound the (channel_id, created_at) index scans backwards
# from; the id only breaks ties among rows of that one instant.
_PAGE = """
SELECT m.id, m.matrix_event_id, m.sender_type, COALESCE(a.external_id, u.external_id),
       COALESCE(a.matrix_id, u.matrix_id), m.content_preview, m.created_at
FROM messages m
LEFT JOIN users u ON u.id = m.sender_user_id
LEFT JOIN agents a ON a.id = m.sender_agent_id
WHERE m.channel_id = $1 {after}
ORDER BY m.created_at DESC, m.id DESC
LIMIT {limit}
"""
_FIRST_PAGE = _PAGE.format(after="", limit="$2")
_NEXT_PAGE = _PAGE.format(
    after="AND m.created_at <= $2 AND (m.created_at < $2 OR m.id < $3)", limit="$4"
)


async def page(
    conn: Connection, channel_id: UUID, limit: int, before: tuple[datetime, UUID] | None
) -> list[Listed]:
    """Up to `limit` messages of the channel older than `before` (all, with None)."""
    if before is None:
        rows = await conn.fetch(_FIRST_PAGE, channel_id, limit)
    else:
        rows = await conn.fetch(_NEXT_PAGE, channel_id, before[0], before[1], limit)
    return [Listed(*r) for r in rows]


@dataclass(frozen=True, slots=True)
class Indexed:
    """A message's row as a runtime's context shows it."""

    id: UUID
    matrix_event_id: str
    sender_type: str
    sender_id: str | None  # platform id (users.external_id / agents.external_id)


_INDEXED = """
SELECT m.id, m.matrix_event_id, m.sender_type, COALESCE(a.external_id, u.external_id)
FROM messages m
LEFT JOIN users u ON u.id = m.sender_user_id
LEFT JOIN agents a ON a.id = m.sender_agent_id
WHERE m.channel_id = $1 AND {where}
"""
_BY_EVENTS = _INDEXED.format(where="m.matrix_event_id = ANY($2::text[])")
_BY_ID = _INDEXED.format(where="m.id = $2")


async def indexed(
    conn: Connection, channel_id: UUID, event_ids: Sequence[str]
) -> dict[str, Indexed]:
    """The rows of these events in the channel, by event id (those indexed)."""
    rows = await conn.fetch(_BY_EVENTS, channel_id, list(event_ids))
    return {r[1]: Indexed(*r) for r in rows}


async def find(conn: Connection, channel_id: UUID, ref: str) -> Indexed | None:
    """A message of the channel by its row uuid or Matrix event id."""
    try:
        row_id = UUID(ref)
    except ValueError:
        return (await indexed(conn, channel_id, [ref])).get(ref)
    row = await conn.fetchrow(_BY_ID, channel_id, row_id)
    return Indexed(*row) if row else None
