"""The benchmark stopped with SIGTERM (`timeout`, CI) stops what it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def _stop_with_sigterm_once_postgres_runs(command: list[str]) -> None:
    """Start `command`, SIGTERM it (it alone, as `timeout` does) once its run's embedded
    PostgreSQL is up, and check that it exits with 130 leaving nothing running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *command],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    workdir = None
    lines = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        for line in proc.stderr:
            lines.append(line)
            if found := re.search(r"work dir (\S+)", line):
                workdir = found.group(1)
            if "Synapse up" in line or time.monotonic() > deadline:
                break  # the embedded PostgreSQL runs by now
        assert workdir is not None, "".join(lines)
        assert _processes_mentioning(workdir), "no PostgreSQL of the run was found running"
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, "".join(lines) + rest
    assert not _processes_mentioning(workdir)
    assert not Path(workdir).exists()


def test_sigterm_stops_the_runs_postgres_and_removes_its_work_dir() -> None:
    _stop_with_sigterm_once_postgres_runs(["bench.ingest", "--quick"])


def test_sigterm_to_the_median_stops_its_run_under_way() -> None:
    """The signal reaches bench.median only: it must pass it on to its bench.ingest."""
    _stop_with_sigterm_once_postgres_runs(["bench.median", "--runs", "2", "--quick"])
