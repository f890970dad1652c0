"""Encrypted rooms under faults: a room key must survive whatever happens to the
transaction that brought it. Synapse sends a failed transaction again WITHOUT its
to-device messages (its recoverer rebuilds it from the events alone), so a key it
carried exists only where the bridge committed it.

- SIGKILL between the crypto commit and the index write: the key and the message in one
  transaction; the bridge's index write held back by a lock this test holds; the key
  committed; the bridge killed. After the restart Synapse resends the message alone: it
  is decrypted, indexed once and invokes the agent once.
- The database down when the transaction with a room key and its message comes: the key
  is spooled to disk and the transaction waits for the database instead of failing
  (a failure would put the bridge in Synapse's recovery, where to-device messages are
  dropped); once the database is back the key is stored, the message decrypted, indexed
  once and the agent invoked once; no 5xx was answered.

The module's index is on a PostgreSQL of its own, which the outage test stops.

Real Synapse with the MSC2409/MSC3202 flags, real PostgreSQL, real NATS, the bridge
process; matrix-nio with vodozemac plays the person.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from nio import AsyncClient

from daarion_bridge.db.bookkeeping import INGEST_LOCK_KEY
from tests.e2e import test_faults_database
from tests.e2e.encryption_helpers import encrypted_room_with, nio_on_device
from tests.e2e.helpers import OwnIndex, Person, own_fixtures, own_index, stream_events, wait_for
from tests.e2e.runtime_helpers import TOKEN, call
from tests.e2e.test_faults_database import read_from

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

D = "localhost"
# This module's own agent (agent:vault): no other module's bridge gives it a device.
VAULT = f"@agent-vault:{D}"
STREAM = "E2EENCFAULTS"
PREFIX = "encf."

own = own_fixtures("encryption_faults", index="index")
local_nats, db, bridge = own.nats, own.db, own.bridge
own_pg = test_faults_database.own_pg  # a PostgreSQL of the module's own, to stop


@pytest.fixture(scope="module")
def spool_file(e2e) -> Path:
    return Path(e2e.workdir / "crypto-spool-encryption-faults.jsonl")


@pytest.fixture(scope="module")
async def index(e2e, own_pg, local_nats, spool_file) -> OwnIndex:
    owner = "@encf.alice:localhost"

    def edit(cfg: Any) -> None:
        cfg["bridge"].setdefault("encryption", {})["spool_file"] = str(spool_file)
        cfg["nats"] = {"url": local_nats.url, "stream": STREAM, "subject_prefix": PREFIX}
        cfg["api"] = {"service_token": TOKEN, "agent_messages_per_hour": 50}
        cfg["bridge"]["permissions"] = {owner: "user"}
        cfg["microdaos"] = [{"external_id": "microdao:encf", "name": "EncF", "owner": owner}]
        cfg["blueprints"] = [{"code": "encf_guide", "model": "demo"}]
        cfg["agents"] = [
            {"external_id": "agent:vault", "name": "Vault", "kind": "assistant",
             "blueprint": "encf_guide", "microdao": "microdao:encf", "owner": owner},
        ]  # fmt: skip

    return await own_index(e2e, await own_pg.start(), "encryption_faults", edit)


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


@dataclass
class Pushed:
    """A message in a new Megolm session, pushed in one transaction with its room key,
    that transaction stopped at the lock on `table` this test holds."""

    room_id: str
    event_id: str
    session_id: str
    committed_before: int  # bridge_transactions rows before the transaction ahead of it


@contextlib.asynccontextmanager
async def key_and_message_held_at(
    table: str, e2e: Any, index: OwnIndex, db: asyncpg.Pool, alice: Person,
    element: AsyncClient, text: str,
) -> AsyncIterator[Pushed]:  # fmt: skip
    """The key and its message in one transaction: a transaction A ahead of them (alice
    typing: no message, no key) waits at the bridge's ingest lock, held here, while both
    queue in Synapse behind it (Synapse sends one transaction at a time); then the lock
    on `table` is taken and A let through. Left with the lock on `table` released."""
    room_id = await encrypted_room_with(alice, element, VAULT)
    table_lock = await asyncpg.connect(index.database_url)
    ingest = await asyncpg.connect(index.database_url)
    try:
        await ingest.execute("SELECT pg_advisory_lock($1)", INGEST_LOCK_KEY)
        typing = {"typing": True, "timeout": 60000}
        await alice.request("PUT", f"/v3/rooms/{room_id}/typing/{alice.user_id}", typing)
        await wait_for(lambda: waiting_on(db, "advisory"), what="transaction A held")
        before = await db.fetchval("SELECT count(*) FROM bridge_transactions")
        # A new room: nio starts a Megolm session, its key goes out as a to-device message.
        content = {"msgtype": "m.text", "body": text}
        sent = await element.room_send(
            room_id, "m.room.message", content, ignore_unverified_devices=True
        )
        event_id = str(sent.event_id)
        raw = await alice.request("GET", f"/v3/rooms/{room_id}/event/{event_id}")
        await wait_for(
            lambda: asyncio.to_thread(enqueued_for_appservice, e2e.synapse.workdir, event_id),
            what="the message queued for the bridge",
        )
        await table_lock.execute(f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        await ingest.execute("SELECT pg_advisory_unlock($1)", INGEST_LOCK_KEY)
        await wait_for(lambda: waiting_on(db, "relation", table), what=f"held at {table}")
        yield Pushed(room_id, event_id, raw["content"]["session_id"], before)
    finally:
        for conn in (ingest, table_lock):
            with contextlib.suppress(Exception):  # gone with a stopped server
                await conn.close()


async def assert_read_once(
    e2e: Any, db: asyncpg.Pool, server: Any, pushed: Pushed, text: str
) -> None:
    """The message decrypted: one row, nothing waiting, the context endpoint gives its
    text, the agent invoked once."""
    event_id = pushed.event_id
    invoked = await wait_for(lambda: invocations(server, event_id), timeout=60, what="invoked")
    assert [(p["agent_id"], p["entrypoint"]) for p in invoked] == [("agent:vault", "direct")]
    status, context = await call(
        e2e.appservice_port,
        "GET",
        "/internal/agents/agent:vault/context",
        TOKEN,
        channel_id=pushed.room_id,
        message_id=event_id,
    )
    assert status == 200, context
    assert context["message"]["text"] == text
    rows = "SELECT count(*) FROM messages WHERE matrix_event_id = $1"
    assert await db.fetchval(rows, event_id) == 1
    waiting = "SELECT count(*) FROM bridge_encrypted_waiting WHERE event_id = $1"
    assert await db.fetchval(waiting, event_id) == 0
    await asyncio.sleep(1)  # a second invocation still on its way would show up now
    assert len(await invocations(server, event_id)) == 1


async def test_sigkill_between_crypto_commit_and_index_write_loses_no_key(
    e2e, index: OwnIndex, alice, element, bridge, local_nats, db
) -> None:
    text = "Vault, the combination is 1234"
    async with key_and_message_held_at("messages", e2e, index, db, alice, element, text) as m:
        await wait_for(
            lambda: inbound_session(db, m.room_id, m.session_id), what="the room key committed"
        )
        # Only A committed meanwhile: the key came in the transaction that holds the message
        # (a key on its own would have been a transaction committed before it).
        assert await db.fetchval("SELECT count(*) FROM bridge_transactions") == (
            m.committed_before + 1
        )
        bridge.kill()
    await bridge.start()
    # Synapse resends the message without its to-device part: the stored key opens it.
    await assert_read_once(e2e, db, local_nats, m, text)


def spooled_keys(spool_file: Path) -> list[dict[str, Any]]:
    """The to-device messages the bridge spooled, as they came."""
    if not spool_file.exists():
        return []
    lines = spool_file.read_text(encoding="utf-8").splitlines()
    return [raw for line in lines for raw in json.loads(line)["to_device"]]


async def test_database_down_when_a_room_key_and_its_message_come(
    e2e, index: OwnIndex, alice, element, bridge, local_nats, db, own_pg, spool_file
) -> None:
    text = "Vault, the new code is 5678"
    log_offset = index.log_file.stat().st_size
    # The key's transaction stops at its first crypto statement (the Olm session the key
    # came over); then the database goes: its connections die, the key not stored.
    async with key_and_message_held_at(
        "crypto_olm_session", e2e, index, db, alice, element, text
    ) as m:
        await own_pg.stop()
    spooled = await wait_for(
        lambda: asyncio.to_thread(spooled_keys, spool_file), what="the room key spooled"
    )
    assert [(r["to_user_id"], r["type"]) for r in spooled] == [(VAULT, "m.room.encrypted")]
    assert "5678" not in spool_file.read_text(encoding="utf-8")  # Olm-encrypted as it came
    assert bridge.running
    await own_pg.start()
    await db.expire_connections()
    await assert_read_once(e2e, db, local_nats, m, text)
    assert not spool_file.exists()  # stored, the spool emptied
    log = read_from(index.log_file, log_offset)
    assert "not committed" not in log, "the transaction waited; nothing was answered 5xx"
    assert "5678" not in log
