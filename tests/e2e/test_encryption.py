"""Encrypted rooms, the way Element makes them, with a real end-to-end-encrypting client
(matrix-nio with vodozemac) playing the person; real Synapse with the MSC2409/MSC3202
flags, real PostgreSQL, real NATS, the bridge process.

- Each agent has a device of its own, with keys, signed by the agent's self-signing key.
- A mention in an encrypted room invokes the agent, while the index keeps `[encrypted]`.
- A message whose room key comes one transaction later: `[encrypted]` and no invocation
  first, the invocation once the key arrives.
- An agent's answer (the post endpoint) arrives as `m.room.encrypted`, nio decrypts it,
  and its session comes from the agent's own device, signed by the agent's self-signing
  key; m.mentions and the reply stay; the index keeps `[encrypted]`.
- `!daarion help` in an encrypted room: the bot answers encrypted, from its own device.
- After a bridge restart the agent answers with the same session, and nio decrypts it;
  a person's message after it still invokes the agent (last: it restarts the bridge).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from mautrix.crypto.signature import verify_signature_json
from mautrix.types import SigningKey, UserID
from nio import AsyncClient, EncryptionError, MegolmEvent, RoomKeyRequest

from daarion_bridge.devtools.synapse import free_port
from tests.e2e.encryption_helpers import MEGOLM, encrypted_room_with, nio_on_device
from tests.e2e.helpers import OwnIndex, Person, own_fixtures, own_index, stream_events, wait_for
from tests.e2e.runtime_helpers import TOKEN, call

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

D = "localhost"

# "Sofia" of this module only (agent:cipher): every module's bridge (a database of its
# own) gives the agents it declares a device, and this module counts the agent's devices.
SOFIA = f"@agent-cipher:{D}"
STREAM = "E2EENCRYPTION"
PREFIX = "enc."

METRICS_PORT = free_port()
own = own_fixtures("encryption", index="index")
local_nats, db, bridge = own.nats, own.db, own.bridge


@pytest.fixture(scope="module")
async def index(e2e, pg_server_url, local_nats) -> OwnIndex:
    owner = "@enc.alice:localhost"

    def edit(cfg: Any) -> None:
        cfg["nats"] = {"url": local_nats.url, "stream": STREAM, "subject_prefix": PREFIX}
        cfg["api"] = {"service_token": TOKEN, "agent_messages_per_hour": 50}
        cfg["bridge"]["permissions"] = {owner: "user"}
        cfg["metrics"] = {"enabled": True, "listen": f"127.0.0.1:{METRICS_PORT}"}
        cfg["microdaos"] = [{"external_id": "microdao:enc", "name": "Enc", "owner": owner}]
        cfg["blueprints"] = [{"code": "enc_guide", "model": "demo"}]
        cfg["agents"] = [
            {"external_id": "agent:cipher", "name": "Sofia", "kind": "assistant",
             "blueprint": "enc_guide", "microdao": "microdao:enc", "owner": owner},
        ]  # fmt: skip

    return await own_index(e2e, pg_server_url, "encryption", edit)


@pytest.fixture(scope="module")
async def alice(people) -> Person:
    return await people("enc.alice")


@pytest.fixture(scope="module")
async def element(alice: Person, bridge, tmp_path_factory) -> AsyncIterator[AsyncClient]:
    """Alice's end-to-end-encrypting client, logged in on her account's device."""
    client = await nio_on_device(alice, tmp_path_factory.mktemp("nio-store"))
    try:
        yield client
    finally:
        await client.close()


async def encrypted_room_with_sofia(
    alice: Person, element: AsyncClient, who: str = SOFIA, **encryption: Any
) -> str:
    return await encrypted_room_with(alice, element, who, **encryption)


async def metrics() -> dict[str, float]:
    """The bridge's Prometheus metrics, sample line -> value."""
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        text = await resp.text()
    samples = (line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    return {name: float(value) for name, value in samples}


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


async def send_before_its_key(alice: Person, element: AsyncClient, room_id: str, text: str) -> str:
    """A message sent before its session is shared with anyone (a sender's key that
    comes late); element.share_group_session(room_id) sends the key, in a later
    transaction, and it still opens the message (from index 0)."""
    olm = element.olm
    assert olm is not None
    olm.create_outbound_group_session(room_id)
    session = olm.outbound_group_sessions[room_id]
    key_at_zero = session.session_key  # what a sender shares before its first message
    session.shared = True  # nio encrypts only with a shared session; it is not, yet
    content = olm.group_encrypt(
        room_id, {"type": "m.room.message", "content": {"msgtype": "m.text", "body": text}}
    )
    session.shared = False
    session.__class__ = type(
        "KeyFromIndexZero", (type(session),), {"session_key": property(lambda _: key_at_zero)}
    )
    txn = uuid.uuid4().hex
    path = f"/v3/rooms/{room_id}/send/m.room.encrypted/{txn}"
    return str((await alice.request("PUT", path, content))["event_id"])


async def test_key_arriving_one_transaction_after_its_message(
    alice, element, local_nats, db, index: OwnIndex
) -> None:
    room_id = await encrypted_room_with_sofia(alice, element)
    event_id = await send_before_its_key(alice, element, room_id, "Sofia, late")
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
    scraped = await metrics()
    assert scraped['daarion_bridge_decrypt_failures_total{reason="no_key"}'] >= 1
    assert scraped["daarion_bridge_messages_waiting_for_keys"] == 0  # it came
    otks = [v for k, v in scraped.items() if k.startswith("daarion_bridge_one_time_keys{")]
    assert len(otks) == 2 and all(v > 0 for v in otks)  # the bot's device and Sofia's
    log = await asyncio.to_thread(Path(index.log_file).read_text, encoding="utf-8")
    assert "secret plan" not in log and "Sofia, late" not in log  # no plaintext logged


async def key_request_for(element: AsyncClient, session_id: str) -> RoomKeyRequest | None:
    response = await element.sync(timeout=1000)
    for event in getattr(response, "to_device_events", []):
        if isinstance(event, RoomKeyRequest) and event.session_id == session_id:
            return event
    return None


async def test_a_room_key_that_never_came_is_asked_for_again(
    alice, element, local_nats, db
) -> None:
    """The key of a message is lost on the way (as when the homeserver drops to-device
    messages for an appservice it counts as down): after a while the bridge asks the
    sender's devices for it (m.room_key_request from Sofia's device), the person's
    client forwards it as Element does for a device it had shared it with, and the
    message is decrypted and acted on then."""
    room_id = await encrypted_room_with_sofia(alice, element)
    event_id = await send_before_its_key(alice, element, room_id, "Sofia, lost key")
    olm = element.olm
    assert olm is not None
    session_id = olm.outbound_group_sessions[room_id].id
    request = await wait_for(
        lambda: key_request_for(element, session_id), timeout=90, what="the key request"
    )
    assert (request.sender, request.room_id) == (SOFIA, room_id)
    assert await invocations(local_nats, event_id) == []  # nothing acted on it yet
    # Answered as Element answers a device it had shared the session with: forwarded
    # over Olm to the device that asked.
    if element.should_query_keys:
        await element.keys_query()
    device = olm.device_store[SOFIA][request.requesting_device_id]
    missing = olm.get_missing_sessions([SOFIA])
    if missing:
        await element.keys_claim(missing)
    own_key = olm.account.identity_keys["curve25519"]
    group_session = olm.inbound_group_store.get(room_id, own_key, session_id)
    olm_session = olm.session_store.get(device.curve25519)
    forwarded = olm._encrypt_forwarding_key(room_id, group_session, olm_session, device)
    await element.to_device(forwarded)
    invoked = await wait_for(
        lambda: invocations(local_nats, event_id), timeout=30, what="Sofia invoked at last"
    )
    assert [(p["agent_id"], p["entrypoint"]) for p in invoked] == [("agent:cipher", "direct")]
    waiting = "SELECT count(*) FROM bridge_encrypted_waiting WHERE event_id = $1"
    assert await db.fetchval(waiting, event_id) == 0


# -- answers: encrypted with the sender's own device ---------------------------------------


async def agent_posts(e2e: Any, room_id: str, body: dict[str, Any]) -> str:
    status, answer = await call(
        e2e.appservice_port,
        "POST",
        "/internal/agents/agent:cipher/post-to-channel",
        TOKEN,
        {"channel_id": room_id} | body,
    )
    assert status == 200, answer
    return str(answer["matrix_event_id"])


async def decrypted(element: AsyncClient, raw: dict[str, Any]) -> Any:
    """The event as nio decrypts it, once the room key has reached nio's device."""
    event = MegolmEvent.from_dict(raw)
    assert isinstance(event, MegolmEvent), event

    async def attempt() -> Any:
        await element.sync(timeout=500)
        try:
            return element.decrypt_event(event)
        except EncryptionError:
            return None

    return await wait_for(attempt, timeout=30, what=f"nio decrypts {raw['event_id']}")


async def sending_device(alice: Person, element: AsyncClient, user_id: str, event: Any) -> str:
    """The device of `user_id` whose keys made the event's Megolm session, checked with
    /keys/query: its curve25519 key sent the session over Olm, its ed25519 key signed the
    session, and the user's self-signing key signed the device."""
    keys = await alice.request("POST", "/v3/keys/query", {"device_keys": {user_id: []}})
    devices = keys["device_keys"][user_id]
    (device_id,) = [
        d for d, dev in devices.items() if dev["keys"][f"curve25519:{d}"] == event.sender_key
    ]
    device = devices[device_id]
    olm = element.olm
    assert olm is not None
    session = olm.inbound_group_store.get(event.room_id, event.sender_key, event.session_id)
    assert session is not None and session.ed25519 == device["keys"][f"ed25519:{device_id}"]
    ((ssk_id, ssk),) = keys["self_signing_keys"][user_id]["keys"].items()
    uid = UserID(user_id)
    assert verify_signature_json(device, uid, ssk_id.removeprefix("ed25519:"), SigningKey(ssk))
    return device_id


async def mention_sofia(element: AsyncClient, server: Any, room_id: str, text: str) -> str:
    """Send an encrypted mention of Sofia; its id once Sofia is invoked."""
    sent = await element.room_send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": text},
        ignore_unverified_devices=True,
    )
    event_id = str(sent.event_id)
    await wait_for(lambda: invocations(server, event_id), timeout=30, what="Sofia invoked")
    return event_id


