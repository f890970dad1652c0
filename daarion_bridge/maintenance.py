"""Housekeeping that keeps the bridge's own tables bounded."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from asyncpg import Pool

log = logging.getLogger("daarion.maintenance")

# Synapse only ever retries its oldest unsent transaction, so a week of ids is far more
# than a replay can reach back.
TRANSACTION_RETENTION = timedelta(days=7)
INTERVAL_SECONDS = 3600


async def prune_transactions(pool: Pool, retention: timedelta = TRANSACTION_RETENTION) -> int:
    status = await pool.execute(
        "DELETE FROM bridge_transactions WHERE processed_at < now() - $1::interval", retention
    )
    return int(status.split()[-1])


async def run_forever(pool: Pool, interval: float = INTERVAL_SECONDS) -> None:
    while True:
        try:
            pruned = await prune_transactions(pool)
            if pruned:
                log.info("Pruned %d transaction ids older than %s", pruned, TRANSACTION_RETENTION)
        except Exception:
            # The next round tries again; ingest does not depend on this.
            log.warning("Pruning transaction ids failed", exc_info=True)
        await asyncio.sleep(interval)
