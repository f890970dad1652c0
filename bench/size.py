"""``--mode size``: fill the index to production size with COPY, then time the platform's
read queries (and, from ingest.py, the bridge's ingest at that size).

The fill (defaults: 10 M messages in 10,000 channels, 100,000 users):

* users (70 % platform-linked external ids), microDAOs (one with 1,000 channels, the rest
  of ~10 channels), microdao_members (owner + ~20), 5 agent blueprints, agents (default
  1,000) with ~100 sessions each (80 % closed, 15 % idle, 5 % active), channels,
  bridge_rooms, channel_members (each user in ~5 channels, Zipf-weighted so a few channels
  are huge; 10 % have left; ~3 agent members per agent), messages (Zipf over channels,
  created_at increasing over a year, time-ordered ids as the bridge makes them (UUIDv7,
  here at created_at), 3 % from agents, previews made by the bridge's own
  render_preview from the ingest workload's texts), bridge_message_state (8 % of messages
  edited or redacted), bridge_transactions (the week of ids the bridge keeps: a week's
  share of the messages, 5 per transaction, processed in the last 7 days).
* Fast: rows are generated in Python in chunks and streamed with COPY
  (``copy_records_to_table``); before that every foreign key of the filled tables and every
  index of ``messages`` is dropped, and afterwards recreated from the definitions read from
  the catalog (same names, same definitions: checked), with ``maintenance_work_mem`` 1 GB.
  Recreating the foreign keys validates the generated data. Then ``VACUUM (ANALYZE)``.
"""

from __future__ import annotations

import base64
import bisect
import itertools
import math
import os
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from uuid_utils.compat import uuid7

from daarion_bridge.translate.preview import render_preview

from .driver import percentile
from .harness import say
from .workload import Workload

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FILL_END_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: the filled history ends here
YEAR_MS = 365 * 86_400_000
CHUNK = 50_000
RETENTION_DAYS = 7

FILLED = (
    "users",
    "microdaos",
    "microdao_members",
    "agent_blueprints",
    "agents",
    "bridge_puppets",
    "channels",
    "bridge_rooms",
    "channel_members",
    "agent_sessions",
    "messages",
    "bridge_message_state",
    "bridge_transactions",
)


@dataclass
class FillSpec:
    messages: int = 10_000_000
    channels: int = 10_000
    users: int = 100_000
    agents: int = 1_000
    sessions_per_agent: int = 100
    memberships_per_user: float = 5.0
    big_microdao_channels: int = 1_000
    microdao_size: int = 10
    seed: int = 1


@dataclass
class Filled:
    """What the queries need to pick realistic parameters."""

    channel_ids: list[Any] = field(default_factory=list)
    channel_cum: list[float] = field(default_factory=list)
    user_ids: list[Any] = field(default_factory=list)
    agent_ids: list[Any] = field(default_factory=list)
    big_microdao: Any = None
    roster: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # config sections
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _ts(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


async def schema_snapshot(conn: asyncpg.Connection) -> list[tuple[str, ...]]:
    rows = await conn.fetch(
        """
        SELECT 'index', tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public'
        UNION ALL
        SELECT 'constraint', conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        ORDER BY 1, 2, 3
        """
    )
    return [tuple(r.values()) for r in rows]


async def _drop_for_fill(conn: asyncpg.Connection) -> list[str]:
    """Drop what slows COPY down; returns the statements that put it back, in order."""
    tables = list(FILLED)
    fks = await conn.fetch(
        "SELECT conrelid::regclass::text AS tab, conname, pg_get_constraintdef(oid) AS def "
        "FROM pg_constraint WHERE contype = 'f' AND (conrelid::regclass::text = ANY($1) "
        "OR confrelid::regclass::text = ANY($1)) ORDER BY conname",
        tables,
    )
    keys = await conn.fetch(
        "SELECT conname, pg_get_constraintdef(oid) AS def, conindid FROM pg_constraint "
        "WHERE conrelid = 'messages'::regclass AND contype IN ('p', 'u') ORDER BY contype, conname"
    )
    indexes = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'messages' "
        "AND indexname NOT IN (SELECT conname FROM pg_constraint "
        "WHERE conrelid = 'messages'::regclass) ORDER BY indexname"
    )
    for fk in fks:
        await conn.execute(f'ALTER TABLE {fk["tab"]} DROP CONSTRAINT "{fk["conname"]}"')
    for key in keys:
        await conn.execute(f'ALTER TABLE messages DROP CONSTRAINT "{key["conname"]}"')
    for ix in indexes:
        await conn.execute(f'DROP INDEX "{ix["indexname"]}"')
    restore = [f'ALTER TABLE messages ADD CONSTRAINT "{k["conname"]}" {k["def"]}' for k in keys]
    restore += [ix["indexdef"] for ix in indexes]
    restore += [
        f'ALTER TABLE {fk["tab"]} ADD CONSTRAINT "{fk["conname"]}" {fk["def"]}' for fk in fks
    ]
    return restore


