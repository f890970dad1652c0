"""The crypto part of a transaction, processed and committed before its index write,
and the decryption of room messages with whichever device holds their session.

Synapse sends a failed transaction again without its to-device messages, key counts and
device lists, so these are handled first, each stored by mautrix's crypto store as it
goes: a failed index write (5xx) that follows loses no room key."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import aiohttp
import asyncpg
from mautrix.api import Method, Path
from mautrix.crypto import OlmMachine, PgCryptoStore
from mautrix.crypto.signature import sign_olm
from mautrix.errors import DecryptionError, MatrixError, SessionNotFound
from mautrix.types import JSON, ASToDeviceEvent, DeviceLists, DeviceOTKCount, EncryptedEvent
from mautrix.util.async_db import Database

from .. import metrics
from ..config import Config
from ..db import encrypted as waiting
from .devices import cross_sign, open_device, user_api
from .outbound import Outbound, RoomSettings, changed_rooms
from .store import CryptoCache

log = logging.getLogger("daarion.crypto")

TO_DEVICE = ("de.sorunome.msc2409.to_device", "to_device")
OTK_COUNTS = ("org.matrix.msc3202.device_one_time_keys_count", "device_one_time_keys_count")
FALLBACK_KEYS = (
    "org.matrix.msc3202.device_unused_fallback_key_types",
    "device_unused_fallback_key_types",
)
DEVICE_LISTS = ("org.matrix.msc3202.device_lists", "device_lists")
MEGOLM = "m.megolm.v1.aes-sha2"
# Marks a raw event the bridge decrypted: "now" (its key was there) or "late" (it had
# been indexed as [encrypted] and waited for its key).
DECRYPTED = "org.daarion.decrypted"


def _first(body: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        if key in body:
            return body[key]
    return None


async def open_crypto(
    url: str, db: Database, config: Config, http: aiohttp.ClientSession
) -> Crypto:
    """The crypto store's tables (migrated in `crypto_version`) on the bridge's pool."""
    crypto_db = Database.create(url, upgrade_table=PgCryptoStore.upgrade_table, log=log)
    crypto_db.override_pool(db)
    await crypto_db.start()
    return Crypto(crypto_db, config, http)


class Crypto:
    def __init__(self, db: Database, config: Config, http: aiohttp.ClientSession) -> None:
        self.db = db
        self.pool: asyncpg.Pool = db.pool  # type: ignore[attr-defined]
        self.config = config
        self.http = http
        self.machines: dict[str, OlmMachine] = {}
        self.rooms = RoomSettings()
        self.cache = CryptoCache()  # shared by every user's store
        self.outbound = Outbound(self.machines, self.pool, self.rooms, self._api_for)
        # Look for waiting messages whose key came: at start, and after a write failed.
        self.recheck = True
        self.wanted: set[str] = set()  # users that should have a device
        # Whether Synapse ever sent a key count: without the MSC3202 flags it never does.
        self.counts_seen = False

    def _api_for(self, user_id: str) -> Any:
        return user_api(
            user_id,
            homeserver=self.config.homeserver.address,
            as_token=self.config.appservice.as_token,
            http=self.http,
        )

    async def encrypt_for(
        self, sender: str, room_id: str, event_type: str, content: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """What to send: (m.room.encrypted, ciphertext from the sender's own device) in
        an encrypted room, (event_type, content) elsewhere. CannotEncrypt: not at all."""
        return await self.outbound.encrypt_for(sender, room_id, event_type, content)

    async def ensure_devices(self, user_ids: Sequence[str]) -> None:
        """A device with keys (and cross-signing) for each user; one that fails is
        logged and tried again at the next start or reload."""
        self.wanted.update(user_ids)
        for user_id in user_ids:
            if user_id in self.machines:
                continue
            try:
                machine = await open_device(
                    user_id,
                    homeserver=self.config.homeserver.address,
                    as_token=self.config.appservice.as_token,
                    http=self.http,
                    db=self.db,
                    pickle_key=self.config.bridge.encryption.pickle_key or "",
                    rooms=self.rooms,
                    cache=self.cache,
                )
                if await cross_sign(machine):
                    await upload_fallback_key(machine)
                    log.info("%s cross-signed its device %s", user_id, machine.client.device_id)
            except (MatrixError, aiohttp.ClientError, TimeoutError) as e:
                log.warning("No device for %s yet: %s", user_id, e or type(e).__name__)
                continue
            self.machines[user_id] = machine

    # -- the crypto part of a transaction ---------------------------------------------

    async def absorb(self, body: Mapping[str, Any]) -> bool:
        """Room keys, key counts, fallback keys and device lists of one transaction,
        stored before anything else of it, and the rotation of the bridge's outgoing
        room keys that its membership and device changes call for. True when to-device
        messages came."""
        events = body.get("events")
        if isinstance(events, list):
            await self.outbound.rotate_rooms(changed_rooms(events, self.machines))
        to_device = _first(body, TO_DEVICE)
        to_device = to_device if isinstance(to_device, list) else []
        for raw in to_device:
            await self._to_device(raw)
        counts = _first(body, OTK_COUNTS)
        fallbacks = _first(body, FALLBACK_KEYS)
        for user_id, machine in list(self.machines.items()):
            device_id = machine.client.device_id
            count = _device_entry(counts, user_id, device_id)
            if isinstance(count, dict):
                self.counts_seen = True
                left = count.get("signed_curve25519", 0)
                if isinstance(left, int):
                    metrics.ONE_TIME_KEYS.labels(user_id, device_id).set(left)
                try:
                    await machine.handle_otk_count(DeviceOTKCount.deserialize(cast(JSON, count)))
                except (MatrixError, aiohttp.ClientError, TimeoutError) as e:
                    log.warning("Could not top up %s's one-time keys: %s", user_id, e)
            unused = _device_entry(fallbacks, user_id, device_id)
            if isinstance(unused, list) and "signed_curve25519" not in unused:
                try:
                    await upload_fallback_key(machine)
                except (MatrixError, aiohttp.ClientError, TimeoutError) as e:
                    log.warning("Could not upload %s's fallback key: %s", user_id, e)
        lists = _first(body, DEVICE_LISTS)
        if isinstance(lists, dict) and self.machines:
            try:
                changes = DeviceLists.deserialize(cast(JSON, lists))
            except Exception:
                log.warning("Device lists of the transaction are malformed; ignored")
            else:
                await self.outbound.rotate_for_users([*changes.changed, *changes.left])
                await next(iter(self.machines.values())).handle_as_device_lists(changes)
        return bool(to_device)

    async def _to_device(self, raw: Any) -> None:
        if not isinstance(raw, dict):
            return
        machine = self.machines.get(str(raw.get("to_user_id")))
        if machine is None or machine.client.device_id != raw.get("to_device_id"):
            return  # not one of our devices (or one not opened yet)
        try:
            event = cast(ASToDeviceEvent, ASToDeviceEvent.deserialize(cast(JSON, raw)))
        except Exception:
            log.warning("Malformed to-device event for %s; ignored", raw.get("to_user_id"))
            return
        try:
            await machine.handle_as_to_device_event(event)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            raise  # not stored: the transaction fails, Synapse sends it again
        except Exception as e:
            # Olm could not decrypt it (a wedged session, a replay): no key to keep.
            log.warning(
                "To-device %s for %s not usable: %s", raw.get("type"), machine.client.mxid, e
            )

    # -- room messages ----------------------------------------------------------------

    async def decrypt(
        self, event: Mapping[str, Any], counted: bool = True
    ) -> dict[str, Any] | None:
        """The decrypted event (same id, sender, room and time), or None when no
        device of the bridge holds its session yet or it cannot be decrypted. `counted`:
        a failure counts in the metrics (arrivals do; rereads do not)."""
        failures = metrics.DECRYPT_FAILURES if counted else None
        content = event.get("content")
        if not isinstance(content, dict) or content.get("algorithm") != MEGOLM:
            return None
        room_id, session_id = event.get("room_id"), content.get("session_id")
        if not isinstance(session_id, str) or not isinstance(room_id, str):
            return None
        owner = self.cache.holder(room_id, session_id) or await self.pool.fetchval(
            "SELECT account_id FROM crypto_megolm_inbound_session "
            "WHERE room_id = $1 AND session_id = $2 AND session IS NOT NULL LIMIT 1",
            room_id,
            session_id,
        )
        machine = self.machines.get(owner) if owner else None
        if machine is None:
            _count(failures, "no_key")
            return None
        try:
            decrypted = await machine.decrypt_megolm_event(
                EncryptedEvent.deserialize(cast(JSON, dict(event)))
            )
        except SessionNotFound:
            _count(failures, "no_key")
            return None
        except (DecryptionError, MatrixError, ValueError, KeyError) as e:
            # The reason names no text: safe to log.
            log.warning("Event %s could not be decrypted: %s", event.get("event_id"), e)
            _count(failures, "error")
            return None
        return {
            "type": str(decrypted.type),
            "room_id": room_id,
            "event_id": event.get("event_id"),
            "sender": event.get("sender"),
            "origin_server_ts": event.get("origin_server_ts"),
            "content": decrypted.content.serialize(),
        }

    async def wait_for_key(self, event: Mapping[str, Any]) -> None:
        content = event.get("content")
        if isinstance(content, dict) and content.get("algorithm") == MEGOLM:
            await waiting.add(
                self.pool,
                str(event.get("event_id")),
                str(event.get("room_id")),
                str(content.get("session_id")),
                event,
            )
            metrics.WAITING_FOR_KEYS.set(await waiting.count(self.pool))

    async def now_readable(self) -> list[tuple[str, dict[str, Any]]]:
        """(event id, decrypted event) of waiting messages whose key has come."""
        found = []
        for row in await waiting.with_key(self.pool):
            decrypted = await self.decrypt(row.event)
            if decrypted is not None:
                found.append((row.event_id, decrypted))
        return found

    async def done_waiting(self, event_ids: Sequence[str]) -> None:
        await waiting.remove(self.pool, event_ids)
        metrics.WAITING_FOR_KEYS.set(await waiting.count(self.pool))

    async def status(self) -> str:
        """One line for `!daarion status`: whether encryption works, and what it waits for."""
        ready, wanted = len(self.machines), len(self.wanted | set(self.machines))
        held = await waiting.count(self.pool)
        counts = (
            "key counts arrive"
            if self.counts_seen
            else "no key counts from the homeserver yet (are its MSC2409/MSC3202 flags on?)"
        )
        working = "on" if ready == wanted and self.counts_seen else "on, NOT fully working"
        return (
            f"{working}: {ready} of {wanted} devices ready; {counts}; "
            f"{held} message(s) waiting for their room key"
        )


def _count(failures: Any, reason: str) -> None:
    if failures is not None:
        failures.labels(reason).inc()


def _device_entry(by_user: Any, user_id: str, device_id: str) -> Any:
    devices = by_user.get(user_id) if isinstance(by_user, dict) else None
    return devices.get(device_id) if isinstance(devices, dict) else None


async def upload_fallback_key(machine: OlmMachine) -> None:
    """A new fallback key: what a sender uses once the one-time keys ran out."""
    account = machine.account
    assert account is not None  # loaded by open_device
    account.generate_fallback_key()
    keys = account.fallback_key.get("curve25519", {})
    fallback = {}
    for key_id, key in keys.items():
        signed = {"key": key, "fallback": True}
        signature = sign_olm(dict(signed), account)
        mxid, device = machine.client.mxid, machine.client.device_id
        signed["signatures"] = {mxid: {f"ed25519:{device}": signature}}
        fallback[f"signed_curve25519:{key_id}"] = signed
    await machine.client.api.request(Method.POST, Path.v3.keys.upload, {"fallback_keys": fallback})
    account.mark_keys_as_published()
    await machine.crypto_store.put_account(account)


async def seal(
    crypto: Crypto | None, sender: str, room_id: str, content: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The message `sender` sends into `room_id`: encrypted with the sender's device in
    an encrypted room; as it is with encryption off."""
    if crypto is None:
        return "m.room.message", content
    return await crypto.encrypt_for(sender, room_id, "m.room.message", content)
