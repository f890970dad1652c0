"""Encrypted rooms, the way Element makes them, with a real end-to-end-encrypting client
(matrix-nio with vodozemac) playing the person; real Synapse with the MSC2409/MSC3202
flags, real PostgreSQL, real NATS, the bridge process.

- Each agent has a device of its own, with keys, signed by the agent's self-signing key.
- A mention in an encrypted room invokes the agent, while the index keeps `[encrypted]`.
- A message whose room key comes one transaction later: `[encrypted]` and no invocation
  first, the invocation once the key arrives.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from nio import AsyncClient, AsyncClientConfig, RoomCreateResponse

from tests.e2e.agents_helpers import wait_membership
from tests.e2e.helpers import OwnIndex, Person, own_fixtures, own_index, stream_events, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

D = "localhost"
# An agent of this module only: every module's bridge (a database of its own) gives the
# agents it declares a device, and this module counts the agent's devices.
SOFIA = f"@agent-cipher:{D}"
STREAM = "E2EENCRYPTION"
PREFIX = "enc."
MEGOLM = "m.megolm.v1.aes-sha2"

own = own_fixtures("encryption", index="index")
local_nats, db, bridge = own.nats, own.db, own.bridge


@pytest.fixture(scope="module")
async def index(e2e, pg_server_url, local_nats) -> OwnIndex:
    owner = "@enc.alice:localhost"

    def edit(cfg: Any) -> None:
        cfg["nats"] = {"url": local_nats.url, "stream": STREAM, "subject_prefix": PREFIX}
        cfg["microdaos"] = [{"external_id": "microdao:enc", "name": "Enc", "owner": owner}]
        cfg["blueprints"] = [{"code": "enc_guide", "model": "demo"}]
        cfg["agents"] = [
            {"external_id": "agent:cipher", "name": "Cipher", "kind": "assistant",
             "blueprint": "enc_guide", "microdao": "microdao:enc", "owner": owner},
        ]  # fmt: skip

    return await own_index(e2e, pg_server_url, "encryption", edit)


@pytest.fixture(scope="module")
async def alice(people) -> Person:
    return await people("enc.alice")


@pytest.fixture(scope="module")
async def element(alice: Person, bridge, tmp_path_factory) -> AsyncIterator[AsyncClient]:
    """Alice's end-to-end-encrypting client, logged in on her account's device."""
    store = tmp_path_factory.mktemp("nio-store")
    whoami = await alice.request("GET", "/v3/account/whoami")
    client = AsyncClient(
        alice.base_url,
        alice.user_id,
        device_id=whoami["device_id"],
        store_path=str(store),
        config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True),
    )
    client.restore_login(alice.user_id, whoami["device_id"], alice.token)
    if client.should_upload_keys:
        await client.keys_upload()
    await client.sync(timeout=0, full_state=True)
    try:
        yield client
    finally:
        await client.close()


async def encrypted_room_with_sofia(alice: Person, element: AsyncClient) -> str:
    """As Element's "New room" does: private, m.room.encryption in the initial state."""
    created = await element.room_create(
        name=f"enc {uuid.uuid4().hex[:6]}",
        initial_state=[
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}
        ],
    )
    assert isinstance(created, RoomCreateResponse), created
    room_id = created.room_id
    await alice.invite(room_id, SOFIA)
    await wait_membership(alice, room_id, SOFIA, "join")
    await element.sync(timeout=0, full_state=True)
    await element.joined_members(room_id)
    if element.should_query_keys:
        await element.keys_query()
    return room_id


async def invocations(server: Any, event_id: str) -> list[dict[str, Any]]:
    found = await stream_events(server.url, STREAM, PREFIX + "router.invoke.agent")
    return [p for p in found if p["payload"]["matrix_event_id"] == event_id]


