"""agent_blueprints and agents, as the config declares them."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from asyncpg import Connection

from ..roster import AgentSpec, BlueprintSpec


@dataclass(frozen=True, slots=True)
class Agent:
    id: UUID
    external_id: str
    matrix_id: str
    microdao_id: UUID | None
    owner_user_id: UUID | None


async def upsert_blueprints(
    conn: Connection, blueprints: Sequence[BlueprintSpec]
) -> dict[str, UUID]:
    """Row ids by code."""
    ids = {}
    for b in blueprints:
        ids[b.code] = await conn.fetchval(
            "INSERT INTO agent_blueprints (code, description, model, capabilities) "
            "VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (code) DO UPDATE SET "
            "description = EXCLUDED.description, model = EXCLUDED.model, "
            "capabilities = EXCLUDED.capabilities RETURNING id",
            b.code,
            b.description,
            b.model,
            None if b.capabilities is None else json.dumps(b.capabilities),
        )
    return ids


async def upsert(
    conn: Connection,
    agent: AgentSpec,
    blueprint_id: UUID,
    microdao_id: UUID | None,
    owner_user_id: UUID | None,
) -> UUID:
    return await conn.fetchval(
        "INSERT INTO agents (external_id, name, kind, microdao_id, owner_user_id, matrix_id, "
        "blueprint_id) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (external_id) DO UPDATE "
        "SET name = EXCLUDED.name, kind = EXCLUDED.kind, microdao_id = EXCLUDED.microdao_id, "
        "owner_user_id = EXCLUDED.owner_user_id, matrix_id = EXCLUDED.matrix_id, "
        "blueprint_id = EXCLUDED.blueprint_id RETURNING id",
        agent.external_id,
        agent.name,
        agent.kind,
        microdao_id,
        owner_user_id,
        agent.matrix_id,
        blueprint_id,
    )


def _agent(row: Mapping) -> Agent:
    return Agent(
        row["id"], row["external_id"], row["matrix_id"], row["microdao_id"], row["owner_user_id"]
    )


_COLUMNS = "id, external_id, matrix_id, microdao_id, owner_user_id"


async def by_matrix_ids(conn: Connection, matrix_ids: Collection[str]) -> dict[str, UUID]:
    """Agent row ids of those of these Matrix users that are agents (current or removed)."""
    if not matrix_ids:
        return {}
    rows = await conn.fetch(
        "SELECT matrix_id, id FROM agents WHERE matrix_id = ANY($1::text[])", list(matrix_ids)
    )
    return {r["matrix_id"]: r["id"] for r in rows}


async def by_external_id(conn: Connection, external_id: str) -> Agent | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM agents WHERE external_id = $1", external_id)
    return _agent(row) if row else None


async def not_in(conn: Connection, external_ids: Collection[str]) -> list[Agent]:
    """Agents in the database that the config no longer declares."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM agents WHERE NOT (external_id = ANY($1::text[]))",
        list(external_ids),
    )
    return [_agent(r) for r in rows]


async def by_ref(conn: Connection, ref: str) -> Agent | None:
    """An agent by platform id (`agent:sofia`) or row uuid."""
    try:
        row_id = UUID(ref)
    except ValueError:
        return await by_external_id(conn, ref)
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM agents WHERE id = $1", row_id)
    return _agent(row) if row else None


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """An agent as the admin API lists it."""

    id: UUID
    external_id: str
    name: str
    kind: str
    matrix_id: str | None
    blueprint: str
    microdao: str | None  # platform id
    owner: str | None  # the owner's Matrix id
    created_at: datetime | None


async def listing(conn: Connection) -> list[AgentInfo]:
    rows = await conn.fetch(
        "SELECT a.id, a.external_id, a.name, a.kind, a.matrix_id, b.code, d.external_id, "
        "u.matrix_id, a.created_at FROM agents a "
        "JOIN agent_blueprints b ON b.id = a.blueprint_id "
        "LEFT JOIN microdaos d ON d.id = a.microdao_id "
        "LEFT JOIN users u ON u.id = a.owner_user_id ORDER BY a.external_id"
    )
    return [AgentInfo(*r) for r in rows]
