"""Housekeeping that keeps the bridge's own tables bounded."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from asyncpg import Pool

from .. import metrics
from . import bookkeeping, crypto_store, encrypted, outbox, sessions

log = logging.getLogger("daarion.maintenance")

# Synapse only ever retries its oldest unsent transaction, so a week of ids is far more
# than a replay can reach back.
TRANSACTION_RETENTION = timedelta(days=7)
# Long enough to notice, fix and replay (`daarion-bridge dead-letters`); the letters keep
# message text, which must not outlive its use.
DEAD_LETTER_RETENTION = timedelta(days=30)
# Room keys of a room the bridge's users all left (or of a room that is no channel,
# none new for as long) are kept this long: for a quick return, and the context of
# what was said before leaving (db/crypto_store.py).
ROOM_KEY_GRACE = timedelta(days=30)
# A sender shares a room key as it sends: one that has not come in a week never will.
KEY_WAIT_RETENTION = timedelta(days=7)
INTERVAL_SECONDS = 3600


async def prune_transactions(pool: Pool, retention: timedelta = TRANSACTION_RETENTION) -> int:
    status = await pool.execute(
        "DELETE FROM bridge_transactions WHERE processed_at < now() - $1::interval", retention
    )
    return int(status.split()[-1])


async def prune_crypto(pool: Pool, rooms_pruned: Callable[[], None] | None = None) -> None:
    """The crypto store and the messages waiting for keys (encryption on only: the
    `crypto_*` tables exist then). `rooms_pruned` is called when room keys went (the
    crypto stores' cache forgets its sessions)."""
    rooms, pruned = await crypto_store.prune_done_rooms(pool, ROOM_KEY_GRACE)
    if rooms:
        if rooms_pruned is not None:
            rooms_pruned()
        log.info(
            "Pruned %d room keys of %d rooms the bridge has been done with for %s",
            pruned,
            rooms,
            ROOM_KEY_GRACE,
        )
    pruned = await encrypted.prune(pool, KEY_WAIT_RETENTION)
    if pruned:
        what = "Gave up on %d messages waiting for a room key for more than %s"
        log.info(what, pruned, KEY_WAIT_RETENTION)
        metrics.WAITING_FOR_KEYS.set(await encrypted.count(pool))


async def run_forever(
    pool: Pool,
    interval: float = INTERVAL_SECONDS,
    outbox_retention: float | None = None,
    crypto: bool = False,
    rooms_pruned: Callable[[], None] | None = None,
) -> None:
    """`crypto`: encryption is on, and its tables are pruned too (see prune_crypto)."""
    while True:
        try:
            pruned = await prune_transactions(pool)
            if pruned:
                log.info("Pruned %d transaction ids older than %s", pruned, TRANSACTION_RETENTION)
            pruned = await bookkeeping.prune_dead_letters(pool, DEAD_LETTER_RETENTION)
            if pruned:
                log.info("Pruned %d dead letters older than %s", pruned, DEAD_LETTER_RETENTION)
            if outbox_retention is not None:
                retention = timedelta(seconds=outbox_retention)
                pruned = await outbox.prune(pool, retention)
                if pruned:
                    log.info("Pruned %d published events older than %s", pruned, retention)
            if crypto:
                await prune_crypto(pool, rooms_pruned)
        except Exception:
            # The next round tries again; ingest does not depend on this.
            log.warning("Pruning the bridge's own tables failed", exc_info=True)
        await asyncio.sleep(interval)


def sweep_interval(idle_after: float) -> float:
    """Often enough that a session turns idle within a quarter of the timeout, at most a
    minute late, and never more than once a second."""
    return min(max(idle_after / 4, 1.0), 60.0)


async def sweep_sessions_forever(pool: Pool, idle_after: float) -> None:
    """Sessions without activity for `idle_after` seconds become idle. The times are in
    the database, so a restart loses nothing: the first round after it catches up."""
    while True:
        try:
            idled = await sessions.mark_idle(pool, idle_after)
            if idled:
                log.info("%d agent session(s) became idle", idled)
        except Exception:
            log.warning("Sweeping idle agent sessions failed", exc_info=True)
        await asyncio.sleep(sweep_interval(idle_after))
