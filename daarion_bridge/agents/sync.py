"""Apply the config's microDAOs, blueprints and agents to Postgres and the homeserver.

Runs at start and on SIGHUP. The database side is one transaction: upserts by external
id or code. An agent dropped from the config keeps its row (history points at it), its
sessions close, and its puppet leaves its rooms. A microDAO membership the config gave
and no longer lists is taken back (db/microdaos.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from asyncpg import Connection, Pool
from mautrix.errors import MatrixRequestError
from mautrix.types import RoomID

from ..config.roster import Roster
from ..db import agents, bookkeeping, members, microdaos, sessions, spaces, system_agent, users
from ..ids import SYSTEM_AGENT_ID
from ..matrix.bot import Bot
from ..matrix.puppets import Puppets
from ..translate.agents import LiveDirectory

log = logging.getLogger("daarion.roster")

REMOVED_REASON = "This agent was removed from the bridge"


@dataclass
class SyncReport:
    microdaos: int = 0
    blueprints: int = 0
    agents: int = 0
    removed: list[str] = field(default_factory=list)
    sessions_closed: int = 0
    # microDAO memberships the config gave and no longer lists, taken back.
    roles_revoked: int = 0
    # Puppets of agents the config dropped, with the rooms each must still leave.
    leaving: list[tuple[str, list[str]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def apply_roster(
    pool: Pool, roster: Roster, bot: Bot, puppets: Puppets, directory: LiveDirectory
) -> SyncReport:
    """Write the roster, put it in force for ingest, then bring the homeserver in line.

    A homeserver error leaves the database written and the roster in force; the next
    reload (or start) retries the homeserver side, which is idempotent. The puppets of
    dropped agents leave their rooms afterwards, in `retire_puppets` (report.leaving),
    so that many of them never hold up a start."""
    report = SyncReport()
    space_ids = await _resolve_spaces(roster, bot, report)
    async with pool.acquire() as conn, conn.transaction():
        report.leaving = await write_roster(conn, roster, space_ids, report)
    directory.replace(roster)
    report.microdaos = len(roster.microdaos)
    report.blueprints = len(roster.blueprints)
    report.agents = len(roster.agents)

    await puppets.ensure_profiles(roster.agents)
    for space_id in space_ids.values():
        await _join_space(bot, space_id, report)
    log.info(
        "Config applied: %d microDAO(s), %d blueprint(s), %d agent(s); "
        "%d removed agent(s) to leave their rooms, %d session(s) closed, "
        "%d microDAO membership(s) the config no longer lists taken back",
        report.microdaos,
        report.blueprints,
        report.agents,
        len(report.removed),
        report.sessions_closed,
        report.roles_revoked,
    )
    for problem in report.problems:
        log.warning(problem)
    return report


async def write_roster(
    conn: Connection,
    roster: Roster,
    space_ids: Mapping[str, str],
    report: SyncReport,
) -> list[tuple[str, list[str]]]:
    """The database side, inside the caller's transaction. Returns the puppets of removed
    agents with the rooms each must leave."""
    await bookkeeping.lock_ingest(conn)  # sessions change only under the ingest lock
    people = await users.ensure_users(conn, _people(roster))
    # Set-based throughout: ingest waits while this runs, so a config of a thousand agents
    # costs a handful of statements, not a few per entry.
    microdao_ids, report.roles_revoked = await microdaos.upsert_many(
        conn,
        [
            microdaos.Declared(
                m.external_id,
                m.name,
                people[m.owner],
                {people[mxid]: role for mxid, role in m.members.items() if mxid != m.owner},
            )
            for m in roster.microdaos
        ],
    )
    for m in roster.microdaos:
        if m.external_id in space_ids:
            await spaces.link(conn, space_ids[m.external_id], microdao_ids[m.external_id])
    blueprint_ids = await agents.upsert_blueprints(conn, roster.blueprints)
    leaving = []
    before = await agents.by_external_ids(conn, [a.external_id for a in roster.agents])
    for a in roster.agents:
        old = before.get(a.external_id)
        if old is not None and old.matrix_id != a.matrix_id:
            # A new localpart is a new Matrix user: the old one leaves, and the index says
            # so now, since its leave events will no longer be recognised as the agent's.
            leaving += await _retire_puppet(conn, old, report)
    await agents.upsert_many(
        conn,
        [
            agents.Declared(
                a,
                blueprint_ids[a.blueprint],
                microdao_ids[a.microdao] if a.microdao else None,
                people[a.owner] if a.owner else None,
            )
            for a in roster.agents
        ],
    )
    # Set-based: a database with many agents the config does not declare (removed long
    # ago, or made elsewhere) costs two statements at each start, not two per agent.
    kept = [a.external_id for a in roster.agents] + [SYSTEM_AGENT_ID]  # the bot stays
    gone = await agents.not_in(conn, kept)
    if gone:
        report.sessions_closed += await sessions.close_all(conn, [g.id for g in gone])
        rooms = await members.rooms_of_agents(conn, [g.id for g in gone])
        for agent in gone:
            if rooms.get(agent.id):
                report.removed.append(agent.external_id)
                leaving.append((agent.matrix_id, rooms[agent.id]))
    return leaving


async def make_bot_the_system_agent(pool: Pool, matrix_id: str, name: str) -> None:
    """The bot's row as the system agent, before any transaction is taken in: what the
    bot says is an agent's from the first event on."""
    async with pool.acquire() as conn, conn.transaction():
        await bookkeeping.lock_ingest(conn)
        _, messages, memberships = await system_agent.ensure(conn, matrix_id, name)
    if messages or memberships:
        log.info(
            "The bot is now the system agent %s: %d of its messages and %d of its "
            "memberships moved from its person row",
            SYSTEM_AGENT_ID, messages, memberships,
        )  # fmt: skip


