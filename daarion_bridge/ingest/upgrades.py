"""Room upgrades: a channel follows its room when the room is upgraded.

Element's "Upgrade this room" (and a homeserver admin's upgrade) makes a new room whose
m.room.create names the old one as predecessor, and sends m.room.tombstone into the old
room naming the new one. When a channel's room is tombstoned (only its moderators can),
the bot joins the new room, brings the channel's agents along, and the same channel row
moves to the new room: same id, slug, microDAO and history, members re-read from the
new room, `messaging.channel.updated` with both room ids. An invite into the new room
that comes first is the same move (ingest/invites.py); whichever comes second finds the
channel moved and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from asyncpg import Pool
from mautrix.errors import MatrixRequestError
from mautrix.types import RoomID

from ..db import channels, members
from ..matrix.bot import Bot, room_state
from ..matrix.puppets import Puppets
from ..translate.events import RoomTombstoned
from ..translate.rooms import snapshot_from_state
from .channel_setup import ChannelSetup
from .ingestor import Ingestor
from .invites import bring_agents

log = logging.getLogger("daarion.upgrades")


class Upgrades:
    def __init__(
        self, pool: Pool, bot: Bot, puppets: Puppets, ingestor: Ingestor, bot_mxid: str
    ) -> None:
        self.pool = pool
        self.bot = bot
        self.puppets = puppets
        self.ingestor = ingestor
        self.bot_mxid = bot_mxid
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, tombstones: Sequence[RoomTombstoned]) -> None:
        """Follow these upgrades in the background: the transaction answers now."""
        for tombstone in tombstones:
            task = asyncio.create_task(self._follow(tombstone), name="room upgrade")
            self._tasks.add(task)
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("Following a room upgrade failed", exc_info=error)

    async def _follow(self, tombstone: RoomTombstoned) -> None:
        try:
            await self.follow(tombstone)
        except MatrixRequestError as e:
            # The invite into the new room, when it comes, makes the same move.
            log.warning(
                "Could not follow the upgrade of %s to %s (%s); an invite of the bot into "
                "the new room will",
                tombstone.room_id,
                tombstone.replacement,
                e.errcode,
            )

    async def follow(self, tombstone: RoomTombstoned) -> None:
        old, new = tombstone.room_id, tombstone.replacement
        assert new is not None  # a tombstone without a replacement is no upgrade
        server = tombstone.sender.split(":", 1)[1]
        await self.bot.intent.join_room(RoomID(new), servers=[server], max_retries=0)
        async with self.pool.acquire() as conn:
            channel = (await channels.by_rooms(conn, [old])).get(old)
            agents = await members.agents_in_room(conn, old)
        if channel is None:
            return  # moved already (an invite into the new room came first)
        state = await room_state(self.bot.intent, new)
        if snapshot_from_state(new, state).predecessor != old:
            log.warning(
                "%s, named by the tombstone of %s, does not name it as its predecessor: "
                "not followed",
                new,
                old,
            )
            await self.bot.intent.leave_room(RoomID(new), reason="Not an upgrade of my room")
            return
        # The agents first, so the snapshot holds them: members, sessions and all.
        await bring_agents(self.bot, self.puppets, agents, new)
        state = await room_state(self.bot.intent, new)
        snapshot = snapshot_from_state(new, state, self.bot_mxid)
        setup = ChannelSetup(
            snapshot,
            channel.microdao,
            tombstone.sender,
            self.bot_mxid,
            tombstone.event_id,
            replaces_room=old,
        )
        await self.ingestor.write_setups(f"upgrade-{tombstone.event_id}", [setup])
        log.info("Channel %s followed its room's upgrade from %s to %s", channel.id, old, new)

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
