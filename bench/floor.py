"""The floor: the rows the bridge wrote in the measured phase, written straight into the
same schema with COPY, by the same transactions (one commit per Synapse transaction),
on the same server.

What is copied is every row the measured phase created, with its final values: the
``messages`` rows (previews already edited or ``[deleted]``), ``bridge_message_state``,
new ``channel_members`` rows and ``bridge_transactions``. Each row goes into the commit of
the transaction that created it (a message-state row into the last one that touched
it). Updates of rows created earlier (a leave, a rename) are not replayed: the floor is
the cost of the rows, not of the bridge's logic. Users and channels are pre-created.

Two targets:

* ``fresh`` (ingest mode): a new database migrated by ``open_database``, into which the
  bridge database's state before the measured rows is copied first (all users, the
  channels, earlier messages ...), untimed.
* ``clone`` (size mode, to measure at that size): the filled database itself; the
  channels are cloned (new ids and room ids) and every measured row gets new ids and
  event ids, so nothing collides with what the bridge wrote.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from daarion_bridge.db import messages
from daarion_bridge.db.database import open_database

from .workload import Phase

# In foreign-key order.
MEASURED = ("messages", "bridge_message_state", "channel_members", "bridge_transactions")
PRE_TABLES = (
    "users",
    "microdaos",
    "microdao_members",
    "agent_blueprints",
    "agents",
    "channels",
    "bridge_rooms",
    "channel_members",
    "messages",
    "bridge_message_state",
    "bridge_transactions",
)


@dataclass
class FloorRows:
    columns: dict[str, list[str]] = field(default_factory=dict)
    per_txn: list[dict[str, list[tuple[Any, ...]]]] = field(default_factory=list)
    totals: Counter[str] = field(default_factory=Counter)
    unattributed: int = 0
    txn_prefix: str = ""
    message_ids: list[str] = field(default_factory=list)
    state_ids: list[str] = field(default_factory=list)
    member_ids: list[Any] = field(default_factory=list)


async def member_ids(conn: asyncpg.Connection, channel_ids: list[Any]) -> set[Any]:
    rows = await conn.fetch(
        "SELECT id FROM channel_members WHERE channel_id = ANY($1::uuid[])", channel_ids
    )
    return {r["id"] for r in rows}


async def collect(
    conn: asyncpg.Connection,
    phase: Phase,
    txn_prefix: str,
    channel_ids: list[Any],
    members_before: set[Any],
) -> FloorRows:
    """Read back the rows the measured phase created and group them by transaction."""
    out = FloorRows(txn_prefix=txn_prefix)
    out.per_txn = [{t: [] for t in MEASURED} for _ in phase.txns]
    last = len(phase.txns) - 1

    def put(table: str, record: asyncpg.Record, idx: int | None) -> None:
        if table not in out.columns:
            out.columns[table] = list(record.keys())
        if idx is None:
            out.unattributed += 1
            idx = last
        out.per_txn[idx][table].append(tuple(record.values()))
        out.totals[table] += 1

    out.message_ids = list(phase.message_txn)
    for r in await conn.fetch(
        "SELECT * FROM messages WHERE matrix_event_id = ANY($1::text[])", out.message_ids
    ):
        put("messages", r, phase.message_txn.get(r["matrix_event_id"]))
    out.state_ids = list(phase.state_txn)
    for r in await conn.fetch(
        "SELECT * FROM bridge_message_state WHERE matrix_event_id = ANY($1::text[])",
        out.state_ids,
    ):
        put("bridge_message_state", r, phase.state_txn.get(r["matrix_event_id"]))
    rooms = {
        r["id"]: r["matrix_room_id"]
        for r in await conn.fetch(
            "SELECT id, matrix_room_id FROM channels WHERE id = ANY($1::uuid[])", channel_ids
        )
    }
    for r in await conn.fetch(
        "SELECT m.*, u.matrix_id AS _mxid FROM channel_members m "
        "LEFT JOIN users u ON u.id = m.member_user_id WHERE m.channel_id = ANY($1::uuid[])",
        channel_ids,
    ):
        if r["id"] in members_before:
            continue
        out.member_ids.append(r["id"])
        record = dict(r)
        mxid = record.pop("_mxid")
        if "channel_members" not in out.columns:
            out.columns["channel_members"] = list(record)
        idx = phase.join_txn.get((rooms.get(r["channel_id"], ""), mxid or ""))
        if idx is None:
            out.unattributed += 1
            idx = last
        out.per_txn[idx]["channel_members"].append(tuple(record.values()))
        out.totals["channel_members"] += 1
    index = {t.txn_id: i for i, t in enumerate(phase.txns)}
    for r in await conn.fetch(
        "SELECT * FROM bridge_transactions WHERE txn_id LIKE $1", txn_prefix + "-%"
    ):
        put("bridge_transactions", r, index.get(r["txn_id"]))
    return out


async def prepare_fresh(bridge_conn: asyncpg.Connection, url: str, rows: FloorRows) -> None:
    """Migrate a new database the bridge's way, then copy in the bridge database's state
    without the measured rows (all users included: they are 'pre-created')."""
    db, _state_db = await open_database(url, min_size=1, max_size=1)
    await db.stop()
    excluded: dict[str, tuple[str, Any]] = {
        "messages": ("NOT (matrix_event_id = ANY($1::text[]))", rows.message_ids),
        "bridge_message_state": ("NOT (matrix_event_id = ANY($1::text[]))", rows.state_ids),
        "channel_members": ("NOT (id = ANY($1::uuid[]))", rows.member_ids),
        "bridge_transactions": ("txn_id NOT LIKE $1", rows.txn_prefix + "-%"),
    }
    dst = await asyncpg.connect(url)
    try:
        for table in PRE_TABLES:
            if table in excluded:
                where, arg = excluded[table]
                records = await bridge_conn.fetch(f"SELECT * FROM {table} WHERE {where}", arg)
            else:
                records = await bridge_conn.fetch(f"SELECT * FROM {table}")
            if records:
                await dst.copy_records_to_table(
                    table,
                    records=[tuple(r.values()) for r in records],
                    columns=list(records[0].keys()),
                )
        await dst.execute("ANALYZE")
    finally:
        await dst.close()


async def clone_for(conn: asyncpg.Connection, rows: FloorRows, tag: str) -> FloorRows:
    """The same rows under new ids, in clones of their channels (created now, untimed)."""
    cols = rows.columns
    channel_ix = {
        t: cols[t].index("channel_id") for t in ("messages", "channel_members") if t in cols
    }
    channel_ids = {rec[channel_ix[t]] for txn in rows.per_txn for t in channel_ix for rec in txn[t]}
    mapping: dict[Any, Any] = {}
    for r in await conn.fetch(
        "SELECT * FROM channels WHERE id = ANY($1::uuid[])", list(channel_ids)
    ):
        new = dict(r)
        new["id"] = mapping[r["id"]] = uuid.uuid4()
        new["slug"] = f"{r['slug']}-{tag}"
        new["matrix_room_id"] = f"{r['matrix_room_id']}/{tag}"
        await conn.copy_records_to_table(
            "channels", records=[tuple(new.values())], columns=list(new)
        )
    suffix = f"~{tag}"

    def remap(table: str, rec: tuple[Any, ...]) -> tuple[Any, ...]:
        row = dict(zip(cols[table], rec, strict=True))
        if "channel_id" in row:
            row["channel_id"] = mapping[row["channel_id"]]
        if table == "messages":
            row["id"] = messages.new_id()
        elif table == "channel_members":
            row["id"] = uuid.uuid4()
        if "matrix_event_id" in row:
            row["matrix_event_id"] += suffix
        if row.get("last_edit_event_id"):
            row["last_edit_event_id"] += suffix
        if table == "bridge_transactions":
            row["txn_id"] = f"{tag}-{row['txn_id']}"
        return tuple(row.values())

    out = FloorRows(columns=cols, totals=rows.totals, txn_prefix=f"{tag}-{rows.txn_prefix}")
    out.per_txn = [
        {t: [remap(t, rec) for rec in recs] for t, recs in txn.items()} for txn in rows.per_txn
    ]
    return out


async def run(conn: asyncpg.Connection, rows: FloorRows, *, bulk: bool) -> float:
    """Seconds to write the rows: per transaction (BEGIN, one COPY per table, COMMIT), or
    with ``bulk`` all of them in one transaction, one COPY per table."""
    copy = conn.copy_records_to_table
    cols = rows.columns
    t0 = time.perf_counter()
    if bulk:
        async with conn.transaction():
            for table in MEASURED:
                records = [rec for txn in rows.per_txn for rec in txn[table]]
                if records:
                    await copy(table, records=records, columns=cols[table])
    else:
        for txn in rows.per_txn:
            async with conn.transaction():
                for table in MEASURED:
                    if txn[table]:
                        await copy(table, records=txn[table], columns=cols[table])
    return time.perf_counter() - t0


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in MEASURED}
