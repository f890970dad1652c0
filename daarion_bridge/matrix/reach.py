"""Whether the homeserver answers, and a watch that notices when it was away.

A homeserver restart can drop what it had queued for the bridge but not yet pushed, with
nothing in the transactions that follow to show it: its transaction ids simply go on. The
watch notices the restart from outside, as a stretch in which the homeserver did not
answer, and tells the caller when it answers again (the bridge then reads back recent
history). A restart shorter than one probe interval can slip between two probes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp

from ..redact import redact_url

log = logging.getLogger("daarion.homeserver")

PROBE_INTERVAL = 1.0  # seconds between probes: short, because a restart takes seconds
PROBE_TIMEOUT = 5.0  # seconds a probe may take before the homeserver counts as away


async def homeserver_problem(
    http: aiohttp.ClientSession, address: str, timeout: float = PROBE_TIMEOUT
) -> str | None:
    """None when the homeserver answers its public versions endpoint, else what went
    wrong (no token is sent, so none can leak)."""
    try:
        async with http.get(
            f"{address}/_matrix/client/versions", timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            return None if resp.status == 200 else f"HTTP {resp.status}"
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        return str(e) or type(e).__name__


async def watch_homeserver(
    http: aiohttp.ClientSession,
    address: str,
    on_back: Callable[[float], None],
    interval: float = PROBE_INTERVAL,
    timeout: float = PROBE_TIMEOUT,
) -> None:
    """Probe the homeserver every `interval` seconds, forever; after probes that failed,
    the first that succeeds calls `on_back` with how long it was away (seconds since the
    last good probe)."""
    shown = redact_url(address)
    last_good = time.monotonic()
    away = False
    while True:
        problem = await homeserver_problem(http, address, timeout)
        now = time.monotonic()
        if problem is None:
            if away:
                seconds = now - last_good
                log.info(
                    "The homeserver at %s answers again after %.0f s away; the bridge reads "
                    "back recent history for anything it dropped while restarting",
                    shown,
                    seconds,
                )
                on_back(seconds)
            away, last_good = False, now
        elif not away:
            away = True
            log.warning("The homeserver at %s does not answer (%s)", shown, problem)
        await asyncio.sleep(interval)
