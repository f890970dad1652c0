"""agent_blueprints and agents, as the config declares them."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from asyncpg import Connection

from ..config.roster import AgentSpec, BlueprintSpec


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


@dataclass(frozen=True, slots=True)
class Declared:
    """An agent as the config declares it, with the row ids it refers to."""

    spec: AgentSpec
    blueprint_id: UUID
    microdao_id: UUID | None
    owner_user_id: UUID | None


async def upsert_many(conn: Connection, declared: Sequence[Declared]) -> None:
    """The agents as declared, by platform id, in one statement however many."""
    if not declared:
        return
    await conn.execute(
        "INSERT INTO agents (external_id, name, kind, microdao_id, owner_user_id, matrix_id, "
        "blueprint_id) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], "
        "$5::uuid[], $6::text[], $7::uuid[]) ON CONFLICT (external_id) DO UPDATE SET "
        "name = EXCLUDED.name, kind = EXCLUDED.kind, microdao_id = EXCLUDED.microdao_id, "
        "owner_user_id = EXCLUDED.owner_user_id, matrix_id = EXCLUDED.matrix_id, "
        "blueprint_id = EXCLUDED.blueprint_id "
        # An unchanged agent is not rewritten: a restart with the same config writes nothing.
        "WHERE (agents.name, agents.kind, agents.microdao_id, agents.owner_user_id, "
        "agents.matrix_id, agents.blueprint_id) IS DISTINCT FROM (EXCLUDED.name, "
        "EXCLUDED.kind, EXCLUDED.microdao_id, EXCLUDED.owner_user_id, EXCLUDED.matrix_id, "
        "EXCLUDED.blueprint_id)",
        [d.spec.external_id for d in declared],
        [d.spec.name for d in declared],
        [d.spec.kind for d in declared],
        [d.microdao_id for d in declared],
        [d.owner_user_id for d in declared],
        [d.spec.matrix_id for d in declared],
        [d.blueprint_id for d in declared],
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


async def by_external_ids(conn: Connection, external_ids: Collection[str]) -> dict[str, Agent]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM agents WHERE external_id = ANY($1::text[])", list(external_ids)
    )
    return {r["external_id"]: _agent(r) for r in rows}


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