ROOMS: dict[str, str] = {}  # what the restart test reuses


async def test_agents_answer_is_encrypted_by_the_agents_own_device(
    e2e, alice, element, local_nats, db
) -> None:
    room_id = ROOMS["answered"] = await encrypted_room_with_sofia(alice, element)
    asked = await mention_sofia(element, local_nats, room_id, "Sofia, what is the plan?")
    # The runtime reads the question, decrypted, through the context endpoint.
    status, context = await call(
        e2e.appservice_port,
        "GET",
        "/internal/agents/agent:cipher/context",
        TOKEN,
        channel_id=room_id,
        message_id=asked,
    )
    assert status == 200, context
    assert context["message"]["text"] == "Sofia, what is the plan?"
    answer_id = await agent_posts(
        e2e,
        room_id,
        {
            "text": "The plan stays between us",
            "reply_to": asked,
            "mentions": [alice.user_id],
            "txn_id": "answer-1",
        },
    )
    raw = await alice.request("GET", f"/v3/rooms/{room_id}/event/{answer_id}")
    assert raw["type"] == "m.room.encrypted" and raw["sender"] == SOFIA
    assert "plan" not in str(raw["content"]).lower()
    # The reply relation stays in the clear, as clients expect.
    assert raw["content"]["m.relates_to"]["m.in_reply_to"] == {"event_id": asked}
    event = await decrypted(element, raw)
    assert event.source["content"]["body"] == "The plan stays between us"
    assert event.source["content"]["msgtype"] == "m.notice"
    assert event.source["content"]["m.mentions"] == {"user_ids": [alice.user_id]}
    device_id = await sending_device(alice, element, SOFIA, event)
    assert device_id.startswith("DAARION")
    assert raw["content"]["device_id"] == device_id
    assert await preview(db, answer_id) == "[encrypted]"  # indexed, plaintext_previews off


