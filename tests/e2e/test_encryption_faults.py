"""Encrypted rooms under faults: a room key must survive whatever happens to the
transaction that brought it. Synapse sends a failed transaction again WITHOUT its
to-device messages (its recoverer rebuilds it from the events alone), so a key it
carried exists only where the bridge committed it.

- SIGKILL between the crypto commit and the index write: the key and the message in one
  transaction; the bridge's index write held back by a lock this test holds; the key
  committed; the bridge killed. After the restart Synapse resends the message alone: it
  is decrypted, indexed once and invokes the agent once.

Real Synapse with the MSC2409/MSC3202 flags, real PostgreSQL, real NATS, the bridge
process; matrix-nio with vodozemac plays the person.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from nio import AsyncClient

from daarion_bridge.db.bookkeeping import INGEST_LOCK_KEY
from tests.e2e.encryption_helpers import encrypted_room_with, nio_on_device
from tests.e2e.helpers import OwnIndex, Person, own_fixtures, own_index, stream_events, wait_for
from tests.e2e.runtime_helpers import TOKEN, call

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

D = "localhost"
# This module's own agent (agent:vault): no other module's bridge gives it a device.
VAULT = f"@agent-vault:{D}"
STREAM = "E2EENCFAULTS"
PREFIX = "encf."

own = own_fixtures("encryption_faults", index="index")
local_nats, db, bridge = own.nats, own.db, own.bridge


@pytest.fixture(scope="module")
async def index(e2e, pg_server_url, local_nats) -> OwnIndex:
    owner = "@encf.alice:localhost"

    def edit(cfg: Any) -> None:
        cfg["nats"] = {"url": local_nats.url, "stream": STREAM, "subject_prefix": PREFIX}
        cfg["api"] = {"service_token": TOKEN, "agent_messages_per_hour": 50}
        cfg["bridge"]["permissions"] = {owner: "user"}
        cfg["microdaos"] = [{"external_id": "microdao:encf", "name": "EncF", "owner": owner}]
        cfg["blueprints"] = [{"code": "encf_guide", "model": "demo"}]
        cfg["agents"] = [
            {"external_id": "agent:vault", "name": "Vault", "kind": "assistant",
             "blueprint": "encf_guide", "microdao": "microdao:encf", "owner": owner},
        ]  # fmt: skip

    return await own_index(e2e, pg_server_url, "encryption_faults", edit)


@pytest.fixture(scope="module")
async def alice(people) -> Person:
    return await people("encf.alice")


@pytest.fixture(scope="module")
async def element(alice: Person, bridge, tmp_path_factory) -> AsyncIterator[AsyncClient]:
    client = await nio_on_device(alice, tmp_path_factory.mktemp("nio-faults"))
    try:
        yield client
    finally:
        await client.close()


async def invocations(server: Any, event_id: str) -> list[dict[str, Any]]:
    found = await stream_events(server.url, STREAM, PREFIX + "router.invoke.agent")
    return [p for p in found if p["payload"]["matrix_event_id"] == event_id]


async def waiting_on(db: asyncpg.Pool, locktype: str, relation: str | None = None) -> bool:
    """A backend of this database waits for a lock of `locktype` (on `relation`)."""
    sql = (
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE d.datname = current_database() AND NOT l.granted AND l.locktype = $1 "
        "AND ($2::text IS NULL OR l.relation = $2::regclass)"
    )
    return bool(await db.fetchval(sql, locktype, relation))


async def inbound_session(db: asyncpg.Pool, room_id: str, session_id: str) -> bool:
    sql = (
        "SELECT count(*) FROM crypto_megolm_inbound_session "
        "WHERE account_id = $1 AND room_id = $2 AND session_id = $3 AND session IS NOT NULL"
    )
    return bool(await db.fetchval(sql, VAULT, room_id, session_id))


def enqueued_for_appservice(synapse_workdir: Path, event_id: str) -> bool:
    """Synapse has handed the event to its appservice sender (queued or sent): its
    appservice stream position has passed the event's."""
    con = sqlite3.connect(f"file:{synapse_workdir / 'homeserver.db'}?mode=ro", uri=True)
    try:
        event = "SELECT stream_ordering FROM events WHERE event_id = ?"
        (ordering,) = con.execute(event, (event_id,)).fetchone()
        sender = "SELECT stream_ordering FROM appservice_stream_position"
        (position,) = con.execute(sender).fetchone()
    finally:
        con.close()
    return bool(position >= ordering)


