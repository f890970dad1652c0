"""The publisher in its own process: it publishes, comes back when it dies, and stops
when the bridge does."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from daarion_bridge.bus.process import PublisherProcess
from daarion_bridge.devtools.nats import LocalNats

from .test_publisher import add_events, config, local_nats, stream_contents, wait_sent

__all__ = ["local_nats"]  # the fixture, used by name


async def until(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_publishes_from_its_own_process_and_stops_cleanly(
    pool: asyncpg.Pool, database_url: str, local_nats: LocalNats, caplog: pytest.LogCaptureFixture
) -> None:
    process = PublisherProcess(database_url, config(local_nats), None)
    process.start()
    caplog.set_level(logging.WARNING, logger="daarion.publisher")
    try:
        await until(lambda: process.connected, "the child to connect")
        pid = process.pid
        assert pid is not None and pid != os.getpid()
        # The URL (with its password) goes down a pipe, never onto the command line.
        cmdline = await asyncio.to_thread(Path(f"/proc/{pid}/cmdline").read_bytes)
        assert database_url.encode() not in cmdline
        assert b"daarion_bridge.bus.process" in cmdline
        await add_events(pool, process, 0, 30)
        await wait_sent(pool)
    finally:
        await process.stop()
    assert [n for _, n in await stream_contents(local_nats)] == list(range(30))
    assert process.pid is None and not process.connected
    assert not caplog.records  # stopped by the end of its input, neither killed nor restarted
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # exited (and reaped), not left behind


async def test_a_child_that_dies_is_started_again_and_loses_nothing(
    pool: asyncpg.Pool,
    database_url: str,
    local_nats: LocalNats,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    process = PublisherProcess(database_url, config(local_nats), None)
    process.start()
    try:
        await until(lambda: process.connected, "the child to connect")
        await add_events(pool, process, 0, 10)
        await wait_sent(pool)
        first = process.pid
        assert first is not None
        with caplog.at_level(logging.WARNING, logger="daarion.publisher"):
            os.kill(first, signal.SIGKILL)
            await until(lambda: not process.connected, "the bridge to see the child gone")
            await add_events(pool, process, 10, 10)  # written while no child runs
            await until(
                lambda: process.connected and process.pid not in (None, first),
                "a new child",
                timeout=20,
            )
        await wait_sent(pool)
    finally:
        await process.stop()
    assert [n for _, n in await stream_contents(local_nats)] == list(range(20))
    ended = [r.getMessage() for r in caplog.records if "Publisher process ended" in r.message]
    assert ended and "exit code -9" in ended[0]


@pytest.mark.parametrize(
    ("stdin", "why"),
    [
        (asyncio.subprocess.DEVNULL, "standard input is not a pipe"),
        (asyncio.subprocess.PIPE, "no settings on standard input"),
    ],
)
async def test_started_by_hand_it_says_why_in_one_line(stdin: int, why: str) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daarion_bridge.bus.process",
        stdin=stdin,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await child.communicate(b"not json\n" if stdin == asyncio.subprocess.PIPE else None)
    assert child.returncode == 1
    assert err.decode().splitlines() == [
        f"daarion-bridge publisher: {why}: the bridge starts this process itself"
    ]