async def ask_bot(e2e: Any, alice: Person, element: AsyncClient, room_id: str, text: str) -> Any:
    """Send a command, encrypted; the bot's answer (checked encrypted) as nio decrypts it."""
    command = await element.room_send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": text},
        ignore_unverified_devices=True,
    )
    replied = {"event_id": command.event_id}

    async def bots_answer() -> dict[str, Any] | None:
        for raw in await alice.history(room_id):
            relation = raw.get("content", {}).get("m.relates_to", {})
            if raw.get("sender") == e2e.bot and relation.get("m.in_reply_to") == replied:
                return raw
        return None

    raw = await wait_for(bots_answer, timeout=30, what="the bot's answer")
    assert raw["type"] == "m.room.encrypted"
    return await decrypted(element, raw)


async def test_bot_answers_encrypted_from_its_own_device(e2e, alice, element) -> None:
    room_id = await encrypted_room_with_sofia(alice, element, e2e.bot)
    event = await ask_bot(e2e, alice, element, room_id, "!daarion help")
    assert event.source["content"]["body"].startswith("!daarion commands you may use (user):")
    await sending_device(alice, element, e2e.bot, event)
    # The status says encryption is on and working: every device made, key counts come.
    status = await ask_bot(e2e, alice, element, room_id, "!daarion status")
    (line,) = [x for x in status.source["content"]["body"].splitlines() if "Encryption" in x]
    assert line.startswith("  Encryption: on: 2 of 2 devices ready; key counts arrive;"), line


