"""What the bridge sends into encrypted rooms: each sender's message encrypted with the
sender's own device (an agent's with the agent's, the bot's with the bot's), so a
client sees it come from a device its sender owns and has signed.

A sender's Megolm session in a room is shared (Olm, to-device) with every device of the
room's joined members, and of its invited ones unless the history is visible to joined
members only. The bridge's own users get none: the sender's store keeps the session, and
any of the bridge's devices decrypts with whichever store holds it. A new session
replaces it when the room's m.room.encryption says (rotation_period_ms, _msgs), when
someone's membership changes, and when a member's devices change."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, cast

import asyncpg
from mautrix.api import HTTPAPI, Method, Path
from mautrix.crypto import OlmMachine, StateStore
from mautrix.errors import EncryptionError, MatrixError, MNotFound, SessionShareError
from mautrix.types import (
    JSON,
    EncryptionAlgorithm,
    EventType,
    RoomEncryptionStateEventContent,
    RoomID,
    UserID,
)

log = logging.getLogger("daarion.crypto")

ENCRYPTED = "m.room.encrypted"
MEGOLM = "m.megolm.v1.aes-sha2"
# Who gets the room key besides those who joined: invitees, unless the room shows its
# history to joined members only (what Element does).
INVITEES_SEE = frozenset({"invited", "shared", "world_readable"})


class CannotEncrypt(Exception):
    """The room is encrypted and this message cannot be: it is not sent at all."""


class RoomSettings(StateStore):
    """What OlmMachine asks of room state: the encrypted rooms' m.room.encryption, as
    last read (its rotation settings make each new session's limits). The bridge keeps
    no other room state here (the index has it); an unknown room gets the defaults."""

    def __init__(self) -> None:
        self.encryption: dict[str, dict[str, Any]] = {}

    async def is_encrypted(self, room_id: Any) -> bool:
        return str(room_id) in self.encryption

    async def get_encryption_info(self, room_id: Any) -> RoomEncryptionStateEventContent | None:
        content = self.encryption.get(str(room_id))
        if content is None:
            return RoomEncryptionStateEventContent(EncryptionAlgorithm.MEGOLM_V1)
        return RoomEncryptionStateEventContent.deserialize(cast(JSON, content))

    async def find_shared_rooms(self, user_id: Any) -> list[Any]:
        # Device changes rotate through Outbound.rotate_for_users, for every sender.
        return []


def recipients(
    state: Iterable[Any], ours: Collection[str]
) -> tuple[list[str], dict[str, Any] | None]:
    """(users to share the room key with, the room's m.room.encryption content) from the
    room's state: joined members, and invited ones where the history visibility lets
    them see it; none of the bridge's own users."""
    encryption: dict[str, Any] | None = None
    visibility = "shared"  # the spec's default
    members: dict[str, str] = {}
    for event in state:
        if not isinstance(event, dict) or not isinstance(event.get("content"), dict):
            continue
        etype, content = event.get("type"), event["content"]
        if etype == "m.room.encryption" and event.get("state_key") == "":
            encryption = content
        elif etype == "m.room.history_visibility" and event.get("state_key") == "":
            visibility = str(content.get("history_visibility", visibility))
        elif etype == "m.room.member" and isinstance(event.get("state_key"), str):
            members[event["state_key"]] = str(content.get("membership"))
    wanted = {"join", "invite"} if visibility in INVITEES_SEE else {"join"}
    users = sorted(u for u, m in members.items() if m in wanted and u not in ours)
    return users, encryption


def changed_rooms(events: Iterable[Any], ours: Collection[str]) -> set[str]:
    """Rooms whose senders need a new session: someone's membership changed (left,
    kicked, banned, joined, invited), or the room's m.room.encryption was sent again.
    Of the bridge's own users only a (re)join counts: one returning to a room saw none
    of the changes while it was away, so the session it had before must not go on."""
    rooms = set()
    for event in events:
        if not isinstance(event, dict) or "state_key" not in event:
            continue
        room_id = event.get("room_id")
        if not isinstance(room_id, str):
            continue
        if event.get("type") == "m.room.encryption":
            rooms.add(room_id)
        elif event.get("type") == "m.room.member":
            content = event.get("content")
            unsigned = event.get("unsigned")
            prev = unsigned.get("prev_content") if isinstance(unsigned, dict) else None
            now = content.get("membership") if isinstance(content, dict) else None
            before = prev.get("membership") if isinstance(prev, dict) else None
            if event.get("state_key") in ours:
                if now == "join" and before != "join":
                    rooms.add(room_id)
            elif now != before:
                rooms.add(room_id)
    return rooms


class Outbound:
    def __init__(
        self,
        machines: Mapping[str, OlmMachine],
        pool: asyncpg.Pool,
        settings: RoomSettings,
        api_for: Callable[[str], HTTPAPI],
    ) -> None:
        self.machines = machines
        self.api_for = api_for
        self.pool = pool
        self.settings = settings
        # One encryption (and share) at a time per sender and room.
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # (sender, room) -> the users its current session went to. In memory: a session
        # from before a restart counts as shared with anyone (rotate_for_users).
        self._shared: dict[tuple[str, str], frozenset[str]] = {}

    async def encrypt_for(
        self, sender: str, room_id: str, event_type: str, content: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """(event type, content) to send: `m.room.encrypted` and the ciphertext in an
        encrypted room, what was given elsewhere. Raises CannotEncrypt when the room is
        encrypted and the sender has no device; the homeserver's errors go on."""
        machine = self.machines.get(sender)
        if not await self._encrypted(sender, machine, room_id):
            return event_type, content
        if machine is None:
            raise CannotEncrypt(f"{sender} has no device yet")
        key = (sender, room_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            kind = EventType.find(event_type)
            try:
                sealed = await machine.encrypt_megolm_event(RoomID(room_id), kind, content)
            except EncryptionError:  # no session yet, or it expired: a new one
                await self._share(machine, room_id)
                sealed = await machine.encrypt_megolm_event(RoomID(room_id), kind, content)
        out = cast(dict[str, Any], sealed.serialize())
        if "m.relates_to" in content:
            # In the clear as given (replies, threads): servers and clients read it there.
            out["m.relates_to"] = content["m.relates_to"]
        return ENCRYPTED, out

    async def _encrypted(self, sender: str, machine: OlmMachine | None, room_id: str) -> bool:
        """Whether the room is encrypted: once it is it stays so (the spec lets no one
        turn it off), so only a room not known to be is asked about again."""
        if room_id in self.settings.encryption:
            return True
        # Without a device the sender can still ask (and is refused below if it is).
        api = machine.client.api if machine is not None else self.api_for(sender)
        path = Path.v3.rooms[room_id].state["m.room.encryption"][""]
        try:
            content = await api.request(Method.GET, path)
        except MNotFound:
            return False
        except MatrixError as e:
            raise CannotEncrypt(f"cannot tell whether {room_id} is encrypted: {e}") from e
        if content.get("algorithm") != MEGOLM:
            raise CannotEncrypt(f"{room_id} uses {content.get('algorithm')!r}, not Megolm")
        self.settings.encryption[room_id] = content
        return True

    async def _share(self, machine: OlmMachine, room_id: str) -> None:
        sender = str(machine.client.mxid)
        state = await machine.client.api.request(Method.GET, Path.v3.rooms[room_id].state)
        users, encryption = recipients(state, self.machines)
        if encryption is not None:
            self.settings.encryption[room_id] = encryption
        ids = [UserID(u) for u in users]
        if ids:
            # Their devices as they are now: a device list is read again at each share.
            async with machine._fetch_keys_lock:
                await machine._fetch_keys(ids, include_untracked=True)
        try:
            await machine.share_group_session(RoomID(room_id), ids)
        except SessionShareError as e:
            raise CannotEncrypt(f"could not share a room key in {room_id}: {e}") from e
        self._shared[(sender, room_id)] = frozenset(users)
        log.info("%s shared a new room key in %s with %d users", sender, room_id, len(users))

    # -- rotation ---------------------------------------------------------------------

    async def rotate_rooms(self, room_ids: Collection[str]) -> None:
        """Every sender's next message in these rooms starts a new session."""
        if not room_ids:
            return
        await self.pool.execute(
            "DELETE FROM crypto_megolm_outbound_session WHERE room_id = ANY($1::text[])",
            list(room_ids),
        )
        for key in [k for k in self._shared if k[1] in room_ids]:
            del self._shared[key]
        log.debug("Room keys rotate in %d rooms (membership changed)", len(room_ids))

    async def rotate_for_users(self, user_ids: Collection[str]) -> None:
        """Sessions shared with these users (whose devices changed) are replaced, so
        that a new device gets the next key and a removed one does not."""
        people = frozenset(user_ids) - frozenset(self.machines)
        if not people:
            return
        rows = await self.pool.fetch(
            "SELECT account_id, room_id FROM crypto_megolm_outbound_session"
        )
        stale = [
            (r["account_id"], r["room_id"])
            for r in rows
            if people & self._shared.get((r["account_id"], r["room_id"]), people)
        ]
        if not stale:
            return
        await self.pool.execute(
            "DELETE FROM crypto_megolm_outbound_session WHERE (account_id, room_id) IN "
            "(SELECT * FROM unnest($1::text[], $2::text[]))",
            [a for a, _ in stale],
            [r for _, r in stale],
        )
        for key in stale:
            self._shared.pop(key, None)
        log.debug("Room keys rotate in %d sessions (devices changed)", len(stale))
