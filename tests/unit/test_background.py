"""The bridge's background tasks: one that fails is logged when it ends, not when it is
collected; stop cancels what still runs, and a cancelled task is no failure."""

from __future__ import annotations

import asyncio
import logging

import pytest

from daarion_bridge.app import Background


async def test_a_task_that_fails_is_logged_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    background = Background()

    async def broken() -> None:
        raise RuntimeError("boom")

    task = background.spawn(broken(), name="broken loop")
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)  # done callbacks run on the loop's next turn
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == ["Background task 'broken loop' failed"]
    assert failures[0].exc_info is not None and failures[0].exc_info[1] is task.exception()


async def test_stop_cancels_what_still_runs_and_logs_no_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    background = Background()
    forever = background.spawn(asyncio.sleep(3600), name="forever")
    quick = background.spawn(asyncio.sleep(0), name="quick")
    await quick
    await background.stop()
    assert forever.cancelled()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await background.stop()  # again: nothing left
