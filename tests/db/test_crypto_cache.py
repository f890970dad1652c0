"""The crypto stores' cache (crypto/store.py) never shows what the tables no longer hold:
a better copy of a room key, a sender's changed devices, cross-signing keys and
signatures, written through any user's store, are seen by all at once; a rolled-back
transaction leaves nothing behind. Decrypting skips mautrix's write-back of the session
but keeps the replay check in the database: a replayed message is refused, also by a
fresh store after a restart. Real PostgreSQL, mautrix's crypto tables, real libolm."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import olm
import pytest
from mautrix.api import HTTPAPI
from mautrix.client import Client
from mautrix.crypto import InboundGroupSession
from mautrix.errors import DecryptionError, DuplicateMessageIndex
from mautrix.types import (
    CrossSigner,
    CrossSigningUsage,
    DeviceID,
    DeviceIdentity,
    EncryptedEvent,
    IdentityKey,
    RoomID,
    SessionID,
    SigningKey,
    TrustState,
    UserID,
)
from mautrix.util.async_db import Database
from yarl import URL

from daarion_bridge.crypto.outbound import RoomSettings
from daarion_bridge.crypto.service import open_crypto
from daarion_bridge.crypto.store import BridgeMachine, CachedCryptoStore, CryptoCache
from tests.db.conftest import make_config

BOT = "@daarion:localhost"
SOFIA = "@agent-sofia:localhost"
ALICE = UserID("@alice:localhost")
ALICE_DEVICE = DeviceID("ALICEDEVICE")
ROOM = RoomID("!room:localhost")
PICKLE_KEY = "k" * 32


@pytest.fixture
async def crypto_db(database_url: str, databases: tuple[Database, Database]) -> Database:
    async with aiohttp.ClientSession() as http:
        crypto = await open_crypto(database_url, databases[0], make_config(), http)
    return crypto.db


def store(db: Database, cache: CryptoCache, account: str = BOT) -> CachedCryptoStore:
    return CachedCryptoStore(account, PICKLE_KEY, db, cache)


class Alice:
    """A sender's device: its Olm account and a Megolm session in ROOM."""

    def __init__(self) -> None:
        self.account = olm.Account()
        self.identity_key = IdentityKey(self.account.identity_keys["curve25519"])
        self.signing_key = SigningKey(self.account.identity_keys["ed25519"])
        self.outbound = olm.OutboundGroupSession()
        self.session_key = self.outbound.session_key  # from index 0
        self.sent = 0

    def inbound(self, first_index: int = 0) -> InboundGroupSession:
        whole = olm.InboundGroupSession(self.session_key)
        return InboundGroupSession.import_session(
            whole.export_session(first_index),
            signing_key=self.signing_key,
            sender_key=self.identity_key,
            room_id=ROOM,
        )

    def device(self, trust: TrustState = TrustState.UNVERIFIED) -> DeviceIdentity:
        return DeviceIdentity(
            user_id=ALICE,
            device_id=ALICE_DEVICE,
            identity_key=self.identity_key,
            signing_key=self.signing_key,
            trust=trust,
            deleted=False,
            name="",
        )

    def message(self, text: str, event_id: str | None = None) -> dict[str, Any]:
        """The next message (its index is the count sent before)."""
        payload = {"room_id": ROOM, "type": "m.room.message", "content": {"body": text}}
        self.sent += 1
        return self.sealed(self.outbound.encrypt(json.dumps(payload)), event_id)

    def sealed(self, ciphertext: str, event_id: str | None = None) -> dict[str, Any]:
        return {
            "type": "m.room.encrypted",
            "room_id": ROOM,
            "event_id": event_id or f"$e{self.sent}",
            "sender": ALICE,
            "origin_server_ts": 1_700_000_000_000 + self.sent,
            "content": {
                "algorithm": "m.megolm.v1.aes-sha2",
                "sender_key": self.identity_key,
                "session_id": self.outbound.id,
                "device_id": ALICE_DEVICE,
                "ciphertext": ciphertext,
            },
        }


