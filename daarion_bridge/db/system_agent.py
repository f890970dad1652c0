"""The bridge's bot as the `system` agent (ids.SYSTEM_AGENT_ID): its row, and the rows
that still show it as a person.

The bot's answers are agent messages and its membership an agent's, so it is never
counted as a person (the direct-room rule, the platform's member lists). It has no
sessions: nothing invokes it. Before this, the bot was indexed as a person; `ensure`
turns those rows into the agent's at every start (cheap once done: indexed, nothing
left to move). The bot's `users` row stays only where the schema needs a person: the
owner of the undeclared default microDAO (microdaos.owner_user_id is not null).
"""

from __future__ import annotations

from uuid import UUID

from asyncpg import Connection

from ..ids import SYSTEM_AGENT_ID, SYSTEM_BLUEPRINT

_BLUEPRINT = """
WITH made AS (
    INSERT INTO agent_blueprints (code, description, model) VALUES ($1, $2, 'none')
    ON CONFLICT (code) DO NOTHING RETURNING id
)
SELECT id FROM made UNION ALL SELECT id FROM agent_blueprints WHERE code = $1
"""
_AGENT = """
INSERT INTO agents (external_id, name, kind, matrix_id, blueprint_id)
VALUES ($1, $2, 'system', $3, $4)
ON CONFLICT (external_id) DO UPDATE SET name = EXCLUDED.name, matrix_id = EXCLUDED.matrix_id,
    kind = 'system'
RETURNING id
"""
# The bot's person rows become the agent's: its messages, then its memberships (the
# agent's own row wins where both exist).
_ADOPT = """
WITH bot AS (SELECT id FROM users WHERE matrix_id = $1),
moved_messages AS (
    UPDATE messages SET sender_user_id = NULL, sender_agent_id = $2, sender_type = 'agent'
    WHERE sender_user_id IN (SELECT id FROM bot)
    RETURNING 1
),
copied AS (
    INSERT INTO channel_members (channel_id, member_agent_id, role, joined_at, left_at)
    SELECT channel_id, $2, 'agent', joined_at, left_at FROM channel_members
    WHERE member_user_id IN (SELECT id FROM bot)
    ON CONFLICT DO NOTHING
    RETURNING 1
),
dropped AS (
    DELETE FROM channel_members WHERE member_user_id IN (SELECT id FROM bot) RETURNING 1
)
SELECT (SELECT count(*) FROM moved_messages), (SELECT count(*) FROM dropped)
"""


async def ensure(conn: Connection, bot_mxid: str, name: str) -> tuple[UUID, int, int]:
    """The system agent's row id, made or brought up to date, and how many messages and
    memberships of the bot as a person became the agent's."""
    description = "The bridge's own bot: its answers to commands and its notices"
    blueprint_id = await conn.fetchval(_BLUEPRINT, SYSTEM_BLUEPRINT, description)
    agent_id: UUID = await conn.fetchval(_AGENT, SYSTEM_AGENT_ID, name, bot_mxid, blueprint_id)
    messages, memberships = await conn.fetchrow(_ADOPT, bot_mxid, agent_id)
    return agent_id, messages, memberships