async def outbound_gone(db: asyncpg.Pool, room_id: str) -> bool:
    """Sofia's outgoing session in the room is dropped: her next message starts one."""
    sql = (
        "SELECT count(*) FROM crypto_megolm_outbound_session WHERE account_id = $1 AND room_id = $2"
    )
    return await db.fetchval(sql, SOFIA, room_id) == 0


async def session_of(alice: Person, room_id: str, event_id: str) -> str:
    raw = await alice.request("GET", f"/v3/rooms/{room_id}/event/{event_id}")
    assert raw["type"] == "m.room.encrypted"
    return str(raw["content"]["session_id"])


async def test_room_keys_rotate_as_the_rooms_encryption_says(e2e, alice, element) -> None:
    room_id = await encrypted_room_with_sofia(alice, element, rotation_period_msgs=2)
    sessions = [
        await session_of(alice, room_id, await agent_posts(e2e, room_id, {"text": f"n{i}"}))
        for i in range(3)
    ]
    assert sessions[0] == sessions[1] != sessions[2]


async def test_a_member_leaving_rotates_the_agents_room_key(e2e, alice, element, people, db):
    room_id = await encrypted_room_with_sofia(alice, element)
    first = await session_of(alice, room_id, await agent_posts(e2e, room_id, {"text": "one"}))
    bob = await people("enc.bob")
    await alice.invite(room_id, bob.user_id)
    await bob.join(room_id)
    await wait_for(lambda: outbound_gone(db, room_id), timeout=30, what="rotation on join")
    second = await session_of(alice, room_id, await agent_posts(e2e, room_id, {"text": "two"}))
    assert second != first  # bob came: a new session, shared with him too
    await bob.leave(room_id)
    await wait_for(lambda: outbound_gone(db, room_id), timeout=30, what="rotation on leave")
    third = await session_of(alice, room_id, await agent_posts(e2e, room_id, {"text": "3"}))
    assert third not in (first, second)  # bob left: he gets no key to what follows


async def test_a_new_device_of_a_member_reads_the_next_answer(
    e2e, alice, element, people, db, tmp_path
) -> None:
    room_id = await encrypted_room_with_sofia(alice, element)
    before = await session_of(alice, room_id, await agent_posts(e2e, room_id, {"text": "a"}))
    # Alice logs in on a second device (a new Element session) and uploads its keys.
    (store := tmp_path / "nio-second").mkdir()
    second = await nio_on_device(await people("enc.alice"), store)
    try:
        await wait_for(lambda: outbound_gone(db, room_id), timeout=30, what="device change")
        answer_id = await agent_posts(e2e, room_id, {"text": "for every device"})
        raw = await alice.request("GET", f"/v3/rooms/{room_id}/event/{answer_id}")
        assert raw["content"]["session_id"] != before
        event = await decrypted(second, raw)
        assert event.source["content"]["body"] == "for every device"
    finally:
        await second.close()


async def test_restart_keeps_every_session(e2e, alice, element, local_nats, bridge) -> None:
    """Last in the module: it restarts the bridge."""
    room_id = ROOMS["answered"]
    before = await session_of(alice, room_id, await agent_posts(e2e, room_id, {"text": "hi"}))
    await bridge.restart()
    answer_id = await agent_posts(e2e, room_id, {"text": "Still here", "txn_id": "answer-2"})
    raw = await alice.request("GET", f"/v3/rooms/{room_id}/event/{answer_id}")
    assert raw["type"] == "m.room.encrypted"
    event = await decrypted(element, raw)
    assert event.source["content"]["body"] == "Still here"
    assert event.session_id == before  # the same outbound session, kept
    # The person's session with the agent survived too: a mention still invokes it.
    await mention_sofia(element, local_nats, room_id, "Sofia, once more")
