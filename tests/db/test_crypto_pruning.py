"""The crypto store stays bounded: the room keys of rooms the bridge's users (the bot and
the agents: the store's accounts) all left more than ROOM_KEY_GRACE ago go, with their
messages' replay index and any outgoing session there; so do those of rooms that are no
channel once no key has come for as long; rooms one of them is still in keep every key.
Messages waiting for a key longer than KEY_WAIT_RETENTION go. Real PostgreSQL with
mautrix's crypto store tables, as the bridge opens them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import asyncpg
import pytest
from mautrix.util.async_db import Database

from daarion_bridge.agents.sync import SyncReport, write_roster
from daarion_bridge.crypto.service import open_crypto
from daarion_bridge.db import encrypted, maintenance
from daarion_bridge.ingest.channel_setup import ChannelSetup
from daarion_bridge.translate.rooms import snapshot_from_state
from tests.db.conftest import make_config
from tests.db.test_announce import ALICE, BOT, ROSTER, SOFIA, Feed, state

STILL_HERE = "!still-here:localhost"  # the bot and Sofia are in it
LEFT = "!left:localhost"  # both left long ago; Alice is still there
LEFT_LATELY = "!left-lately:localhost"  # both left two days ago
BOT_STAYS = "!bot-stays:localhost"  # Sofia left long ago, the bot is there
NO_CHANNEL = "!no-channel:localhost"  # a refused invite's room: keys long ago
NO_CHANNEL_ACTIVE = "!no-channel-active:localhost"  # a key lately too


@pytest.fixture
async def store(database_url: str, databases: tuple[Database, Database]) -> AsyncIterator[Feed]:
    """The crypto store's tables, the bot's and Sofia's accounts, and the channels."""
    pool: asyncpg.Pool = databases[0].pool  # type: ignore[attr-defined]
    async with aiohttp.ClientSession() as http:
        await open_crypto(database_url, databases[0], make_config(), http)
    for account in (BOT, SOFIA):
        await pool.execute(
            "INSERT INTO crypto_account (account_id, device_id, shared, sync_token, account) "
            "VALUES ($1, 'DAARIONX', true, '', '\\x00')",
            account,
        )
    async with pool.acquire() as conn, conn.transaction():
        await write_roster(conn, ROSTER, {}, SyncReport())
    feed = Feed(pool)
    for room in (STILL_HERE, LEFT, LEFT_LATELY, BOT_STAYS):
        snapshot = snapshot_from_state(room, state([ALICE, BOT, SOFIA]))
        await feed.send([], [ChannelSetup(snapshot, "microdao:core", ALICE, BOT)])
    await left(pool, LEFT, [BOT, SOFIA], timedelta(days=31))
    await left(pool, LEFT_LATELY, [BOT, SOFIA], timedelta(days=2))
    await left(pool, BOT_STAYS, [SOFIA], timedelta(days=40))
    yield feed


async def left(pool: asyncpg.Pool, room: str, who: list[str], ago: timedelta) -> None:
    """Their member rows in the room's channel left `ago` (whichever table holds them)."""
    await pool.execute(
        """
        UPDATE channel_members m SET left_at = now() - $3::interval
        FROM channels c WHERE c.id = m.channel_id AND c.matrix_room_id = $1
          AND COALESCE((SELECT matrix_id FROM agents WHERE id = m.member_agent_id),
                       (SELECT matrix_id FROM users WHERE id = m.member_user_id)) = ANY($2)
        """,
        room,
        who,
        ago,
    )


