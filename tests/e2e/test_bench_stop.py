"""The benchmark stopped with SIGTERM (`timeout`, CI) stops what it started."""

from __future__ import annotations

import re
import signal
from pathlib import Path

from daarion_bridge.devtools.process import ChildProcess, log_line, python_module

REPO = Path(__file__).resolve().parents[2]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


async def _stop_with_sigterm_once_postgres_runs(command: list[str], tmp_path: Path) -> None:
    """Start `command`, SIGTERM it (it alone, as `timeout` does) once its run's embedded
    PostgreSQL is up, and check that it exits with 130 leaving nothing running."""
    out = tmp_path / "bench.out"
    run = ChildProcess("bench", python_module(*command), output=out, cwd=REPO)
    workdir = None
    try:
        run.spawn()
        # Synapse starts after the run's embedded PostgreSQL: that runs by now.
        await run.wait_ready(log_line(out, "Synapse up"), timeout=120, what="Synapse up")
        found = re.search(r"work dir (\S+)", out.read_text())  # noqa: ASYNC240 (small file)
        workdir = found.group(1) if found else None
        assert workdir is not None, run.tail()
        assert _processes_mentioning(workdir), "no PostgreSQL of the run was found running"
        run.signal(signal.SIGTERM, alone=True)
        code = await run.wait(timeout=120)
    finally:
        run.kill()
    assert code == 130, run.tail(200)
    assert not _processes_mentioning(workdir)
    assert not Path(workdir).exists()  # noqa: ASYNC240 (once)


async def test_sigterm_stops_the_runs_postgres_and_removes_its_work_dir(tmp_path: Path) -> None:
    await _stop_with_sigterm_once_postgres_runs(["bench.ingest", "--quick"], tmp_path)


async def test_sigterm_to_the_median_stops_its_run_under_way(tmp_path: Path) -> None:
    """The signal reaches bench.median only: it must pass it on to its bench.ingest."""
    await _stop_with_sigterm_once_postgres_runs(
        ["bench.median", "--runs", "2", "--quick"], tmp_path
    )
