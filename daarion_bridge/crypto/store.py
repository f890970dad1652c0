"""mautrix's PostgreSQL crypto store with the lookups that decrypting a message repeats
kept in memory: the room's inbound session (unpickled once, not per message), the
sender's device, its cross-signing keys and the signatures that make it trusted.

The cache is one per Crypto, shared by every user's store: the device tables have no
account column, so a write through any store must be seen by all. Every write path of
the cached data drops what it touches (after the write, and again when a store
transaction ends, since a transaction's reads and writes share its connection and may
be rolled back); a read started before a drop never fills the cache (`generation`).
Nothing else in this process writes these tables but mautrix through these stores and
the bridge's own pruning, which calls `forget_sessions`; what another bridge on the same
database writes is seen once the entry's time (KEPT_SECONDS) is up.

Only what exists is kept: a missing device, missing cross-signing keys and a missing
signature are asked of the database each time, so whatever adds them is seen at once.
The replay check (crypto_message_index) is never cached: every message's index is
written and checked in the database before it counts as decrypted."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

from mautrix.crypto import InboundGroupSession, OlmMachine, PgCryptoStore
from mautrix.types import (
    CrossSigner,
    CrossSigningUsage,
    DeviceID,
    DeviceIdentity,
    IdentityKey,
    RoomID,
    SessionID,
    SigningKey,
    TOFUSigningKey,
    UserID,
)
from mautrix.util.async_db import Database

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

SESSIONS_KEPT = 4096
DEVICES_KEPT = 8192
# How long an entry is used before it is read again: what a second bridge on the same
# database (a rolling restart, an HA pair) wrote is seen within this time.
KEPT_SECONDS = 30.0


class Lru(Generic[K, V]):
    """At most `size` entries; the least recently used goes first, and none is used
    after `ttl` seconds (another bridge on the database may have replaced it)."""

    def __init__(
        self,
        size: int,
        on_evict: Callable[[K], None] | None = None,
        ttl: float = KEPT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = size
        self.ttl = ttl
        self._clock = clock
        self._items: OrderedDict[K, tuple[V, float]] = OrderedDict()
        self._on_evict = on_evict

    def get(self, key: K) -> V | None:
        found = self._items.get(key)
        if found is None:
            return None
        value, deadline = found
        if self._clock() >= deadline:
            self.pop(key)
            return None
        self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = (value, self._clock() + self.ttl)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            old, _ = self._items.popitem(last=False)
            if self._on_evict is not None:
                self._on_evict(old)

    def pop(self, key: K) -> None:
        if self._items.pop(key, None) is not None and self._on_evict is not None:
            self._on_evict(key)

    def keys(self) -> list[K]:
        return list(self._items)

    def clear(self) -> None:
        for key in self.keys():
            self.pop(key)

    def __len__(self) -> int:
        return len(self._items)


SessionKey = tuple[str, RoomID, SessionID]  # (account, room, session id)


class CryptoCache:
    """What the stores of one bridge share. `generation` grows at every drop: a read
    that began in an older generation may have read what was just replaced."""

    def __init__(self, sessions: int = SESSIONS_KEPT, devices: int = DEVICES_KEPT) -> None:
        self.generation = 0
        self.sessions: Lru[SessionKey, InboundGroupSession] = Lru(sessions, self._unhold)
        # (room, session id) -> the accounts whose cached session it is
        self._holders: dict[tuple[RoomID, SessionID], set[str]] = {}
        self.devices: Lru[tuple[UserID, IdentityKey], DeviceIdentity] = Lru(devices)
        self.cross_signing: Lru[UserID, dict[CrossSigningUsage, TOFUSigningKey]] = Lru(devices)
        self.signed: Lru[tuple[CrossSigner, CrossSigner], bool] = Lru(devices)

    def holder(self, room_id: str, session_id: str) -> str | None:
        """An account that holds this session (as far as the cache knows)."""
        accounts = self._holders.get((RoomID(room_id), SessionID(session_id)))
        return next(iter(accounts)) if accounts else None

    def keep_session(self, key: SessionKey, session: InboundGroupSession) -> None:
        self.sessions.put(key, session)
        self._holders.setdefault((key[1], key[2]), set()).add(key[0])

    def _unhold(self, key: SessionKey) -> None:
        accounts = self._holders.get((key[1], key[2]))
        if accounts is not None:
            accounts.discard(key[0])
            if not accounts:
                del self._holders[(key[1], key[2])]

    def drop_session(self, key: SessionKey) -> None:
        self.generation += 1
        self.sessions.pop(key)

    def forget_sessions(self, account_id: str | None = None) -> None:
        """Every cached session (of one account): after a write the cache cannot follow
        key by key (a redaction by sender, the pruning of rooms)."""
        self.generation += 1
        for key in self.sessions.keys():
            if account_id is None or key[0] == account_id:
                self.sessions.pop(key)

    def forget_devices(self) -> None:
        """Devices, cross-signing keys and signatures: written together, and seldom
        (when someone's keys are queried), so any write drops them all."""
        self.generation += 1
        self.devices.clear()
        self.cross_signing.clear()
        self.signed.clear()

    def forget_all(self) -> None:
        self.forget_sessions()
        self.forget_devices()


class CachedCryptoStore(PgCryptoStore):
    """PgCryptoStore whose per-message reads come from `cache` when they can."""

    def __init__(self, account_id: str, pickle_key: str, db: Database, cache: CryptoCache) -> None:
        super().__init__(account_id, pickle_key, db)
        self.cache = cache

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:  # type: ignore[override]
        try:
            async with super().transaction():
                yield
        finally:
            # Committed or rolled back: what was read or written inside it, or read
            # beside it while it was open, may not be what the tables now hold.
            self.cache.forget_all()

    # -- inbound Megolm sessions (rows of this account) --------------------------------

    async def get_group_session(
        self, room_id: RoomID, session_id: SessionID
    ) -> InboundGroupSession | None:
        key = (self.account_id, room_id, session_id)
        session = self.cache.sessions.get(key)
        if session is not None:
            return session
        generation = self.cache.generation
        session = await super().get_group_session(room_id, session_id)
        if session is not None and generation == self.cache.generation:
            self.cache.keep_session(key, session)
        return session

    async def put_group_session(
        self,
        room_id: RoomID,
        sender_key: IdentityKey,
        session_id: SessionID,
        session: InboundGroupSession,
    ) -> None:
        key = (self.account_id, room_id, session_id)
        self.cache.drop_session(key)
        await super().put_group_session(room_id, sender_key, session_id, session)
        # Not kept here: the next read unpickles what the row now holds.

    async def redact_group_session(
        self, room_id: RoomID, session_id: SessionID, reason: str
    ) -> None:
        await super().redact_group_session(room_id, session_id, reason)
        # The statement matches by session id alone, whatever the room.
        self.cache.forget_sessions(self.account_id)

    async def redact_group_sessions(
        self, room_id: RoomID | None, sender_key: IdentityKey | None, reason: str
    ) -> list[SessionID]:
        try:
            return await super().redact_group_sessions(room_id, sender_key, reason)  # type: ignore[arg-type]
        finally:
            self.cache.forget_sessions(self.account_id)

    async def redact_expired_group_sessions(self) -> list[SessionID]:
        try:
            return await super().redact_expired_group_sessions()
        finally:
            self.cache.forget_sessions(self.account_id)

    async def redact_outdated_group_sessions(self) -> list[SessionID]:
        try:
            return await super().redact_outdated_group_sessions()
        finally:
            self.cache.forget_sessions(self.account_id)

    # -- devices, cross-signing keys, signatures (shared by all accounts) ----------------

    async def find_device_by_key(
        self, user_id: UserID, identity_key: IdentityKey
    ) -> DeviceIdentity | None:
        key = (user_id, identity_key)
        device = self.cache.devices.get(key)
        if device is not None:
            return device
        generation = self.cache.generation
        device = await super().find_device_by_key(user_id, identity_key)
        if device is not None and generation == self.cache.generation:
            self.cache.devices.put(key, device)
        return device

    async def put_devices(self, user_id: UserID, devices: dict[DeviceID, DeviceIdentity]) -> None:
        try:
            await super().put_devices(user_id, devices)
        finally:
            self.cache.forget_devices()

    async def get_cross_signing_keys(
        self, user_id: UserID
    ) -> dict[CrossSigningUsage, TOFUSigningKey]:
        keys = self.cache.cross_signing.get(user_id)
        if keys is not None:
            return dict(keys)
        generation = self.cache.generation
        keys = await super().get_cross_signing_keys(user_id)
        if keys and generation == self.cache.generation:
            self.cache.cross_signing.put(user_id, dict(keys))
        return keys

    async def put_cross_signing_key(
        self, user_id: UserID, usage: CrossSigningUsage, key: SigningKey
    ) -> None:
        try:
            await super().put_cross_signing_key(user_id, usage, key)
        finally:
            self.cache.forget_devices()

    async def is_key_signed_by(self, target: CrossSigner, signer: CrossSigner) -> bool:
        if self.cache.signed.get((target, signer)):
            return True
        generation = self.cache.generation
        signed = bool(await super().is_key_signed_by(target, signer))
        if signed and generation == self.cache.generation:
            self.cache.signed.put((target, signer), True)
        return signed

    async def put_signature(self, target: CrossSigner, signer: CrossSigner, signature: str) -> None:
        try:
            await super().put_signature(target, signer, signature)
        finally:
            self.cache.forget_devices()

    async def drop_signatures_by_key(self, signer: CrossSigner) -> int:
        try:
            return await super().drop_signatures_by_key(signer)
        finally:
            self.cache.forget_devices()


class BridgeMachine(OlmMachine):
    """OlmMachine without the write-back of every decrypted message's session.

    mautrix's _ratchet_session records which message indices of a session were seen
    (`ratchet_safety`) and writes the whole session back, per message; the record only
    ever decides something when `ratchet_keys_on_decrypt` or
    `delete_fully_used_keys_on_decrypt` is on (off here: the bridge keeps a room's keys
    until it is done with the room, db/crypto_store.py). Decrypting does not change
    which messages a session opens, and replays are refused by the message index
    (crypto_message_index), written before this point. So with both off the write is
    skipped: one pickle and one commit less per message, and no write-back of a session
    read before a better copy of its key (a lower first index) was stored beside it."""

    async def _ratchet_session(self, sess: InboundGroupSession, index: int) -> None:
        if self.ratchet_keys_on_decrypt or self.delete_fully_used_keys_on_decrypt:
            await super()._ratchet_session(sess, index)
