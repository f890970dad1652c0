"""The migrated database has exactly the ERD's tables, and refuses to run newer."""

from __future__ import annotations

import asyncpg
import pytest

from daarion_bridge.db.database import open_database
from daarion_bridge.errors import OperatorError

from .erd import parse_erd

ERD = parse_erd()
PG_TYPES = {
    "uuid": "uuid",
    "text": "text",
    "timestamptz": "timestamp with time zone",
    "jsonb": "jsonb",
}


async def _columns(conn: asyncpg.Connection) -> dict[tuple[str, str], asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = 'public'"
    )
    return {(r["table_name"], r["column_name"]): r for r in rows}


async def _indexes(conn: asyncpg.Connection) -> dict[str, list[tuple[tuple[str, ...], bool]]]:
    rows = await conn.fetch(
        """
        SELECT t.relname AS table_name, ix.indisunique AS is_unique,
               array_agg(a.attname ORDER BY k.ord) AS columns
        FROM pg_index ix
        JOIN pg_class t ON t.oid = ix.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'public'
        CROSS JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
        WHERE NOT ix.indisprimary
        GROUP BY ix.indexrelid, t.relname, ix.indisunique
        """
    )
    found: dict[str, list[tuple[tuple[str, ...], bool]]] = {}
    for r in rows:
        found.setdefault(r["table_name"], []).append((tuple(r["columns"]), r["is_unique"]))
    return found


async def _foreign_keys(conn: asyncpg.Connection) -> set[tuple[str, str, str, str]]:
    rows = await conn.fetch(
        """
        SELECT cl.relname AS table_name, a.attname AS column_name,
               rcl.relname AS ref_table, ra.attname AS ref_column
        FROM pg_constraint c
        JOIN pg_class cl ON cl.oid = c.conrelid
        JOIN pg_class rcl ON rcl.oid = c.confrelid
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = c.confkey[1]
        WHERE c.contype = 'f'
        """
    )
    return {(r["table_name"], r["column_name"], r["ref_table"], r["ref_column"]) for r in rows}


async def test_erd_has_nine_tables() -> None:
    assert sorted(ERD) == sorted(
        [
            "users", "microdaos", "microdao_members", "agent_blueprints", "agents",
            "channels", "channel_members", "messages", "agent_sessions",
        ]
    )  # fmt: skip


async def test_only_erd_and_bridge_tables_exist(pool: asyncpg.Pool) -> None:
    tables = {
        r["tablename"]
        for r in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    own = {t for t in tables if t.startswith(("bridge_", "mx_"))}
    assert tables - own == set(ERD)
    assert {"bridge_schema_version", "bridge_transactions", "bridge_dead_letters"} <= own


async def test_columns_types_and_not_null_match_erd(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        columns = await _columns(conn)
    for table in ERD.values():
        actual = {c for (t, c) in columns if t == table.name}
        assert actual == set(table.columns), table.name
        for col in table.columns.values():
            row = columns[(table.name, col.name)]
            assert row["data_type"] == PG_TYPES[col.type], (table.name, col.name)
            assert (row["is_nullable"] == "NO") == col.not_null, (table.name, col.name)
            if col.primary_key:
                assert row["column_default"] == "gen_random_uuid()", (table.name, col.name)


async def test_primary_keys_are_id(pool: asyncpg.Pool) -> None:
    rows = await pool.fetch(
        """
        SELECT cl.relname AS table_name, array_agg(a.attname) AS columns
        FROM pg_index ix JOIN pg_class cl ON cl.oid = ix.indrelid
        JOIN pg_attribute a ON a.attrelid = cl.oid AND a.attnum = ANY(ix.indkey)
        WHERE ix.indisprimary GROUP BY cl.relname
        """
    )
    keys = {r["table_name"]: r["columns"] for r in rows}
    for table in ERD.values():
        expected = [c.name for c in table.columns.values() if c.primary_key]
        assert keys[table.name] == expected


# Indexes the bridge adds to the ERD's for the platform's queries (upgrade/v04...).
ADDED_INDEXES = {"channel_members": {(("member_user_id",), False)}}


async def test_every_erd_index_exists_with_its_uniqueness(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        indexes = await _indexes(conn)
    for table in ERD.values():
        expected = {(i.columns, i.unique) for i in table.indexes}
        expected |= {((c.name,), True) for c in table.columns.values() if c.unique}
        expected |= ADDED_INDEXES.get(table.name, set())
        assert set(indexes.get(table.name, [])) == expected, table.name


async def test_every_erd_foreign_key_exists(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        fks = await _foreign_keys(conn)
    expected = {
        (t.name, c.name, *c.references)
        for t in ERD.values()
        for c in t.columns.values()
        if c.references
    }
    assert expected
    assert {fk for fk in fks if fk[0] in ERD} == expected


async def test_migrations_are_idempotent_on_restart(database_url: str) -> None:
    for _ in range(2):
        db, _state = await open_database(database_url)
        version = await db.pool.fetchval("SELECT version FROM bridge_schema_version")
        await db.stop()
        assert version >= 1


async def test_database_newer_than_code_is_refused(database_url: str) -> None:
    db, _state = await open_database(database_url)
    await db.pool.execute("UPDATE bridge_schema_version SET version = 999")
    await db.stop()
    with pytest.raises(OperatorError, match="newer than this bridge"):
        await open_database(database_url)


async def test_unreachable_database_is_one_clear_error() -> None:
    with pytest.raises(OperatorError) as e:
        await open_database("postgresql://bridge:secret@127.0.0.1:1/nothing")
    message = str(e.value)
    assert "127.0.0.1:1" in message and "\n" not in message
    assert "secret" not in message


async def test_v5_starts_the_outbox_cursor_before_the_first_unsent_row(
    database_url: str,
) -> None:
    """Upgrading keeps what was published published and what was not waiting."""
    from mautrix.util.async_db import Database, UpgradeTable

    from daarion_bridge.db import outbox
    from daarion_bridge.db.upgrade import upgrade_table

    v4 = UpgradeTable(
        version_table_name=upgrade_table.version_table_name,
        database_name=upgrade_table.database_name,
    )
    v4.upgrades = upgrade_table.upgrades[:4]
    old = Database.create(database_url, upgrade_table=v4)
    await old.start()
    await old.execute(
        "INSERT INTO bridge_outbox (subject, msg_id, payload, sent_at) "
        "SELECT 's', 'm' || i, '{}', CASE WHEN i <= 3 THEN now() END "
        "FROM generate_series(1, 5) i"
    )
    await old.stop()
    db, _state = await open_database(database_url)
    try:
        assert await db.pool.fetchval("SELECT last_sent_id FROM bridge_outbox_cursor") == 3
        assert await outbox.backlog(db.pool) == 2
        assert [e.msg_id for e in await outbox.unsent(db.pool, 10)] == ["m4", "m5"]
    finally:
        await db.stop()


async def test_outbox_ids_come_from_a_sequence_without_a_per_session_cache(
    pool: asyncpg.Pool,
) -> None:
    """The publish cursor assumes ids in commit order (outbox.py). With a sequence cache
    above 1 each session would hand out ids from its own block, and a row could commit
    after the cursor had passed its smaller id: it would never be published."""
    cache = await pool.fetchval(
        "SELECT seqcache FROM pg_sequence "
        "WHERE seqrelid = pg_get_serial_sequence('bridge_outbox', 'id')::regclass"
    )
    assert cache == 1
