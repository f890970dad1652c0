"""A channel's microDAO follows its room's space.

When a room's m.space.parent, or a linked space's m.space.child, changes, the room's
microDAO is worked out again after the commit, by the rule an invite uses (the space
lists the room, or the parent's sender may add children to it: ingest/invites.py), and a
channel whose room now belongs to another microDAO's space moves there, announced as
messaging.channel.updated. A room that leaves every linked space stays where it is: a
link made by `!daarion link` is not undone by a space's housekeeping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from asyncpg import Pool
from mautrix.errors import MatrixRequestError

from ..config import Config
from ..db import channels
from ..matrix.bot import Bot
from ..translate.rooms import snapshot_from_state
from .invites import Invites
from .moves import Move, move_channel

log = logging.getLogger("daarion.spaces")


class SpacesFollow:
    def __init__(
        self,
        pool: Pool,
        bot: Bot,
        invites: Invites,
        config: Config,
        on_announced: Callable[[], None],
    ) -> None:
        self.pool = pool
        self.bot = bot
        self.invites = invites
        self.config = config
        self.on_announced = on_announced
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, room_ids: Sequence[str]) -> None:
        """Map these rooms again in the background: the transaction answers now."""
        task = asyncio.create_task(self._follow_all(list(room_ids)), name="space links")
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("Following a space change failed", exc_info=error)

    async def _follow_all(self, room_ids: list[str]) -> None:
        async with self.pool.acquire() as conn:
            found = await channels.by_rooms(conn, room_ids)
        for room_id, channel in found.items():
            try:
                await self.follow(room_id, channel.microdao)
            except MatrixRequestError as e:
                log.warning("Could not read %s to follow its space (%s)", room_id, e.errcode)

    async def follow(self, room_id: str, current: str) -> None:
        snapshot = snapshot_from_state(room_id, await self.bot.room_state(room_id))
        target = await self.invites.space_microdao(snapshot)
        if target is None or target == current:
            return
        done = await move_channel(self.pool, room_id, target, self.config, room_id)
        if done.result is not Move.MOVED:
            return
        if done.announced:
            self.on_announced()
        log.info("Room %s moved from %s to %s with its space", room_id, current, target)

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
