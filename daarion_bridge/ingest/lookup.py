"""What a transaction's operations refer to, read in one round trip: the channels of its
rooms (with power levels where needed) and the agents in them, and who its Matrix users
are, with the platform ids the outbox events carry. The transaction's claim on its id
(bookkeeping.py) rides in the same statement."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from asyncpg import Connection, Record

from ..db.bookkeeping import CLAIM_CTES, Claim, claim_of
from ..db.channels import Channel
from ..db.outbox import AGENT, HUMAN
from ..db.rooms import RoomPower, power_of
from ..db.users import find_sql

CLAIM, CHANNEL, AGENT_ROW, PERSON_ROW, CHANNEL_AGENT = -1, 0, 1, 2, 3

# One row per channel ($1), per agent and per person ($3), and per agent in one of the
# channels; a room's power levels only where its events need them ($2). Shared columns:
# kind, Matrix id (an agent's in a channel's agent row), row id, platform id. A channel's
# agent row has the room id in the slug's column.
_KNOWN = f"""
SELECT {CHANNEL} AS kind, c.matrix_room_id AS key, c.id, d.external_id, c.microdao_id,
       c.slug, c.matrix_room_id = ANY($2::text[]) AS wanted, r.creators, r.power_levels
FROM channels c JOIN microdaos d ON d.id = c.microdao_id
LEFT JOIN bridge_rooms r ON r.room_id = c.matrix_room_id AND r.room_id = ANY($2::text[])
WHERE c.matrix_room_id = ANY($1::text[])
UNION ALL
SELECT {AGENT_ROW}, matrix_id, id, external_id, NULL, NULL, NULL, NULL, NULL
FROM agents WHERE matrix_id = ANY($3::text[])
UNION ALL
SELECT {PERSON_ROW}, matrix_id, id, external_id, NULL, NULL, NULL, NULL, NULL
FROM ({find_sql(3)}) AS people
UNION ALL
SELECT {CHANNEL_AGENT}, a.matrix_id, a.id, a.external_id, NULL, c.matrix_room_id, NULL, NULL,
       NULL
FROM channels c
JOIN channel_members m ON m.channel_id = c.id AND m.member_agent_id IS NOT NULL
    AND m.left_at IS NULL
JOIN agents a ON a.id = m.member_agent_id
WHERE c.matrix_room_id = ANY($1::text[])
"""
# The claim's row, if any, has its `inserted` in the `wanted` column.
_CLAIM_AND_KNOWN = f"""
WITH {CLAIM_CTES}
{_KNOWN}
UNION ALL
SELECT {CLAIM}, NULL, NULL, NULL, NULL, NULL, inserted, NULL, NULL FROM claimed
"""


@dataclass
class Known:
    channels: dict[str, Channel] = field(default_factory=dict)  # by room id
    power: dict[str, RoomPower] = field(default_factory=dict)  # by room id, those wanted
    agents: dict[str, UUID] = field(default_factory=dict)  # by Matrix id
    people: dict[str, UUID] = field(default_factory=dict)  # by Matrix id, agents excluded
    # room id -> the Matrix ids of the agents in its channel (rooms without any: absent)
    channel_agents: dict[str, set[str]] = field(default_factory=dict)
    # (HUMAN or AGENT, row id) -> platform id (external_id)
    platform_ids: dict[tuple[str, UUID], str] = field(default_factory=dict)


async def look_up(
    conn: Connection,
    room_ids: Collection[str],
    power_wanted: Collection[str],
    matrix_ids: Collection[str],
) -> Known:
    """The channels of these rooms with the agents in them, the power levels of those in
    `power_wanted`, and the agent or person rows of these Matrix users (people never
    seen have none yet)."""
    rows = await conn.fetch(_KNOWN, list(room_ids), list(power_wanted), list(matrix_ids))
    return _known(rows)[1]


async def claim_and_look_up(
    conn: Connection,
    txn_id: str,
    digest: str,
    event_count: int,
    room_ids: Collection[str],
    power_wanted: Collection[str],
    matrix_ids: Collection[str],
) -> tuple[Claim, Known]:
    """Claim the transaction id (noting `room_ids` as active) and look up what it refers
    to, in one round trip; in bookkeeping.ingest_transaction, so the reads come after the
    lock. On a replay the reads are wasted, but replays are rare."""
    rows = await conn.fetch(
        _CLAIM_AND_KNOWN,
        list(room_ids),
        list(power_wanted),
        list(matrix_ids),
        txn_id,
        digest,
        event_count,
    )
    return _known(rows)


def _known(rows: Sequence[Record]) -> tuple[Claim, Known]:
    known = Known()
    inserted: bool | None = None
    people: dict[str, UUID] = {}
    for kind, key, row_id, platform_id, microdao_id, slug, wanted, creators, levels in rows:
        if kind == CHANNEL:
            known.channels[key] = Channel(row_id, microdao_id, key, platform_id, slug)
            if wanted:
                known.power[key] = power_of(creators, levels)
        elif kind == AGENT_ROW or kind == CHANNEL_AGENT:
            known.agents[key] = row_id
            known.platform_ids[AGENT, row_id] = platform_id
            if kind == CHANNEL_AGENT:
                room_id = slug  # the column this kind of row carries its room in
                known.channel_agents.setdefault(room_id, set()).add(key)
        elif kind == PERSON_ROW:
            people[key] = row_id
            known.platform_ids[HUMAN, row_id] = platform_id
        else:
            inserted = wanted
    known.people = {m: row_id for m, row_id in people.items() if m not in known.agents}
    return claim_of(inserted), known