async def room_key(
    pool: asyncpg.Pool, room: str, n: int, received_ago: timedelta, account: str = SOFIA
) -> str:
    """An inbound session of the room, with one message in its replay index."""
    session_id, sender_key = f"{room[1:8]}{n}".ljust(43, "s"), "k".ljust(43, "k")
    await pool.execute(
        "INSERT INTO crypto_megolm_inbound_session "
        "(account_id, session_id, sender_key, room_id, session, received_at) "
        "VALUES ($1, $2, $3, $4, '\\x00', (now() AT TIME ZONE 'UTC') - $5::interval)",
        account,
        session_id,
        sender_key,
        room,
        received_ago,
    )
    await pool.execute(
        'INSERT INTO crypto_message_index (sender_key, session_id, "index", event_id, timestamp)'
        " VALUES ($1, $2, 0, $3, 0)",
        sender_key,
        session_id,
        f"$m-{session_id}",
    )
    return session_id


async def rooms_keyed(pool: asyncpg.Pool) -> set[str]:
    rows = await pool.fetch("SELECT DISTINCT room_id FROM crypto_megolm_inbound_session")
    return {r[0] for r in rows}


async def test_keys_of_rooms_the_bridge_is_done_with_go(store: Feed) -> None:
    pool = store.pool
    old = timedelta(days=60)
    for n, room in enumerate([STILL_HERE, LEFT, LEFT_LATELY, BOT_STAYS, NO_CHANNEL]):
        await room_key(pool, room, n, old)
    await room_key(pool, LEFT, 9, old, account=BOT)  # the bot got it too
    await room_key(pool, NO_CHANNEL_ACTIVE, 7, old)
    await room_key(pool, NO_CHANNEL_ACTIVE, 8, timedelta(days=1))
    await pool.execute(
        "INSERT INTO crypto_megolm_outbound_session (account_id, room_id, session_id, "
        "session, shared, max_messages, message_count, max_age, created_at, last_used) "
        "SELECT $1, r, 'out-' || r, '\\x00', true, 100, 0, 0, now(), now() "
        "FROM unnest($2::text[]) AS r",
        SOFIA,
        [STILL_HERE, LEFT],
    )
    forgotten: list[bool] = []
    await maintenance.prune_crypto(pool, lambda: forgotten.append(True))
    assert forgotten == [True]  # the crypto stores' cache forgets its sessions
    assert await rooms_keyed(pool) == {STILL_HERE, LEFT_LATELY, BOT_STAYS, NO_CHANNEL_ACTIVE}
    indexed = await pool.fetchval("SELECT count(*) FROM crypto_message_index")
    assert indexed == 5  # the messages of the four rooms' five sessions left
    outgoing = await pool.fetch("SELECT room_id FROM crypto_megolm_outbound_session")
    assert [r[0] for r in outgoing] == [STILL_HERE]
    assert maintenance.ROOM_KEY_GRACE == timedelta(days=30)


async def test_a_room_left_within_the_grace_keeps_its_keys(store: Feed) -> None:
    """The counterpart: the same room, left a day short of the grace, keeps them."""
    pool = store.pool
    await left(pool, LEFT, [BOT, SOFIA], maintenance.ROOM_KEY_GRACE - timedelta(days=1))
    await room_key(pool, LEFT, 1, timedelta(days=60))
    forgotten: list[bool] = []
    await maintenance.prune_crypto(pool, lambda: forgotten.append(True))
    assert await rooms_keyed(pool) == {LEFT}
    assert forgotten == []  # nothing went: the cache stays


async def test_messages_waiting_too_long_for_a_key_go(store: Feed) -> None:
    pool = store.pool
    for event_id in ("$old", "$new"):
        await encrypted.add(pool, event_id, LEFT_LATELY, "s", {"event_id": event_id})
    await pool.execute(
        "UPDATE bridge_encrypted_waiting SET waiting_since = now() - $1::interval "
        "WHERE event_id = '$old'",
        maintenance.KEY_WAIT_RETENTION + timedelta(hours=1),
    )
    await maintenance.prune_crypto(pool)
    rows = await pool.fetch("SELECT event_id FROM bridge_encrypted_waiting")
    assert [r[0] for r in rows] == ["$new"]
    assert await encrypted.count(pool) == 1