async def machine_for(db: Database, cache: CryptoCache, account: str = BOT) -> BridgeMachine:
    client = Client(
        mxid=UserID(account), device_id=DeviceID("DAARIONX"), api=HTTPAPI(URL("http://127.0.0.1:1"))
    )
    machine = BridgeMachine(client, store(db, cache, account), RoomSettings())
    await machine.load()
    return machine


async def cross_signed(alice: Alice, s: CachedCryptoStore) -> None:
    """Alice's device signed by her self-signing key, signed by her master key."""
    master, self_signing = SigningKey("M" * 43), SigningKey("S" * 43)
    await s.put_devices(ALICE, {ALICE_DEVICE: alice.device()})
    await s.put_cross_signing_key(ALICE, CrossSigningUsage.MASTER, master)
    await s.put_cross_signing_key(ALICE, CrossSigningUsage.SELF, self_signing)
    await s.put_signature(CrossSigner(ALICE, self_signing), CrossSigner(ALICE, master), "sig")
    await s.put_signature(
        CrossSigner(ALICE, alice.signing_key), CrossSigner(ALICE, self_signing), "sig"
    )


async def decrypt(machine: BridgeMachine, raw: dict[str, Any]) -> Any:
    return await machine.decrypt_megolm_event(EncryptedEvent.deserialize(raw))


async def test_a_better_copy_of_a_room_key_replaces_the_cached_one(crypto_db: Database) -> None:
    cache, alice = CryptoCache(), Alice()
    machine = await machine_for(crypto_db, cache)
    await cross_signed(alice, machine.crypto_store)  # type: ignore[arg-type]
    early = alice.message("sent before the key we first got")  # index 0
    later = alice.message("after it")  # index 1
    sid = SessionID(alice.outbound.id)
    await machine.crypto_store.put_group_session(ROOM, alice.identity_key, sid, alice.inbound(1))
    assert (await decrypt(machine, later)).content["body"] == "after it"  # cached now
    with pytest.raises(DecryptionError):
        await decrypt(machine, early)
    # The whole key comes (a forwarded or backed-up copy from index 0).
    await machine.crypto_store.put_group_session(ROOM, alice.identity_key, sid, alice.inbound(0))
    assert (await decrypt(machine, early)).content["body"] == "sent before the key we first got"
    session = await machine.crypto_store.get_group_session(ROOM, sid)
    assert session is not None and session.first_known_index == 0


async def test_the_replay_check_stays_in_the_database_and_the_session_is_not_rewritten(
    crypto_db: Database, pool: asyncpg.Pool
) -> None:
    cache, alice = CryptoCache(), Alice()
    machine = await machine_for(crypto_db, cache)
    await cross_signed(alice, machine.crypto_store)  # type: ignore[arg-type]
    sid = SessionID(alice.outbound.id)
    await machine.crypto_store.put_group_session(ROOM, alice.identity_key, sid, alice.inbound())
    stored = await pool.fetchrow(
        "SELECT session, ratchet_safety FROM crypto_megolm_inbound_session WHERE session_id = $1",
        sid,
    )
    first = alice.message("hello")
    opened = await decrypt(machine, first)
    assert opened.content["body"] == "hello"
    assert opened["mautrix"]["trust_state"] == TrustState.CROSS_SIGNED_TOFU
    assert (await decrypt(machine, first)).content["body"] == "hello"  # the same event again
    replay = alice.sealed(first["content"]["ciphertext"], event_id="$replayed")
    with pytest.raises(DuplicateMessageIndex):
        await decrypt(machine, replay)
    # After a restart: a new cache and store, the index still refuses it.
    restarted = await machine_for(crypto_db, CryptoCache())
    with pytest.raises(DuplicateMessageIndex):
        await decrypt(restarted, replay)
    assert await pool.fetchval("SELECT count(*) FROM crypto_message_index") == 1
    after = await pool.fetchrow(
        "SELECT session, ratchet_safety FROM crypto_megolm_inbound_session WHERE session_id = $1",
        sid,
    )
    assert after == stored  # no write-back per message
    # With mautrix's ratcheting on, its bookkeeping is written as before.
    restarted.ratchet_keys_on_decrypt = True
    assert (await decrypt(restarted, alice.message("more"))).content["body"] == "more"
    ratchet = await pool.fetchval(
        "SELECT ratchet_safety FROM crypto_megolm_inbound_session WHERE session_id = $1", sid
    )
    assert json.loads(ratchet)["next_index"] == 2