def _zipf_cum(n: int, s: float, rng: random.Random) -> list[float]:
    weights = [1 / (i + 1) ** s for i in range(n)]
    rng.shuffle(weights)
    return list(itertools.accumulate(weights))


async def fill(conn: asyncpg.Connection, spec: FillSpec, previews: list[str]) -> Filled:
    rng = random.Random(spec.seed)
    out = Filled()
    copy = conn.copy_records_to_table
    before = await schema_snapshot(conn)
    await conn.execute("SET maintenance_work_mem = '1GB'")
    t0 = time.perf_counter()
    restore = await _drop_for_fill(conn)

    def uuids(n: int) -> list[uuid.UUID]:
        raw = os.urandom(16 * n)
        return [uuid.UUID(bytes=raw[i : i + 16], version=4) for i in range(0, 16 * n, 16)]

    start_ms = FILL_END_MS - YEAR_MS

    async def put(table: str, columns: list[str], records: Any, count: int) -> None:
        t = time.perf_counter()
        await copy(table, records=records, columns=columns)
        out.rows[table] = out.rows.get(table, 0) + count
        out.seconds[table] = out.seconds.get(table, 0.0) + time.perf_counter() - t

    # users
    user_ids = out.user_ids = uuids(spec.users)
    mxid = [f"@fill-u{i:07d}:localhost" for i in range(spec.users)]
    await put(
        "users",
        ["id", "external_id", "matrix_id", "handle", "created_at"],
        [
            (
                user_ids[i],
                f"user:{i}" if rng.random() < 0.7 else f"matrix:{mxid[i]}",
                mxid[i],
                f"@fill-u{i:07d}",
                _ts(start_ms + rng.randrange(YEAR_MS // 2)),
            )
            for i in range(spec.users)
        ],
        spec.users,
    )
    # microDAOs: the first holds big_microdao_channels channels, the others microdao_size
    big = min(spec.big_microdao_channels, spec.channels)
    n_md = 1 + math.ceil(max(0, spec.channels - big) / spec.microdao_size)
    md_ids = uuids(n_md)
    out.big_microdao = md_ids[0]
    md_owner = [rng.randrange(spec.users) for _ in range(n_md)]
    await put(
        "microdaos",
        ["id", "external_id", "name", "owner_user_id", "created_at"],
        [
            (md_ids[i], f"microdao:fill-{i}", f"microDAO {i}", user_ids[md_owner[i]], _ts(start_ms))
            for i in range(n_md)
        ],
        n_md,
    )
    members_md = []
    for i in range(n_md):
        people = {md_owner[i]} | {rng.randrange(spec.users) for _ in range(20)}
        for u in people:
            role = "owner" if u == md_owner[i] else rng.choice(("member", "member", "admin"))
            members_md.append((md_ids[i], user_ids[u], role))
    await put("microdao_members", ["microdao_id", "user_id", "role"], members_md, len(members_md))
    # agents
    bp_ids = uuids(5)
    await put(
        "agent_blueprints",
        ["id", "code", "description", "model"],
        [(bp_ids[i], f"fill_blueprint_{i}", "filled", "gpt-4.1") for i in range(5)],
        5,
    )
    agent_ids = out.agent_ids = uuids(spec.agents)
    kinds = ("assistant", "assistant", "node", "system", "quest")
    # (kind, microDAO, owner, blueprint) of each agent, drawn in the order the seed fixes
    drawn = [
        (rng.choice(kinds), rng.randrange(n_md), rng.randrange(spec.users), rng.randrange(5))
        for _ in range(spec.agents)
    ]
    await put(
        "agents",
        [
            "id",
            "external_id",
            "name",
            "kind",
            "microdao_id",
            "owner_user_id",
            "matrix_id",
            "blueprint_id",
        ],
        [
            (
                agent_ids[i],
                f"agent:fill-{i}",
                f"Agent {i}",
                kind,
                md_ids[md],
                user_ids[owner],
                f"@agent-fill-{i}:localhost",
                bp_ids[bp],
            )
            for i, (kind, md, owner, bp) in enumerate(drawn)
        ],
        spec.agents,
    )
    # Their puppets as a running bridge set them up, so a restart asks the homeserver
    # nothing about them.
    await put(
        "bridge_puppets",
        ["matrix_id", "displayname", "avatar_url"],
        [(f"@agent-fill-{i}:localhost", f"Agent {i}", None) for i in range(spec.agents)],
        spec.agents,
    )
    # The config that declares them (`blueprints`, `microdaos`, `agents`): restarted with
    # it, the bridge keeps them; without it, it would retire them all.
    used = sorted({md for _, md, _, _ in drawn})
    out.roster = {
        "blueprints": [
            {"code": f"fill_blueprint_{i}", "description": "filled", "model": "gpt-4.1"}
            for i in range(5)
        ],
        "microdaos": [
            {
                "external_id": f"microdao:fill-{m}",
                "name": f"microDAO {m}",
                "owner": mxid[md_owner[m]],
            }
            for m in used
        ],
        "agents": [
            {
                "external_id": f"agent:fill-{i}",
                "name": f"Agent {i}",
                "kind": kind,
                "blueprint": f"fill_blueprint_{bp}",
                "microdao": f"microdao:fill-{md}",
                "owner": mxid[owner],
            }
            for i, (kind, md, owner, bp) in enumerate(drawn)
        ],
    }
    # channels
    channel_ids = out.channel_ids = uuids(spec.channels)
    cum = out.channel_cum = _zipf_cum(spec.channels, 0.9, rng)
    channel_md = [
        0 if c < big else 1 + (c - big) // spec.microdao_size for c in range(spec.channels)
    ]
    rooms = [f"!fill{c:06d}{rng.getrandbits(40):010x}:localhost" for c in range(spec.channels)]
    await put(
        "channels",
        [
            "id",
            "slug",
            "name",
            "microdao_id",
            "matrix_room_id",
            "visibility",
            "created_by_user_id",
            "created_at",
        ],
        [
            (
                channel_ids[c],
                f"c{c}",
                f"channel {c}",
                md_ids[channel_md[c]],
                rooms[c],
                rng.choice(("public", "private", "microdao")),
                user_ids[md_owner[channel_md[c]]],
                _ts(start_ms + rng.randrange(YEAR_MS // 4)),
            )
            for c in range(spec.channels)
        ],
        spec.channels,
    )
    room_cols = {
        r["column_name"]
        for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'bridge_rooms'"
        )
    }
    if "last_event_at" in room_cols:  # when a transaction last touched the room
        await put(
            "bridge_rooms",
            ["room_id", "room_version", "creators", "last_event_at"],
            [
                (
                    rooms[c],
                    "12",
                    [mxid[md_owner[channel_md[c]]]],
                    _ts(FILL_END_MS - rng.randrange(YEAR_MS // 4)),
                )
                for c in range(spec.channels)
            ],
            spec.channels,
        )
    else:
        await put(
            "bridge_rooms",
            ["room_id", "room_version", "creators"],
            [(rooms[c], "12", [mxid[md_owner[channel_md[c]]]]) for c in range(spec.channels)],
            spec.channels,
        )
    # channel_members
    members: list[list[int]] = [[] for _ in range(spec.channels)]
    total = cum[-1]
    mean_extra = max(0.0, spec.memberships_per_user - 1)
    rows = []
    for u in range(spec.users):
        k = 1 + (min(int(rng.expovariate(1 / mean_extra)), 500) if mean_extra else 0)
        chans = {bisect.bisect(cum, rng.random() * total) for _ in range(k)}
        for c in chans:
            members[c].append(u)
            left = rng.random() < 0.1
            joined = start_ms + rng.randrange(YEAR_MS // 2)
            rows.append(
                (
                    channel_ids[c],
                    user_ids[u],
                    None,
                    "admin" if rng.random() < 0.03 else "member",
                    _ts(joined),
                    _ts(joined + rng.randrange(YEAR_MS // 2)) if left else None,
                )
            )
    for a in range(spec.agents):
        for c in {bisect.bisect(cum, rng.random() * total) for _ in range(3)}:
            rows.append((channel_ids[c], None, agent_ids[a], "agent", _ts(start_ms), None))
    await put(
        "channel_members",
        ["channel_id", "member_user_id", "member_agent_id", "role", "joined_at", "left_at"],
        rows,
        len(rows),
    )
    del rows
    # agent_sessions
    statuses = ("closed",) * 16 + ("idle",) * 3 + ("active",)
    sessions = []
    for a in range(spec.agents):
        for _ in range(spec.sessions_per_agent):
            started = start_ms + rng.randrange(YEAR_MS)
            sessions.append(
                (
                    agent_ids[a],
                    channel_ids[bisect.bisect(cum, rng.random() * total)],
                    _ts(started),
                    _ts(started + rng.randrange(86_400_000)),
                    rng.choice(statuses),
                )
            )
    await put(
        "agent_sessions",
        ["agent_id", "channel_id", "started_at", "last_activity_at", "status"],
        sessions,
        len(sessions),
    )
    del sessions
    say(f"fill: small tables in {time.perf_counter() - t0:.0f} s; messages next")

    # messages, streamed: one COPY, generated in chunks while the server works
    touched: list[str] = []
    step = YEAR_MS / max(1, spec.messages)
    n_prev = len(previews)
    mrng = random.Random(spec.seed + 1)

    def message_rows() -> Iterator[tuple[Any, ...]]:
        done = 0
        last_report = time.perf_counter()
        while done < spec.messages:
            n = min(CHUNK, spec.messages - done)
            ids = base64.urlsafe_b64encode(os.urandom(33 * n)).decode()
            chans = [bisect.bisect(cum, x) for x in (mrng.random() * total for _ in range(n))]
            for j in range(n):
                c = chans[j]
                pool = members[c]
                event_id = "$" + ids[44 * j : 44 * j + 43]
                ts_ms = start_ms + int((done + j) * step)
                ts, ts_ns = _ts(ts_ms), ts_ms * 1_000_000
                if mrng.random() < 0.03:
                    sender_u, sender_a, kind = None, agent_ids[mrng.randrange(spec.agents)], "agent"
                else:
                    u = pool[mrng.randrange(len(pool))] if pool else mrng.randrange(spec.users)
                    sender_u, sender_a, kind = user_ids[u], None, "human"
                if mrng.random() < 0.08:
                    touched.append(event_id)
                yield (
                    uuid7(nanoseconds=ts_ns),
                    channel_ids[c],
                    event_id,
                    sender_u,
                    sender_a,
                    kind,
                    previews[mrng.randrange(n_prev)],
                    ts,
                )
            done += n
            if time.perf_counter() - last_report > 15:
                last_report = time.perf_counter()
                say(f"fill: messages {done:,}/{spec.messages:,}")

    await put(
        "messages",
        [
            "id",
            "channel_id",
            "matrix_event_id",
            "sender_user_id",
            "sender_agent_id",
            "sender_type",
            "content_preview",
            "created_at",
        ],
        message_rows(),
        spec.messages,
    )
    await put(
        "bridge_message_state",
        ["matrix_event_id", "last_edit_ts", "last_edit_event_id", "redacted"],
        (
            (e, FILL_END_MS - 1000, "$edit" + e[1:], False)
            if mrng.random() < 0.6
            else (e, None, None, True)
            for e in touched
        ),
        len(touched),
    )
    # The bridge keeps a week of transaction ids (maintenance.TRANSACTION_RETENTION):
    # a week's share of the year's messages, 5 events per transaction, ending now.
    n_txn = max(1, int(spec.messages * RETENTION_DAYS / 365 / 5))
    now_ms = int(time.time() * 1000)
    week_ms = RETENTION_DAYS * 86_400_000
    await put(
        "bridge_transactions",
        ["txn_id", "events_digest", "event_count", "processed_at"],
        (
            (str(1_000_000_000 + i), f"{i:064x}", 5, _ts(now_ms - week_ms + i * week_ms // n_txn))
            for i in range(1, n_txn + 1)
        ),
        n_txn,
    )
    out.seconds["copy_total"] = time.perf_counter() - t0
    say(f"fill: COPY done in {out.seconds['copy_total']:.0f} s; recreating indexes and keys")

    t1 = time.perf_counter()
    for statement in restore:
        t = time.perf_counter()
        await conn.execute(statement)
        say(f"fill: {time.perf_counter() - t:6.1f} s  {statement[:100]}")
    out.seconds["indexes_and_keys"] = time.perf_counter() - t1
    after = await schema_snapshot(conn)
    if after != before:
        raise RuntimeError(f"schema differs after the fill: {set(before) ^ set(after)}")
    t2 = time.perf_counter()
    await conn.execute("VACUUM (ANALYZE) " + ", ".join(FILLED))
    out.seconds["vacuum_analyze"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    await conn.execute("CHECKPOINT")  # not in the middle of the timed queries
    out.seconds["checkpoint"] = time.perf_counter() - t3
    out.seconds["total"] = time.perf_counter() - t0
    await conn.execute("RESET maintenance_work_mem")
    return out


def preview_pool(n: int, seed: int) -> list[str]:
    """Previews as the bridge renders them, from the ingest workload's message texts."""
    w = Workload(["!r:x"], ["@u:x", "@v:x"], "@o:x", seed=seed, start_ts=0)
    return [
        render_preview("m.room.message", {"msgtype": "m.text", "body": w._text()}, 500)
        for _ in range(n)
    ]


# -- the platform's queries -------------------------------------------------------------------

PAGE = (
    "SELECT id, matrix_event_id, sender_user_id, sender_agent_id, sender_type, "
    "content_preview, created_at FROM messages "
    "WHERE channel_id = $1 AND created_at < $2 ORDER BY created_at DESC LIMIT 50"
)
QUERIES: dict[str, tuple[str, str, str]] = {
    # name: (sql, table whose index should be used, index)
    "channel_page_latest": (PAGE, "messages", "messages_channel_id_created_at_idx"),
    "channel_page_cursor": (PAGE, "messages", "messages_channel_id_created_at_idx"),
    "microdao_channels": (
        "SELECT id, slug, name, visibility, team_id, created_at FROM channels "
        "WHERE microdao_id = $1 ORDER BY name",
        "channels",
        "channels_microdao_id_idx",
    ),
    "user_channels": (
        "SELECT c.id, c.slug, c.name, c.microdao_id, m.role FROM channel_members m "
        "JOIN channels c ON c.id = m.channel_id "
        "WHERE m.member_user_id = $1 AND m.left_at IS NULL ORDER BY c.name",
        "channel_members",
        "channel_members_member_user_id_idx",
    ),
    "agent_open_sessions": (
        "SELECT id, channel_id, started_at, last_activity_at, status FROM agent_sessions "
        "WHERE agent_id = $1 AND status <> 'closed' ORDER BY last_activity_at DESC NULLS LAST",
        "agent_sessions",
        "agent_sessions_agent_id_channel_id_idx",
    ),
}


def _params(name: str, filled: Filled, rng: random.Random) -> tuple[Any, ...]:
    total = filled.channel_cum[-1]
    if name.startswith("channel_page"):
        channel = filled.channel_ids[bisect.bisect(filled.channel_cum, rng.random() * total)]
        if name == "channel_page_latest":
            return channel, _ts(FILL_END_MS + 10 * 86_400_000)
        return channel, _ts(FILL_END_MS - rng.randrange(YEAR_MS))
    if name == "microdao_channels":
        return (filled.big_microdao,)
    if name == "user_channels":
        return (rng.choice(filled.user_ids),)
    return (rng.choice(filled.agent_ids),)


def check_plan(plan: str, table: str, index: str) -> dict[str, Any]:
    seq = f"Seq Scan on {table}" in plan
    used = bool(index) and index in plan
    return {
        "index_scan": used and not seq,
        "seq_scan": seq,
        # a Sort node under the LIMIT: every matching row is fetched, then sorted
        "sorts_all_matches": plan.lstrip().startswith("Limit") and "->  Sort" in plan,
    }


def _literal(value: Any) -> str:
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text.replace("'", "''") + "'"


async def explain(conn: asyncpg.Connection, sql: str, args: tuple[Any, ...]) -> dict[str, str]:
    """The custom plan (what EXPLAIN with values shows) and the generic plan (what a
    prepared statement, as asyncpg always uses, runs from the 6th execution on when
    plan_cache_mode is auto and the planner finds it no costlier)."""
    custom = "\n".join(r[0] for r in await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args))
    await conn.execute("PREPARE bench_generic AS " + sql)
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        values = ", ".join(_literal(a) for a in args)
        rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_generic({values})")
        generic = "\n".join(r[0] for r in rows)
    finally:
        await conn.execute("RESET plan_cache_mode")
        await conn.execute("DEALLOCATE bench_generic")
    return {"custom": custom, "generic": generic}


async def run_queries(
    conn: asyncpg.Connection, filled: Filled, runs: int, budget_s: float, seed: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (sql, table, index) in QUERIES.items():
        out[name] = await _query(conn, name, sql, table, index, filled, runs, budget_s, seed)
        say(f"query {name}: p50 {out[name]['p50_ms']:.3f} ms, p99 {out[name]['p99_ms']:.3f} ms")
    return out


async def _query(
    conn: asyncpg.Connection,
    name: str,
    sql: str,
    table: str,
    index: str,
    filled: Filled,
    runs: int,
    budget_s: float,
    seed: int,
) -> dict[str, Any]:
    auto = await _time(conn, name, sql, filled, runs, budget_s, seed)
    await conn.execute("SET plan_cache_mode = force_custom_plan")
    try:
        custom = await _time(conn, name, sql, filled, runs, budget_s, seed)
    finally:
        await conn.execute("RESET plan_cache_mode")
    plans = await explain(conn, sql, _params(name, filled, random.Random(seed + 7)))
    return {
        **auto,
        "custom_plan_timing": custom,
        "expected_index": index or None,
        "custom_plan": check_plan(plans["custom"], table, index),
        "generic_plan": check_plan(plans["generic"], table, index),
        "explain_custom": plans["custom"],
        "explain_generic": plans["generic"],
    }


async def _time(
    conn: asyncpg.Connection,
    name: str,
    sql: str,
    filled: Filled,
    runs: int,
    budget_s: float,
    seed: int,
) -> dict[str, Any]:
    """Client-side time of a prepared statement (as asyncpg runs every query), same
    parameter sequence each time (seeded)."""
    rng = random.Random(seed)
    stmt = await conn.prepare(sql)
    for _ in range(min(50, runs)):  # warm the cache and the plan
        await stmt.fetch(*_params(name, filled, rng))
    times: list[float] = []
    rows: list[int] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < runs and time.perf_counter() < deadline:
        args = _params(name, filled, rng)
        t = time.perf_counter()
        result = await stmt.fetch(*args)
        times.append(time.perf_counter() - t)
        rows.append(len(result))
    return {
        "runs": len(times),
        "p50_ms": percentile(times, 50) * 1000,
        "p99_ms": percentile(times, 99) * 1000,
        "max_ms": max(times) * 1000,
        "mean_ms": sum(times) / len(times) * 1000,
        "rows_mean": sum(rows) / len(rows),
    }
