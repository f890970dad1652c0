"""The one child-process harness (daarion_bridge.devtools.process) on small Python children:
readiness, a clear error naming the log, and SIGTERM then SIGKILL."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from daarion_bridge.devtools.process import ChildFailed, ChildProcess, log_line, run_to_end


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def test_ready_when_the_probe_says_so_and_stopped_by_sigterm(tmp_path: Path) -> None:
    out = tmp_path / "child.out"
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = ChildProcess("sleeper", python(code), output=out)
    async with child:
        await child.wait_ready(log_line(out, "up"), timeout=30)
        assert child.running and child.pid is not None
    assert not child.running
    assert child.proc is None  # stopped and reaped


async def test_a_child_that_dies_during_start_names_its_log(tmp_path: Path) -> None:
    out = tmp_path / "dies.out"
    child = ChildProcess("dier", python("print('broken config'); raise SystemExit(4)"), output=out)
    with pytest.raises(ChildFailed) as info:
        await child.start(log_line(out, "never printed"), timeout=30)
    assert info.value.returncode == 4
    message = str(info.value)
    assert "dier exited with code 4 during start" in message
    assert str(out) in message and "broken config" in message
    assert not child.running


async def test_not_ready_in_time_is_stopped_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "slow.out"
    child = ChildProcess("slow", python("import time; time.sleep(60)"), output=out)
    with pytest.raises(ChildFailed) as info:
        await child.start(log_line(out, "up"), timeout=0.2, what="saying up")
    assert info.value.returncode is None
    assert "slow not saying up after 0 s; log: " in str(info.value)
    assert not child.running


async def test_a_child_that_ignores_sigterm_gets_sigkill(tmp_path: Path) -> None:
    out = tmp_path / "stubborn.out"
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    told: list[str] = []
    child = ChildProcess("stubborn", python(code), output=out)
    await child.start(log_line(out, "up"), timeout=30)
    assert await child.stop(timeout=0.3, on_kill=lambda: told.append("kill")) == -signal.SIGKILL
    assert told == ["kill"]


async def test_run_to_end_gives_output_and_code() -> None:
    done = await run_to_end(python("import sys; print('out'); print('err', file=sys.stderr)"))
    assert (done.returncode, done.stdout, done.stderr) == (0, "out\n", "err\n")
    with pytest.raises(TimeoutError, match="still running after 0.2 s"):
        await run_to_end(python("import time; time.sleep(60)"), timeout=0.2)