async def test_a_senders_changed_devices_are_seen_by_every_store(crypto_db: Database) -> None:
    cache, alice, alice_again = CryptoCache(), Alice(), Alice()
    bot, sofia = store(crypto_db, cache), store(crypto_db, cache, SOFIA)
    await bot.put_devices(ALICE, {ALICE_DEVICE: alice.device()})
    assert await bot.find_device_by_key(ALICE, alice.identity_key) == alice.device()
    # Alice's device got new keys; another user's store learnt it.
    await sofia.put_devices(ALICE, {ALICE_DEVICE: alice_again.device()})
    assert await bot.find_device_by_key(ALICE, alice.identity_key) is None
    assert await bot.find_device_by_key(ALICE, alice_again.identity_key) == alice_again.device()
    await sofia.put_devices(ALICE, {ALICE_DEVICE: alice_again.device(TrustState.BLACKLISTED)})
    found = await bot.find_device_by_key(ALICE, alice_again.identity_key)
    assert found is not None and found.trust == TrustState.BLACKLISTED


async def test_changed_cross_signing_keys_and_dropped_signatures_are_seen(
    crypto_db: Database,
) -> None:
    cache, alice = CryptoCache(), Alice()
    bot, sofia = store(crypto_db, cache), store(crypto_db, cache, SOFIA)
    await cross_signed(alice, bot)
    master = SigningKey("M" * 43)
    keys = await bot.get_cross_signing_keys(ALICE)
    assert keys[CrossSigningUsage.MASTER].key == master
    device = CrossSigner(ALICE, alice.signing_key)
    self_signing = CrossSigner(ALICE, SigningKey("S" * 43))
    assert await bot.is_key_signed_by(device, self_signing)
    # Alice reset her cross-signing: a new master key, the old self-signing key's
    # signatures dropped (what mautrix does when a queried key was replaced).
    await sofia.put_cross_signing_key(ALICE, CrossSigningUsage.MASTER, SigningKey("N" * 43))
    keys = await bot.get_cross_signing_keys(ALICE)
    assert keys[CrossSigningUsage.MASTER].key == SigningKey("N" * 43)
    assert await bot.is_key_signed_by(device, self_signing)  # cached again
    await sofia.drop_signatures_by_key(self_signing)
    assert not await bot.is_key_signed_by(device, self_signing)


async def test_a_rolled_back_transaction_leaves_nothing_in_the_cache(crypto_db: Database) -> None:
    cache = CryptoCache()
    bot = store(crypto_db, cache)

    class Failed(Exception):
        pass

    with pytest.raises(Failed):
        async with bot.transaction():
            await bot.put_cross_signing_key(ALICE, CrossSigningUsage.MASTER, SigningKey("M" * 43))
            assert await bot.get_cross_signing_keys(ALICE)  # read inside: not committed
            raise Failed
    assert await bot.get_cross_signing_keys(ALICE) == {}


@pytest.fixture
async def pruned_room(crypto_db: Database) -> AsyncIterator[tuple[CryptoCache, Alice]]:
    cache, alice = CryptoCache(), Alice()
    machine = await machine_for(crypto_db, cache)
    await cross_signed(alice, machine.crypto_store)  # type: ignore[arg-type]
    sid = SessionID(alice.outbound.id)
    await machine.crypto_store.put_group_session(ROOM, alice.identity_key, sid, alice.inbound())
    assert await machine.crypto_store.get_group_session(ROOM, sid) is not None
    yield cache, alice


async def test_the_cache_names_the_account_holding_a_session(
    pruned_room: tuple[CryptoCache, Alice],
) -> None:
    cache, alice = pruned_room
    assert cache.holder(ROOM, alice.outbound.id) == BOT
    cache.forget_sessions()  # what the pruning of rooms calls
    assert cache.holder(ROOM, alice.outbound.id) is None