async def _retire_puppet(
    conn: Connection, agent: agents.Agent, report: SyncReport
) -> list[tuple[str, list[str]]]:
    report.sessions_closed += await sessions.close(conn, agent.id)
    rooms = (await members.rooms_of_agents(conn, [agent.id])).get(agent.id, [])
    await members.leave_all(conn, agent.id)
    return [(agent.matrix_id, rooms)] if rooms else []


async def retire_puppets(pool: Pool, puppets: Puppets, leaving: list[tuple[str, list[str]]]) -> int:
    """Dropped agents' puppets leave their rooms; returns how many rooms were left. A room
    the homeserver says the puppet is not in is marked left in the index at once, so it
    is not tried again at every start."""
    left = 0
    for matrix_id, rooms in leaving:
        gone, absent = await puppets.leave_rooms(matrix_id, rooms, REMOVED_REASON)
        left += gone
        if absent:
            async with pool.acquire() as conn, conn.transaction():
                await bookkeeping.lock_ingest(conn)
                await members.mark_agent_gone(conn, matrix_id, absent)
    if leaving:
        log.info("Removed agents left %d room(s)", left)
    return left


def _people(roster: Roster) -> list[str]:
    found = [m.owner for m in roster.microdaos]
    found += [mxid for m in roster.microdaos for mxid in m.members]
    found += [a.owner for a in roster.agents if a.owner]
    return list(dict.fromkeys(found))


async def _resolve_spaces(roster: Roster, bot: Bot, report: SyncReport) -> dict[str, str]:
    """microDAO external id -> space room id, for the microDAOs that name a space."""
    found = {}
    for m in roster.microdaos:
        if m.space is None:
            continue
        if m.space.startswith("!"):
            found[m.external_id] = m.space
            continue
        try:
            found[m.external_id] = await bot.resolve_alias(m.space)
        except MatrixRequestError as e:
            report.problems.append(
                f"microdaos ({m.external_id}): space {m.space} not resolved ({e.errcode}); "
                "rooms in it are not mapped until it exists and the config is reloaded"
            )
    return found


async def _join_space(bot: Bot, space_id: str, report: SyncReport) -> None:
    """The bot reads a space's children only as a member; public spaces it joins itself."""
    try:
        await bot.intent.join_room(RoomID(space_id))
    except MatrixRequestError as e:
        report.problems.append(
            f"space {space_id}: the bot cannot join it ({e.errcode}); rooms are mapped by "
            "their m.space.parent only. Invite the bot into the space to map by its children"
        )
