"""The encrypted workload (``--encrypted``): the people's messages Megolm-encrypted as
Element sends them, their room keys delivered to the bridge's devices over Olm.

Setup, while Synapse runs: every benchmark room gets ``m.room.encryption`` (sent by the
owner, so the bridge learns it from Synapse's push); the devices of the bot and of the
agents in the rooms are read with ``/keys/query`` and one-time keys for them claimed with
``/keys/claim`` (the fallback key once the uploaded ones run out, as Synapse hands it
out), one per sender device that will talk to them. Each sender gets an Olm account (a
device ``BENCH...``), and the bridge's crypto store is given the senders' devices with
mautrix's own ``put_devices``: what its ``/keys/query`` of a new sender stores (the
senders are not Synapse users, and Synapse is stopped when they talk).

Generation (before the clock starts, like every body): each ``m.room.message`` of a
person (messages, replies, edits) is encrypted with the sender's Megolm session in that
room (``m.relates_to`` left outside, as Element does); a sender's first message in a
room, and every 100th after (the room's ``rotation_period_msgs``), comes with a new
session whose key goes as an Olm-encrypted ``m.room_key`` to every bridge device in the
room (the bot and the room's agents), under ``de.sorunome.msc2409.to_device`` in the
same transaction, as Synapse delivers it. Agents' answers stay plain: the bridge itself
sends those. Redactions, membership and state events are never encrypted.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import olm
from mautrix.crypto import PgCryptoStore
from mautrix.types import (
    CrossSigner,
    CrossSigningUsage,
    DeviceID,
    DeviceIdentity,
    IdentityKey,
    SigningKey,
    TrustState,
    UserID,
)
from mautrix.util.async_db import Database

from daarion_bridge.devtools.people import Person

from .harness import BOT, Stack

MEGOLM = "m.megolm.v1.aes-sha2"
OLM = "m.olm.v1.curve25519-aes-sha2"
TO_DEVICE = "de.sorunome.msc2409.to_device"
ROTATION_MSGS = 100  # Element's default rotation_period_msgs, and the state sent below
MAX_CLAIMED = 90  # below the 100 keys an Olm account holds
ENCRYPTION = {
    "algorithm": MEGOLM,
    "rotation_period_ms": 604_800_000,
    "rotation_period_msgs": ROTATION_MSGS,
}


@dataclass(frozen=True, slots=True)
class BridgeDevice:
    user_id: str
    device_id: str
    curve25519: str
    ed25519: str


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass
class _Sender:
    device_id: str
    account: olm.Account
    # cross-signing keys, as every Element user has them: the device signed by the
    # self-signing key, that one by the master key
    master: olm.PkSigning = field(
        default_factory=lambda: olm.PkSigning(olm.PkSigning.generate_seed())
    )
    self_signing: olm.PkSigning = field(
        default_factory=lambda: olm.PkSigning(olm.PkSigning.generate_seed())
    )
    # (bridge user, device) -> the Olm session the sender's room keys go through
    olm_sessions: dict[tuple[str, str], olm.OutboundSession] = field(default_factory=dict)
    # room id -> the sender's Megolm session there
    megolm: dict[str, olm.OutboundGroupSession] = field(default_factory=dict)


@dataclass
class Counts:
    encrypted: int = 0  # m.room.message events sent as m.room.encrypted
    room_keys: int = 0  # m.room_key to-device events
    megolm_sessions: int = 0
    olm_sessions: int = 0


class Sealer:
    """Encrypts a transaction's events as their senders' devices would."""

    def __init__(
        self,
        senders: Iterable[str],
        room_devices: Mapping[str, Sequence[BridgeDevice]],
        one_time_keys: Mapping[tuple[str, str], list[str]],
    ) -> None:
        """``room_devices``: room id -> the bridge's devices in it (bot and agents);
        ``one_time_keys``: (user, device) -> claimed keys, one used per new Olm session."""
        self.senders = {
            s: _Sender(f"BENCH{i:06d}", olm.Account()) for i, s in enumerate(sorted(senders))
        }
        self.room_devices = room_devices
        self.one_time_keys = {k: list(v) for k, v in one_time_keys.items()}
        self.counts = Counts()
        # (messages encrypted, room keys sent) of each transaction sealed, in order
        self.per_txn: list[tuple[int, int]] = []

    def devices(self) -> dict[str, DeviceIdentity]:
        """Each sender's device as the bridge's crypto store keeps a fetched one."""
        return {
            user_id: DeviceIdentity(
                user_id=UserID(user_id),
                device_id=DeviceID(s.device_id),
                identity_key=IdentityKey(s.account.identity_keys["curve25519"]),
                signing_key=SigningKey(s.account.identity_keys["ed25519"]),
                trust=TrustState.UNVERIFIED,
                deleted=False,
                name="bench",
            )
            for user_id, s in self.senders.items()
        }

    def cross_signing(self) -> dict[str, tuple[str, str, str, str]]:
        """user -> (master key, self-signing key, the latter's signature by the master
        key, the device's signature by the self-signing key)."""
        out = {}
        for user_id, s in self.senders.items():
            ssk = s.self_signing.public_key
            ssk_object = {
                "user_id": user_id,
                "usage": ["self_signing"],
                "keys": {f"ed25519:{ssk}": ssk},
            }
            device_object = {
                "user_id": user_id,
                "device_id": s.device_id,
                "algorithms": [OLM, MEGOLM],
                "keys": {
                    f"{alg}:{s.device_id}": key for alg, key in s.account.identity_keys.items()
                },
            }
            out[user_id] = (
                s.master.public_key,
                ssk,
                s.master.sign(_canonical(ssk_object)),
                s.self_signing.sign(_canonical(device_object)),
            )
        return out

    def seal(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Encrypts the people's messages among ``events`` in place; returns what the
        transaction body carries besides (the to-device room keys)."""
        to_device: list[dict[str, Any]] = []
        sealed_before = self.counts.encrypted
        for i, event in enumerate(events):
            sender = self.senders.get(event["sender"])
            if event["type"] != "m.room.message" or sender is None:
                continue
            room_id = event["room_id"]
            group = sender.megolm.get(room_id)
            if group is None or group.message_index >= ROTATION_MSGS:
                group = sender.megolm[room_id] = olm.OutboundGroupSession()
                self.counts.megolm_sessions += 1
                to_device.extend(
                    self._room_key(event["sender"], sender, device, group, room_id)
                    for device in self.room_devices.get(room_id, ())
                )
            content = dict(event["content"])
            relates_to = content.pop("m.relates_to", None)
            plaintext = json.dumps(
                {"type": event["type"], "content": content, "room_id": room_id},
                ensure_ascii=False,
            )
            sealed: dict[str, Any] = {
                "algorithm": MEGOLM,
                "sender_key": sender.account.identity_keys["curve25519"],
                "ciphertext": group.encrypt(plaintext),
                "session_id": group.id,
                "device_id": sender.device_id,
            }
            if relates_to is not None:
                sealed["m.relates_to"] = relates_to
            events[i] = {**event, "type": "m.room.encrypted", "content": sealed}
            self.counts.encrypted += 1
        self.per_txn.append((self.counts.encrypted - sealed_before, len(to_device)))
        return {TO_DEVICE: to_device} if to_device else {}

    def _room_key(
        self,
        user_id: str,
        sender: _Sender,
        device: BridgeDevice,
        group: olm.OutboundGroupSession,
        room_id: str,
    ) -> dict[str, Any]:
        key = (device.user_id, device.device_id)
        session = sender.olm_sessions.get(key)
        if session is None:
            claimed = self.one_time_keys.get(key)
            if not claimed:
                raise RuntimeError(f"no one-time key claimed for {key} (sender {user_id})")
            # first the one-time keys, then the last (the fallback key, or a spare) for all
            otk = claimed.pop(0) if len(claimed) > 1 else claimed[0]
            session = sender.olm_sessions[key] = olm.OutboundSession(
                sender.account, device.curve25519, otk
            )
            self.counts.olm_sessions += 1
        payload = {
            "type": "m.room_key",
            "content": {
                "algorithm": MEGOLM,
                "room_id": room_id,
                "session_id": group.id,
                "session_key": group.session_key,
            },
            "sender": user_id,
            "sender_device": sender.device_id,
            "keys": {"ed25519": sender.account.identity_keys["ed25519"]},
            "recipient": device.user_id,
            "recipient_keys": {"ed25519": device.ed25519},
        }
        message = session.encrypt(json.dumps(payload))
        self.counts.room_keys += 1
        return {
            "type": "m.room.encrypted",
            "sender": user_id,
            "to_user_id": device.user_id,
            "to_device_id": device.device_id,
            "content": {
                "algorithm": OLM,
                "sender_key": sender.account.identity_keys["curve25519"],
                "ciphertext": {
                    device.curve25519: {
                        "type": message.message_type,
                        "body": message.ciphertext,
                    }
                },
            },
        }


async def encrypt_rooms(owner: Person, rooms: Sequence[str], parallel: int = 8) -> None:
    sem = asyncio.Semaphore(parallel)

    async def one(room: str) -> None:
        async with sem:
            await owner.put_state(room, "m.room.encryption", ENCRYPTION)

    await asyncio.gather(*(one(r) for r in rooms))


async def bridge_devices(
    owner: Person, users: Sequence[str], timeout: float = 120
) -> dict[str, list[BridgeDevice]]:
    """The devices with keys of ``users`` (the bridge's), as any client reads them;
    waits until each has one (the bridge makes them at its start)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await owner.request(
            "POST", "/v3/keys/query", {"device_keys": {u: [] for u in users}}
        )
        found: dict[str, list[BridgeDevice]] = {}
        for user_id, devices in (resp.get("device_keys") or {}).items():
            for device_id, keys in devices.items():
                k = keys.get("keys", {})
                curve, ed = k.get(f"curve25519:{device_id}"), k.get(f"ed25519:{device_id}")
                if curve and ed:
                    found.setdefault(user_id, []).append(
                        BridgeDevice(user_id, device_id, curve, ed)
                    )
        missing = [u for u in users if u not in found]
        if not missing:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"no device with keys for {missing[:5]} ({len(missing)} users)")
        await asyncio.sleep(1.0)


async def claim_keys(
    owner: Person, wanted: Mapping[tuple[str, str], int]
) -> dict[tuple[str, str], list[str]]:
    """``wanted[(user, device)]`` keys to start Olm sessions with each device, claimed
    as Element does, one per device per request, until the device's uploaded one-time
    keys are gone and Synapse gives its fallback key (which then serves the rest: the
    last key of each list). Claiming no further keeps the claimed-but-unused keys below
    what an Olm account holds (100): were the bridge to top up while we claimed, more
    would push the oldest claimed ones out of its account."""
    got: dict[tuple[str, str], list[str]] = defaultdict(list)
    open_ = {k for k, n in wanted.items() if n > 0}
    while open_:
        query: dict[str, dict[str, str]] = defaultdict(dict)
        for user, device in open_:
            query[user][device] = "signed_curve25519"
        resp = await owner.request("POST", "/v3/keys/claim", {"one_time_keys": query})
        answered = set()
        for user, devices in (resp.get("one_time_keys") or {}).items():
            for device, keys in devices.items():
                for value in keys.values():
                    key = (user, device)
                    answered.add(key)
                    got[key].append(value["key"])
                    if value.get("fallback") or len(got[key]) >= wanted[key]:
                        open_.discard(key)
                    elif len(got[key]) >= MAX_CLAIMED:
                        raise RuntimeError(f"{key}: {MAX_CLAIMED} keys claimed, no fallback key")
        for key in open_ - answered:
            raise RuntimeError(f"no one-time or fallback key for {key}")
    return dict(got)


async def register_devices(database_url: str, sealer: Sealer) -> None:
    """The senders' devices and cross-signing keys into the bridge's crypto store, as its
    key query stores them (it checked the signatures then; it reads only that they are
    there)."""
    db = Database.create(database_url, upgrade_table=PgCryptoStore.upgrade_table)
    await db.start()
    try:
        store = PgCryptoStore("bench", "", db)
        signing = sealer.cross_signing()
        for user_id, device in sealer.devices().items():
            user = UserID(user_id)
            await store.put_devices(user, {device.device_id: device})
            master, ssk, ssk_signature, device_signature = signing[user_id]
            await store.put_cross_signing_key(user, CrossSigningUsage.MASTER, SigningKey(master))
            await store.put_cross_signing_key(user, CrossSigningUsage.SELF, SigningKey(ssk))
            await store.put_signature(
                CrossSigner(user, SigningKey(ssk)),
                CrossSigner(user, SigningKey(master)),
                ssk_signature,
            )
            await store.put_signature(
                CrossSigner(user, device.signing_key),
                CrossSigner(user, SigningKey(ssk)),
                device_signature,
            )
    finally:
        await db.stop()


async def prepare(
    stack: Stack, members: Mapping[str, Sequence[str]], agents: Mapping[str, Sequence[str]]
) -> Sealer:
    """Everything the encrypted workload needs from Synapse, while it runs.

    ``members``: room id -> the senders who talk there; ``agents``: room id -> the
    agents in it."""
    owner = stack.owner
    assert owner is not None  # made by create_channels
    rooms = list(members)
    await encrypt_rooms(owner, rooms)
    await stack.settled()  # key counts the bridge hears of come before the claims
    users = sorted({BOT, *(a for found in agents.values() for a in found)})
    devices = await bridge_devices(owner, users)
    room_devices = {
        room: [d for u in [BOT, *agents.get(room, ())] for d in devices[u]] for room in rooms
    }
    # one Olm session per (sender, bridge device) it shares a room with
    peers: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for room, senders in members.items():
        for sender in senders:
            peers[sender].update((d.user_id, d.device_id) for d in room_devices[room])
    wanted: dict[tuple[str, str], int] = defaultdict(int)
    for found in peers.values():
        for key in found:
            wanted[key] += 1
    sealer = Sealer(peers, room_devices, await claim_keys(owner, wanted))
    await register_devices(stack.database_url, sealer)
    return sealer
