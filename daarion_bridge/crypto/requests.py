"""Asking the sender again for a room key that never came.

A room key travels once, as a to-device message. When it is lost on the way (the
homeserver drops to-device messages for an appservice it counts as down, after an outage
longer than the bridge can hold a transaction), the messages that need it would wait
until they are pruned. So a key that messages have waited WAIT for is asked of the
sender's devices (`m.room_key_request`, as Element asks its own other devices) by a
device of the bridge's in the room; a client that shared the key with that device
before shares it again (`m.forwarded_room_key`), it arrives in a transaction, and the
waiting messages are decrypted and acted on then (ingest/ingestor.py, late).
Each key is asked once per process: a restart asks again, never more often.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import timedelta

import aiohttp
from asyncpg import Pool
from mautrix.crypto import OlmMachine
from mautrix.errors import MatrixError
from mautrix.types import DeviceID, IdentityKey, RoomID, SessionID, UserID

from ..db import encrypted as waiting

log = logging.getLogger("daarion.crypto")

WAIT = timedelta(seconds=30)  # a key normally comes with its message, or just before
EVERY_SECONDS = 15.0


class KeyRequests:
    def __init__(self, pool: Pool, machines: Mapping[str, OlmMachine]) -> None:
        self.pool = pool
        self.machines = machines
        self.asked: set[tuple[str, str]] = set()  # (room, session id)

    async def ask_once(self, waited: timedelta = WAIT) -> int:
        """Ask for each key missing longer than `waited` and not asked yet; how many."""
        asked = 0
        for key in await waiting.missing(self.pool, waited):
            if (key.room_id, key.session_id) in self.asked:
                continue
            asker = next((self.machines[u] for u in key.askers if u in self.machines), None)
            if asker is None:
                continue  # none of ours is in the room any more: nobody to read it
            try:
                await asker.request_room_key(
                    RoomID(key.room_id),
                    IdentityKey(key.sender_key),
                    SessionID(key.session_id),
                    {UserID(key.sender): [DeviceID("*")]},
                    timeout=0,  # the key comes in a transaction; nothing waits here
                )
            except (MatrixError, aiohttp.ClientError, TimeoutError) as e:
                log.warning("Could not ask %s for a room key: %s", key.sender, e)
                continue
            self.asked.add((key.room_id, key.session_id))
            asked += 1
            log.info(
                "Asked %s again for the room key of session %s in %s (messages waited "
                "%.0f s for it)",
                key.sender, key.session_id, key.room_id, waited.total_seconds(),
            )  # fmt: skip
        return asked

    async def run_forever(self, every: float = EVERY_SECONDS) -> None:
        while True:
            try:
                await self.ask_once()
            except Exception:
                log.warning("Asking for missing room keys failed", exc_info=True)
            await asyncio.sleep(every)
