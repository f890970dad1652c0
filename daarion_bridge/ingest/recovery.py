"""After a database outage: wait until it answers, then ping the homeserver.

Synapse backs off up to 512 s after failed pushes; a successful ping makes it resend
at once instead.
"""

from __future__ import annotations

import asyncio
import logging

from asyncpg import Pool

from .. import metrics
from ..matrix.bot import Bot

log = logging.getLogger("daarion.recovery")


class DatabaseRecovery:
    def __init__(self, pool: Pool, bot: Bot, interval: float = 1.0) -> None:
        self.pool = pool
        self.bot = bot
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    @property
    def recovering(self) -> bool:
        return self._task is not None and not self._task.done()

    def database_failed(self) -> None:
        metrics.DATABASE_ERRORS.inc()
        if not self.recovering:
            self._task = asyncio.create_task(self._recover(), name="database-recovery")
            self._task.add_done_callback(self._report)

    @staticmethod
    def _report(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("Database recovery failed", exc_info=task.exception())

    async def _recover(self) -> None:
        while True:
            try:
                await self.pool.fetchval("SELECT 1", timeout=5)
                break
            except Exception as e:  # every failure here means: not back yet
                log.info("Database still unavailable (%s); retrying", type(e).__name__)
                await asyncio.sleep(self.interval)
        log.info("Database is back; pinging the homeserver to resend at once")
        for attempt in range(5):
            try:
                await self.bot.ping()
                return
            except Exception as e:
                log.warning(
                    "Homeserver ping failed (%s), attempt %d", type(e).__name__, attempt + 1
                )
                await asyncio.sleep(self.interval * 2**attempt)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
