"""Room upgrades: a channel follows its room when the room is upgraded.

Element's "Upgrade this room" (and a homeserver admin's upgrade) makes a new room whose
m.room.create names the old one as predecessor, and sends m.room.tombstone into the old
room naming the new one. When a channel's room is tombstoned (only its moderators can),
the bot joins the new room, brings the channel's agents along, and the same channel row
moves to the new room: same id, slug, microDAO and history, members re-read from the
new room, `messaging.channel.updated` with both room ids. An invite into the new room
that comes first is the same move (ingest/invites.py); whichever comes second finds the
channel moved and changes nothing.

The wish to follow is committed with the tombstone (db/pending_upgrades.py) and deleted
once followed: a bridge stopped before it, or a homeserver that refused the join (the
new room not open to the bot yet), tries again at the next start and whenever the
homeserver comes back, up to GIVE_UP_AFTER times.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence

from asyncpg import Pool
from mautrix.errors import MatrixRequestError
from mautrix.types import RoomID

from ..db import channels, members, pending_upgrades
from ..matrix.bot import UNREACHABLE, Bot, room_state
from ..matrix.puppets import Puppets
from ..translate.events import RoomTombstoned
from ..translate.rooms import snapshot_from_state
from .channel_setup import ChannelSetup
from .ingestor import Ingestor
from .invites import bring_agents

log = logging.getLogger("daarion.upgrades")

GIVE_UP_AFTER = 20  # failed attempts: starts and homeserver returns, not a busy loop


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

        self._following: set[tuple[str, str]] = set()  # (room id, tombstone event id)

    def submit(self, tombstones: Sequence[RoomTombstoned]) -> None:
        """Follow these upgrades in the background: the transaction answers now."""
        for tombstone in tombstones:
            key = (tombstone.room_id, tombstone.event_id)
            if key in self._following:
                continue  # under way already
            self._following.add(key)
            task = asyncio.create_task(self._follow(tombstone), name="room upgrade")
            self._tasks.add(task)
            task.add_done_callback(self._ended)
            task.add_done_callback(functools.partial(self._done_with, key))

    def _done_with(self, key: tuple[str, str], _: asyncio.Task[None]) -> None:
        self._following.discard(key)

    def resume(self) -> None:
        """The upgrades still to follow (at start, and when the homeserver is back)."""
        task = asyncio.create_task(self._resume(), name="room upgrades to follow")
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    async def _resume(self) -> None:
        todo = await pending_upgrades.pending(self.pool)
        if todo:
            log.info("%d room upgrade(s) still to follow", len(todo))
            self.submit(todo)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("Following a room upgrade failed", exc_info=error)

    async def _follow(self, tombstone: RoomTombstoned) -> None:
        try:
            await self.follow(tombstone)
        except (MatrixRequestError, *UNREACHABLE) as e:
            reason = getattr(e, "errcode", None) or type(e).__name__
            if await pending_upgrades.failed(self.pool, tombstone, GIVE_UP_AFTER):
                log.warning(
                    "Gave up following the upgrade of %s to %s after %d attempts (%s); an "
                    "invite of the bot into the new room still moves the channel",
                    tombstone.room_id, tombstone.replacement, GIVE_UP_AFTER, reason,
                )  # fmt: skip
                return
            # The invite into the new room, when it comes, makes the same move.
            log.warning(
                "Could not follow the upgrade of %s to %s yet (%s); the next start or the "
                "homeserver's return tries again, and an invite of the bot into the new "
                "room makes the same move",
                tombstone.room_id, tombstone.replacement, reason,
            )  # fmt: skip
            return
        await pending_upgrades.done(self.pool, tombstone)

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
