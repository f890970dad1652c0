"""Backfill: a room that becomes a channel brings its earlier history.

The index starts at the bot's join, so a room with a year of conversation would show
none of it. When a room first becomes a channel, the transaction that makes it records
the wish in `bridge_backfills`; after the commit (the homeserver has its 200 by then)
this reads the room's history from before the join, as far as the homeserver lets the
reader see it (the room's m.room.history_visibility), back to
`bridge.backfill.max_messages` events or `bridge.backfill.max_age` before the join, and
feeds it through the ingest path of the catch-up (catchup.py): the same pager, the same
idempotent writes, in batches that each hold the ingest lock briefly. Backfilled
messages call no agent and run no command; `messaging.message.created` says
`backfilled: true`.

A channel moved to an upgraded room, or a room the bot joins again, brings nothing: its
history is in the index already. A bridge stopped mid-way finds the wish at its next
start and reads the history again: what is indexed already is skipped, and a batch
written twice is a replayed transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any
from uuid import UUID

from asyncpg import Pool
from mautrix.appservice import IntentAPI

from .. import metrics
from ..config import BackfillConfig
from ..db import backfills
from ..db.channels import Channel
from ..matrix.bot import room_history
from .catchup import CATCH_UP_TYPES, CatchUp, is_join_of, target_of

log = logging.getLogger("daarion.backfill")


async def earlier_events(
    pages: AsyncIterator[list[dict[str, Any]]], reader: str, max_messages: int, max_age: float
) -> list[dict[str, Any]]:
    """From a room's history, newest first: the message events before the reader's latest
    join, at most `max_messages`, none older than `max_age` seconds before the join; and
    the edits and redactions after the join (one may act on a message only the backfill
    brings). Oldest first, as the homeserver would have pushed them."""
    before: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []
    oldest_ms: float | None = None  # known once the join is passed
    async for page in pages:
        for event in page:
            ts = event.get("origin_server_ts")
            if oldest_ms is None:
                if is_join_of(event, reader):
                    joined_ms = ts if isinstance(ts, int) else time.time() * 1000
                    oldest_ms = joined_ms - max_age * 1000
                elif event.get("type") in CATCH_UP_TYPES and target_of(event) is not None:
                    after.append(event)
                continue
            if isinstance(ts, int) and ts < oldest_ms:
                return [*before[::-1], *after[::-1]]
            if event.get("type") in CATCH_UP_TYPES:
                before.append(event)
                if len(before) >= max_messages:
                    return [*before[::-1], *after[::-1]]
    return [*before[::-1], *after[::-1]]


class Backfill:
    """Reads back new channels' earlier history, one room at a time, in the background."""

    def __init__(self, pool: Pool, catch_up: CatchUp, config: BackfillConfig) -> None:
        self.pool = pool
        self.catch_up = catch_up
        self.config = config
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def submit(self, channels: Sequence[Channel]) -> None:
        """New channels were committed (their wishes with them): read them back now."""
        self._start()

    def resume(self) -> None:
        """At start: the wishes a stopped bridge left."""
        self._start()

    def _start(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True  # the running round reads the wishes again when it ends
            return
        self._task = asyncio.create_task(self._run(), name="backfill")
        self._task.add_done_callback(self._report)

    @staticmethod
    def _report(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("Backfill failed", exc_info=task.exception())

    async def _run(self) -> None:
        failed: set[UUID] = set()  # tried again at the next start, not in this loop
        while True:
            self._again = False
            todo = [p for p in await backfills.pending(self.pool) if p.channel_id not in failed]
            for pending in todo:
                try:
                    await self.backfill_room(pending)
                except Exception as e:  # the wish stays: the next start tries again
                    failed.add(pending.channel_id)
                    metrics.BACKFILLS.labels("failed").inc()
                    log.warning(
                        "Backfill of %s failed (%s); the next start tries again",
                        pending.room_id,
                        e or type(e).__name__,
                    )
            if not todo and not self._again:
                return

    async def backfill_room(self, pending: backfills.Pending) -> None:
        room_id = pending.room_id
        if not self.config.enabled:
            await backfills.done(self.pool, pending.channel_id)
            metrics.BACKFILLS.labels("off").inc()
            log.info(
                "Room %s became a channel without its earlier history: the backfill is off "
                "(bridge.backfill.max_messages: 0)",
                room_id,
            )
            return
        started = time.monotonic()
        log.info(
            "Backfill of %s (channel %s): reading up to %d event(s) from before the bridge joined",
            room_id,
            pending.channel_id,
            self.config.max_messages,
        )
        events = await self.catch_up.read_back(room_id, self._scan, "Backfill")
        fed = 0

        def progress(indexed: int) -> None:
            nonlocal fed
            metrics.BACKFILLED_EVENTS.inc(indexed - fed)
            fed = indexed
            log.info("Backfill of %s: %d of %d event(s) fed", room_id, indexed, len(events))

        await self.catch_up.feed(events, "backfill", backfill=True, progress=progress)
        await backfills.done(self.pool, pending.channel_id)
        metrics.BACKFILLS.labels("done").inc()
        log.info(
            "Backfill of %s done: %d earlier event(s) the index lacked, in %.1f s",
            room_id,
            len(events),
            time.monotonic() - started,
        )

    async def _scan(self, room_id: str, reader: IntentAPI) -> list[dict[str, Any]]:
        pages = room_history(reader, room_id)
        return await earlier_events(
            pages, reader.mxid, self.config.max_messages, self.config.max_age
        )

    async def stop(self) -> None:
        """A backfill cut short keeps its wish: the next start reads the room again."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