async def preview(db: asyncpg.Pool, event_id: str) -> str:
    sql = "SELECT content_preview FROM messages WHERE matrix_event_id = $1"
    return await wait_for(lambda: db.fetchval(sql, event_id), what=f"{event_id} indexed")


async def test_each_agent_has_its_own_cross_signed_device(alice, bridge) -> None:
    keys = await alice.request("POST", "/v3/keys/query", {"device_keys": {SOFIA: []}})
    devices = keys["device_keys"].get(SOFIA, {})
    assert len(devices) == 1, devices
    ((device_id, device),) = devices.items()
    assert device_id.startswith("DAARION")
    assert {f"curve25519:{device_id}", f"ed25519:{device_id}"} <= set(device["keys"])
    assert MEGOLM in device["algorithms"]
    self_signing = keys["self_signing_keys"][SOFIA]
    assert self_signing["usage"] == ["self_signing"]
    (ssk_id,) = self_signing["keys"]
    assert ssk_id in device["signatures"][SOFIA], "the device is signed by its owner's key"
    assert SOFIA in keys["master_keys"]


async def test_mention_in_encrypted_room_invokes_agent_index_keeps_encrypted(
    alice, element, local_nats, db
) -> None:
    room_id = await encrypted_room_with_sofia(alice, element)
    sent = await element.room_send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": "Sofia, help me with the secret plan"},
        ignore_unverified_devices=True,
    )
    event_id = sent.event_id
    raw = await alice.request("GET", f"/v3/rooms/{room_id}/event/{event_id}")
    assert raw["type"] == "m.room.encrypted"  # what the bridge receives
    invoked = await wait_for(
        lambda: invocations(local_nats, event_id), timeout=30, what="Sofia invoked"
    )
    assert [(p["agent_id"], p["entrypoint"]) for p in invoked] == [("agent:cipher", "direct")]
    assert await preview(db, event_id) == "[encrypted]"  # plaintext_previews: false


async def test_key_arriving_one_transaction_after_its_message(
    alice, element, local_nats, db, index: OwnIndex
) -> None:
    room_id = await encrypted_room_with_sofia(alice, element)
    olm = element.olm
    assert olm is not None
    # The message goes out before its session is shared with anyone.
    olm.create_outbound_group_session(room_id)
    session = olm.outbound_group_sessions[room_id]
    key_at_zero = session.session_key  # what a sender shares before its first message
    session.shared = True  # nio encrypts only with a shared session; it is not, yet
    content = olm.group_encrypt(
        room_id,
        {"type": "m.room.message", "content": {"msgtype": "m.text", "body": "Sofia, late"}},
    )
    session.shared = False
    # Shared below, it must still open the message (index 0), as a sender's late key does.
    session.__class__ = type(
        "KeyFromIndexZero", (type(session),), {"session_key": property(lambda _: key_at_zero)}
    )
    txn = uuid.uuid4().hex
    event_id = (
        await alice.request("PUT", f"/v3/rooms/{room_id}/send/m.room.encrypted/{txn}", content)
    )["event_id"]
    assert await preview(db, event_id) == "[encrypted]"
    waiting = "SELECT count(*) FROM bridge_encrypted_waiting WHERE event_id = $1"
    assert await db.fetchval(waiting, event_id) == 1
    assert await invocations(local_nats, event_id) == []
    # Now the key, in a to-device message: a later transaction.
    await element.share_group_session(room_id, ignore_unverified_devices=True)
    invoked = await wait_for(
        lambda: invocations(local_nats, event_id), timeout=30, what="Sofia invoked late"
    )
    assert [(p["agent_id"], p["entrypoint"]) for p in invoked] == [("agent:cipher", "direct")]
    assert await db.fetchval(waiting, event_id) == 0
    assert await preview(db, event_id) == "[encrypted]"
    log = await asyncio.to_thread(Path(index.log_file).read_text, encoding="utf-8")
    assert "secret plan" not in log and "Sofia, late" not in log  # no plaintext logged
