"""The crypto part of a transaction, processed and committed before its index write,
and the decryption of room messages with whichever device holds their session.

Synapse sends a failed transaction again without its to-device messages, key counts and
device lists, so these are handled first, each stored by mautrix's crypto store as it
goes: a failed index write (5xx) that follows loses no room key."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import aiohttp
import asyncpg
from mautrix.api import Method, Path
from mautrix.crypto import OlmMachine, PgCryptoStore
from mautrix.errors import DecryptionError, MatrixError, SessionNotFound
from mautrix.types import JSON, ASToDeviceEvent, DeviceLists, DeviceOTKCount, EncryptedEvent
from mautrix.util.async_db import Database
from mautrix.util.async_db.connection import LoggingConnection

from .. import metrics
from ..config import Config
from ..db import encrypted as waiting
from ..db.errors import is_transient
from .devices import cross_sign, open_device, upload_fallback_key, user_api
from .flags import MAX_PROBES, PROBE, PROBE_WAIT, FlagWatch
from .outbound import Outbound, RoomSettings, changed_rooms
from .spool import Spool
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
# How long a transaction whose room keys cannot be stored waits for the database: under
# the 60 s Synapse waits for an answer. A transaction that fails puts the appservice in
# Synapse's recovery, and while it is there Synapse drops every to-device message.
HOLD_SECONDS = 45.0


def _first(body: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        if key in body:
            return body[key]
    return None


async def open_crypto(
    url: str, db: Database, config: Config, http: aiohttp.ClientSession
) -> Crypto:
    """The crypto store's tables (migrated in `crypto_version`) on the bridge's pool."""
    # Not mautrix's default exit on asyncpg's internal client error: a connection dying
    # in a database outage raises it, and the outage is handled (see absorb).
    crypto_db = Database.create(
        url,
        upgrade_table=PgCryptoStore.upgrade_table,
        log=log,
        db_args={"meow_exit_on_ice": False},
    )
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
        # What the transactions show of the homeserver's flags (crypto/flags.py).
        self.flags = FlagWatch()
        self._said: str | None = None
        self.spool = Spool(config.bridge.encryption.spool_file)
        self._spool_lock = asyncio.Lock()
        self.hold_seconds = HOLD_SECONDS

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
        messages came (now or from the spool).

        With the database down, what could not be stored is spooled to disk and the
        transaction waits for the database (up to `hold_seconds`); after that it fails
        (5xx), its keys safe in the spool, stored before the next transaction's."""
        came = await self.replay_spooled()
        try:
            return await self._absorb(body) or came
        except _NotStored as e:
            await self._hold(e)
            return True

    async def _absorb(self, body: Mapping[str, Any]) -> bool:
        to_device = _first(body, TO_DEVICE)
        to_device = to_device if isinstance(to_device, list) else []
        lists = _first(body, DEVICE_LISTS)
        # What is not stored yet: the to-device messages for the bridge's devices (others
        # are not its to keep) and the device-list changes.
        left = [raw for raw in to_device if self._ours(raw)]
        changes = isinstance(lists, dict) and any(lists.get(k) for k in ("changed", "left"))
        pending_lists = lists if changes else None
        try:
            events = body.get("events")
            if isinstance(events, list):
                await self.outbound.rotate_rooms(changed_rooms(events, self.machines))
            while left:
                await self._to_device(left[0])
                left.pop(0)
            await self._counts(body)
            if pending_lists is not None and self.machines:
                await self._device_lists(pending_lists)
            pending_lists = None
        except Exception as e:
            if is_transient(e) and (left or pending_lists):
                raise _NotStored(_spooled_part(left, pending_lists), e) from e
            raise
        return bool(to_device)

    async def _counts(self, body: Mapping[str, Any]) -> None:
        counts = _first(body, OTK_COUNTS)
        fallbacks = _first(body, FALLBACK_KEYS)
        for user_id, machine in list(self.machines.items()):
            device_id = machine.client.device_id
            count = _device_entry(counts, user_id, device_id)
            if isinstance(count, dict):
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

    async def _device_lists(self, lists: dict[str, Any]) -> None:
        try:
            changes = DeviceLists.deserialize(cast(JSON, lists))
        except Exception:
            log.warning("Device lists of the transaction are malformed; ignored")
            return
        await self.outbound.rotate_for_users([*changes.changed, *changes.left])
        await next(iter(self.machines.values())).handle_as_device_lists(changes)

    # -- the homeserver's flags -----------------------------------------------------------

    def saw_transaction(self, body: Mapping[str, Any]) -> None:
        """A transaction as the homeserver pushed it: what its flags let it carry."""
        self.flags.saw(body, self._devices())
        self._say_missing_flags()

    def _devices(self) -> dict[str, str]:
        return {user: str(m.client.device_id) for user, m in self.machines.items()}

    def _say_missing_flags(self) -> None:
        """One line at WARNING, again only if what is missing changes."""
        warning = self.flags.warning()
        if warning is not None and warning != self._said:
            log.warning("%s", warning)
        elif warning is None and self._said is not None:
            log.info("Encryption: the homeserver sends what it needs after all")
        self._said = warning

    async def check_flags(self, wait: float = PROBE_WAIT) -> None:
        """Send the bot's device a to-device probe, `wait` apart, until one comes back in
        a transaction or what is missing is clear (at most MAX_PROBES); then say it."""
        for _ in range(MAX_PROBES):
            if self.flags.missing():
                break
            bot = self.machines.get(self.config.bot_mxid)
            if self.flags.probe_came or bot is None:
                return
            nonce = secrets.token_hex(8)
            self.flags.probe_sent(nonce)
            messages = {bot.client.mxid: {bot.client.device_id: {"nonce": nonce}}}
            try:
                await bot.client.api.request(
                    Method.PUT,
                    Path.v3.sendToDevice[PROBE][nonce],
                    {"messages": messages},
                )
            except (MatrixError, aiohttp.ClientError, TimeoutError) as e:
                log.warning("Could not send the encryption probe: %s", e)
            await asyncio.sleep(wait)
        self._say_missing_flags()

    # -- the database down: spool, wait, replay ---------------------------------------

    async def _hold(self, e: _NotStored) -> None:
        async with self._spool_lock:
            await self.spool.add(e.part)
        # A failed store may leave an account or session ahead of the database in
        # memory (a one-time key used, a ratchet moved): the devices are opened again
        # from the store before the spool is replayed.
        self.machines.clear()
        log.warning(
            "Database unavailable (%s): %d room key message(s) of a transaction spooled "
            "to %s; the transaction waits up to %.0f s for the database",
            type(e.error).__name__,
            len(e.part.get("to_device", [])),
            self.spool.path,
            self.hold_seconds,
        )
        if not await self._database_back(self.hold_seconds):
            raise e.error  # 5xx: the keys stay spooled, stored before the next transaction
        await self.replay_spooled()

    async def _database_back(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            try:
                await self.pool.fetchval("SELECT 1", timeout=2)
            except Exception as e:  # every failure here means: not back yet
                if not is_transient(e) or time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(0.5)
                continue
            # The connections the outage broke are replaced rather than each failing once.
            await self.pool.expire_connections()
            return True

    async def replay_spooled(self) -> bool:
        """Store what the spool holds (before anything newer): True when it held keys.
        The database failing again leaves it spooled, the error raised."""
        async with self._spool_lock:
            parts = await self.spool.read()
            if not parts:
                return False
            await self.ensure_devices(sorted(self.wanted))
            kept: list[dict[str, Any]] = []
            for part in parts:
                unopened = [
                    r
                    for r in part.get("to_device", [])
                    if isinstance(r, dict)
                    and str(r.get("to_user_id")) in self.wanted
                    and str(r.get("to_user_id")) not in self.machines
                ]
                if unopened:  # a device that did not open this time: tried again later
                    kept.append(_spooled_part(unopened, None))
                try:
                    await self._absorb(part)
                except _NotStored as e:
                    raise e.error from None
            await self.spool.keep_only(kept)
            log.info("%d spooled crypto part(s) stored", len(parts))
            self.recheck = True
            return True

    def _ours(self, raw: Any) -> bool:
        if not isinstance(raw, dict):
            return False
        machine = self.machines.get(str(raw.get("to_user_id")))
        return machine is not None and machine.client.device_id == raw.get("to_device_id")

    async def _to_device(self, raw: dict[str, Any]) -> None:
        """One to-device message for one of the bridge's devices, stored in one database
        transaction: its Olm session's step and the room key it brought go in together or
        not at all."""
        machine = self.machines[str(raw.get("to_user_id"))]
        try:
            event = cast(ASToDeviceEvent, ASToDeviceEvent.deserialize(cast(JSON, raw)))
        except Exception:
            log.warning("Malformed to-device event for %s; ignored", raw.get("to_user_id"))
            return
        # The store's statements take this connection (mautrix's acquire reuses it).
        connection = cast(AbstractAsyncContextManager[LoggingConnection], self.db.acquire())
        async with connection as conn, conn.wrapped.transaction():
            try:
                await machine.handle_as_to_device_event(event)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                raise  # not stored: spooled (see absorb)
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
        missing = self.flags.missing()
        if missing:
            return (
                f"on, NOT working: the homeserver sends {' and '.join(missing)}; "
                f"{ready} of {wanted} devices ready; {held} message(s) waiting for their "
                "room key (see the bridge log, or docs/operations.md: a homeserver "
                "without the flags)"
            )
        counts = (
            "key counts arrive"
            if self.flags.counts_seen
            else "no key counts from the homeserver yet (are its MSC2409/MSC3202 flags on?)"
        )
        working = "on" if ready == wanted and self.flags.counts_seen else "on, NOT fully working"
        return (
            f"{working}: {ready} of {wanted} devices ready; {counts}; "
            f"{held} message(s) waiting for their room key"
        )


class _NotStored(Exception):
    """The database failed while the crypto part was stored; `part` is what is left."""

    def __init__(self, part: dict[str, Any], error: BaseException) -> None:
        super().__init__(str(error))
        self.part = part
        self.error = error


def _spooled_part(to_device: Sequence[Any], lists: dict[str, Any] | None) -> dict[str, Any]:
    part: dict[str, Any] = {"to_device": list(to_device)}
    if lists is not None:
        part["device_lists"] = lists
    return part


def _count(failures: Any, reason: str) -> None:
    if failures is not None:
        failures.labels(reason).inc()


def _device_entry(by_user: Any, user_id: str, device_id: str) -> Any:
    devices = by_user.get(user_id) if isinstance(by_user, dict) else None
    return devices.get(device_id) if isinstance(devices, dict) else None


async def seal(
    crypto: Crypto | None, sender: str, room_id: str, content: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The message `sender` sends into `room_id`: encrypted with the sender's device in
    an encrypted room; as it is with encryption off."""
    if crypto is None:
        return "m.room.message", content
    return await crypto.encrypt_for(sender, room_id, "m.room.message", content)
