"""agent_sessions: whether an agent is active, idle or gone in a channel.

At most one session per agent and channel is not closed. Every writer of sessions runs
under the ingest lock (bookkeeping.lock_ingest), so check-then-insert cannot race. The
bridge's bot, the system agent, never has one: nothing invokes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from asyncpg import Connection, Pool

from ..ids import SYSTEM_AGENT_ID

# The agents that never have a session: the system agent.
_NO_SESSIONS = f"ARRAY(SELECT id FROM agents WHERE external_id = '{SYSTEM_AGENT_ID}')"

# One activity per (agent, channel): the open session moves on, or a new one opens. Only
# while the agent is in the channel: a late message from before a leave opens nothing.
_ACTIVITY = f"""
WITH a AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) AS a(agent_id, channel_id, at)
    WHERE EXISTS (
        SELECT 1 FROM channel_members m
        WHERE m.channel_id = a.channel_id AND m.member_agent_id = a.agent_id
          AND m.left_at IS NULL)
    AND a.agent_id <> ALL({_NO_SESSIONS})
), moved AS (
    UPDATE agent_sessions s SET status = 'active',
        last_activity_at = GREATEST(s.last_activity_at, a.at)
    FROM a WHERE s.agent_id = a.agent_id AND s.channel_id = a.channel_id
      AND s.status <> 'closed'
    RETURNING s.agent_id, s.channel_id
)
INSERT INTO agent_sessions (agent_id, channel_id, started_at, last_activity_at, status)
SELECT a.agent_id, a.channel_id, a.at, a.at, 'active' FROM a
WHERE NOT EXISTS (
    SELECT 1 FROM moved WHERE moved.agent_id = a.agent_id AND moved.channel_id = a.channel_id)
"""


async def open_on_join(conn: Connection, agent_id: UUID, channel_id: UUID, at: datetime) -> None:
    """A join opens a session unless one is open already (a profile change is a join too)."""
    await conn.execute(
        "INSERT INTO agent_sessions (agent_id, channel_id, started_at, last_activity_at, status) "
        "SELECT $1, $2, $3, $3, 'active' WHERE NOT EXISTS (SELECT 1 FROM agent_sessions "
        f"WHERE agent_id = $1 AND channel_id = $2 AND status <> 'closed') "
        f"AND $1 <> ALL({_NO_SESSIONS})",
        agent_id,
        channel_id,
        at,
    )


async def close(conn: Connection, agent_id: UUID, channel_id: UUID | None = None) -> int:
    """Close the agent's open sessions, in one channel or in all."""
    status = await conn.execute(
        "UPDATE agent_sessions SET status = 'closed' WHERE agent_id = $1 "
        "AND ($2::uuid IS NULL OR channel_id = $2) AND status <> 'closed'",
        agent_id,
        channel_id,
    )
    return int(status.split()[-1])


async def close_in_channel(conn: Connection, channel_id: UUID) -> int:
    """Close every open session in the channel (its room is closed for good)."""
    status = await conn.execute(
        "UPDATE agent_sessions SET status = 'closed' WHERE channel_id = $1 AND status <> 'closed'",
        channel_id,
    )
    return int(status.split()[-1])


async def close_all(conn: Connection, agent_ids: Sequence[UUID]) -> int:
    """Close every open session of these agents."""
    status = await conn.execute(
        "UPDATE agent_sessions SET status = 'closed' "
        "WHERE agent_id = ANY($1::uuid[]) AND status <> 'closed'",
        list(agent_ids),
    )
    return int(status.split()[-1])


async def record_activity(conn: Connection, activity: Mapping[tuple[UUID, UUID], datetime]) -> None:
    """(agent, channel) -> when: the agent's own message, or a mention of it."""
    if activity:
        keys = list(activity)
        await conn.execute(
            _ACTIVITY,
            [agent for agent, _ in keys],
            [channel for _, channel in keys],
            [activity[k] for k in keys],
        )


async def mark_idle(conn: Connection | Pool, idle_after_seconds: float) -> int:
    """Active sessions without activity for the given time become idle."""
    status = await conn.execute(
        "UPDATE agent_sessions SET status = 'idle' WHERE status = 'active' "
        "AND COALESCE(last_activity_at, started_at) < now() - make_interval(secs => $1)",
        float(idle_after_seconds),
    )
    return int(status.split()[-1])


async def agents_here(
    conn: Connection | Pool, channel_id: UUID, external_ids: Sequence[str]
) -> dict[str, tuple[bool, str | None]]:
    """Agent platform id -> (in the channel now, status of its session there that is not
    closed, or None), for these agents (`!daarion agents`)."""
    rows = await conn.fetch(
        "SELECT a.external_id, m.channel_id IS NOT NULL AS present, s.status FROM agents a "
        "LEFT JOIN channel_members m ON m.member_agent_id = a.id AND m.channel_id = $1 "
        "AND m.left_at IS NULL "
        "LEFT JOIN agent_sessions s ON s.agent_id = a.id AND s.channel_id = $1 "
        "AND s.status <> 'closed' "
        "WHERE a.external_id = ANY($2::text[])",
        channel_id,
        list(external_ids),
    )
    return {r["external_id"]: (r["present"], r["status"]) for r in rows}


@dataclass(frozen=True, slots=True)
class OpenSession:
    id: UUID
    agent_id: UUID
    channel_id: UUID
    matrix_room_id: str
    status: str  # active | idle
    started_at: datetime | None
    last_activity_at: datetime | None


async def open_sessions(conn: Connection | Pool) -> list[OpenSession]:
    """Every session not closed (the status index), oldest first."""
    rows = await conn.fetch(
        "SELECT s.id, s.agent_id, s.channel_id, c.matrix_room_id, s.status, s.started_at, "
        "s.last_activity_at FROM agent_sessions s JOIN channels c ON c.id = s.channel_id "
        "WHERE s.status IN ('active', 'idle') ORDER BY s.started_at, s.id"
    )
    return [OpenSession(*r) for r in rows]
