"""Which room keys the bridge asks for again (crypto/requests.py, db/encrypted.missing):
those messages have waited for longer than the wait with no device of the bridge
holding them, each with the bridge's users in the room to ask from. Real PostgreSQL with
mautrix's crypto store tables."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import asyncpg
import pytest
from mautrix.util.async_db import Database

from daarion_bridge.agents.sync import SyncReport, make_bot_the_system_agent, write_roster
from daarion_bridge.crypto.service import open_crypto
from daarion_bridge.db import encrypted
from daarion_bridge.ingest.channel_setup import ChannelSetup
from daarion_bridge.translate.rooms import snapshot_from_state
from tests.db.conftest import make_config
from tests.db.test_announce import ALICE, BOT, ROOM, ROSTER, SOFIA, Feed, state


@pytest.fixture
async def pool(
    database_url: str, databases: tuple[Database, Database]
) -> AsyncIterator[asyncpg.Pool]:
    pool: asyncpg.Pool = databases[0].pool  # type: ignore[attr-defined]
    async with aiohttp.ClientSession() as http:
        await open_crypto(database_url, databases[0], make_config(), http)
    async with pool.acquire() as conn, conn.transaction():
        await write_roster(conn, ROSTER, {}, SyncReport())
    await make_bot_the_system_agent(pool, BOT, "DAARION")
    snapshot = snapshot_from_state(ROOM, state([ALICE, BOT, SOFIA]))
    await Feed(pool).send([], [ChannelSetup(snapshot, "microdao:core", ALICE, BOT)])
    yield pool


async def waits(pool: asyncpg.Pool, event_id: str, session_id: str, ago: timedelta) -> None:
    event = {"event_id": event_id, "room_id": ROOM, "sender": ALICE, "type": "m.room.encrypted",
             "content": {"algorithm": "m.megolm.v1.aes-sha2", "session_id": session_id,
                         "sender_key": "alicecurve", "ciphertext": "x"}}  # fmt: skip
    await encrypted.add(pool, event_id, ROOM, session_id, event)
    await pool.execute(
        "UPDATE bridge_encrypted_waiting SET waiting_since = now() - $2::interval "
        "WHERE event_id = $1",
        event_id,
        ago,
    )


async def test_keys_missing_long_enough_are_asked_for_once_each(pool: asyncpg.Pool) -> None:
    await waits(pool, "$a", "s-old", timedelta(minutes=2))
    await waits(pool, "$b", "s-old", timedelta(minutes=1))  # the same key: one request
    await waits(pool, "$c", "s-new", timedelta(seconds=5))  # its key may still come
    await waits(pool, "$d", "s-held", timedelta(minutes=5))
    await pool.execute(
        "INSERT INTO crypto_account (account_id, device_id, shared, sync_token, account) "
        "VALUES ($1, 'DAARIONX', true, '', '\\x00')",
        SOFIA,
    )
    await pool.execute(
        "INSERT INTO crypto_megolm_inbound_session "
        "(account_id, session_id, sender_key, room_id, session, received_at) "
        "VALUES ($1, 's-held', 'alicecurve', $2, '\\x00', now() AT TIME ZONE 'UTC')",
        SOFIA,
        ROOM,
    )  # it came: nothing to ask for
    [key] = await encrypted.missing(pool, timedelta(seconds=30))
    assert (key.room_id, key.session_id, key.sender, key.sender_key) == (
        ROOM, "s-old", ALICE, "alicecurve",
    )  # fmt: skip
    assert key.askers == sorted([BOT, SOFIA])  # the bot (the system agent) and Sofia