@contextlib.asynccontextmanager
async def ingest_held(url: str) -> AsyncIterator[asyncpg.Connection]:
    """The bridge's ingest lock held by this test: every index write waits at its start."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", INGEST_LOCK_KEY)
        yield conn
    finally:
        await conn.close()


async def test_sigkill_between_crypto_commit_and_index_write_loses_no_key(
    e2e, index: OwnIndex, alice, element, bridge, local_nats, db
) -> None:
    room_id = await encrypted_room_with(alice, element, VAULT)
    committed = "SELECT count(*) FROM bridge_transactions"
    messages_lock = await asyncpg.connect(index.database_url)
    try:
        async with ingest_held(index.database_url) as ingest:
            # Transaction A (alice typing: no message) is pushed and waits for the lock;
            # Synapse sends one transaction at a time, so what follows queues behind it.
            typing = {"typing": True, "timeout": 60000}
            await alice.request("PUT", f"/v3/rooms/{room_id}/typing/{alice.user_id}", typing)
            await wait_for(lambda: waiting_on(db, "advisory"), what="transaction A held")
            before_a = await db.fetchval(committed)
            # A message in a new Megolm session: its room key goes out as a to-device
            # message, then the message; both queue in Synapse behind A.
            sent = await element.room_send(
                room_id,
                "m.room.message",
                {"msgtype": "m.text", "body": "Vault, the combination is 1234"},
                ignore_unverified_devices=True,
            )
            event_id = str(sent.event_id)
            raw = await alice.request("GET", f"/v3/rooms/{room_id}/event/{event_id}")
            session_id = raw["content"]["session_id"]
            await wait_for(
                lambda: asyncio.to_thread(enqueued_for_appservice, e2e.synapse.workdir, event_id),
                what="the message queued for the bridge",
            )
            # The message's write will wait at the messages table; A passes (no message).
            await messages_lock.execute("BEGIN; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
            await ingest.execute("SELECT pg_advisory_unlock($1)", INGEST_LOCK_KEY)
        await wait_for(
            lambda: inbound_session(db, room_id, session_id), what="the room key committed"
        )
        await wait_for(lambda: waiting_on(db, "relation", "messages"), what="the write held")
        # Only A committed meanwhile: the key came in the transaction that holds the message
        # (a key on its own would have been a transaction committed before it).
        assert await db.fetchval(committed) == before_a + 1
        bridge.kill()
    finally:
        await messages_lock.close()  # the lock goes; so does the killed bridge's write
    await bridge.start()
    # Synapse resends the message without its to-device part: the stored key opens it.
    invoked = await wait_for(
        lambda: invocations(local_nats, event_id), timeout=60, what="Vault invoked"
    )
    assert [(p["agent_id"], p["entrypoint"]) for p in invoked] == [("agent:vault", "direct")]
    status, context = await call(
        e2e.appservice_port,
        "GET",
        "/internal/agents/agent:vault/context",
        TOKEN,
        channel_id=room_id,
        message_id=event_id,
    )
    assert status == 200, context
    assert context["message"]["text"] == "Vault, the combination is 1234"
    rows = "SELECT count(*) FROM messages WHERE matrix_event_id = $1"
    assert await db.fetchval(rows, event_id) == 1
    waiting = "SELECT count(*) FROM bridge_encrypted_waiting WHERE event_id = $1"
    assert await db.fetchval(waiting, event_id) == 0
    await asyncio.sleep(1)  # a second invocation still on its way would show up now
    assert len(await invocations(local_nats, event_id)) == 1
