"""The real bridge as a child process, its command line run to the end, and the config
files the dev mode, the end-to-end tests and the benchmark write for it."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import daarion_bridge
from daarion_bridge.config import EXAMPLE_CONFIG, read_yaml, write_yaml_atomic

from . import bridge_command
from .process import ChildFailed, ChildProcess, Finished, http_ok, python_module, run_to_end

REPO_ROOT = Path(daarion_bridge.__file__).resolve().parent.parent


def child_env(strip_overrides: bool = False) -> dict[str, str]:
    """Environment for `python -m daarion_bridge`: importable from a plain checkout.
    ``strip_overrides``: drop DAARION_BRIDGE_* variables, which would silently change what
    a test's config says."""
    env = dict(os.environ)
    root = str(REPO_ROOT)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts:
        env["PYTHONPATH"] = os.pathsep.join([root, *parts])
    if strip_overrides:
        for key in list(env):
            if key.startswith("DAARION_BRIDGE_"):
                del env[key]
    return env


# -- config -----------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return read_yaml(path)


def dump_yaml(data: Any, path: Path) -> None:
    write_yaml_atomic(path, data)


def file_logging(log_file: Path, level: str = "DEBUG") -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "plain",
                "filename": str(log_file),
                "encoding": "utf-8",
            }
        },
        "root": {"level": level, "handlers": ["file"]},
        "loggers": {"aiohttp.access": {"level": "WARNING"}},
    }


def write_bridge_config(
    path: Path,
    *,
    homeserver_url: str,
    appservice_port: int,
    database_url: str,
    default_microdao: str | None,
    log_file: Path,
) -> Path:
    """A copy of the example config pointed at a local Synapse and database."""
    cfg = load_yaml(EXAMPLE_CONFIG)
    cfg["homeserver"]["address"] = homeserver_url
    cfg["homeserver"]["domain"] = "localhost"
    cfg["homeserver"]["verify_ssl"] = False
    cfg["homeserver"]["connect_timeout"] = 15
    cfg["appservice"]["address"] = f"http://127.0.0.1:{appservice_port}"
    cfg["appservice"]["hostname"] = "127.0.0.1"
    cfg["appservice"]["port"] = appservice_port
    cfg["database"]["url"] = database_url
    cfg["bridge"]["default_microdao"] = default_microdao
    cfg["logging"] = file_logging(log_file)
    dump_yaml(cfg, path)
    return path


def derive_config(base: Path, path: Path, edit: Callable[[Any], None]) -> Path:
    """Write a modified copy of the bridge config ``base`` (tokens included) to ``path``."""
    cfg = copy.deepcopy(load_yaml(base))
    edit(cfg)
    dump_yaml(cfg, path)
    return path


# -- the command line, run to the end ---------------------------------------------------------

CliResult = Finished


async def run_cli(*args: str, timeout: float = 90) -> CliResult:
    """Run ``python -m daarion_bridge <args>`` to completion (AssertionError if it is
    still running after ``timeout`` seconds)."""
    try:
        return await run_to_end(
            python_module("daarion_bridge", *args),
            cwd=REPO_ROOT,
            env=child_env(strip_overrides=True),
            timeout=timeout,
        )
    except TimeoutError as e:
        raise AssertionError(str(e)) from None


# -- the bridge process -----------------------------------------------------------------------


class BridgeProcess:
    """``python -m daarion_bridge -c cfg -r reg`` as a child process, its output to
    ``output`` (None: ours), in ``cwd`` (None: ours), ready once ``/_matrix/mau/ready``
    answers 200."""

    def __init__(
        self,
        config: Path,
        registration: Path,
        port: int,
        output: Path | None = None,
        log_file: Path | None = None,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = REPO_ROOT,
    ) -> None:
        self.config = config
        self.registration = registration
        self.port = port
        self.output = output
        self.log_file = log_file
        self.starts = 0
        self.start_seconds: list[float] = []
        self.child = ChildProcess(
            "bridge",
            bridge_command(config, registration),
            output=output,
            logs=[log_file] if log_file is not None else [],
            env=env if env is not None else child_env(strip_overrides=True),
            cwd=cwd,
        )

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/_matrix/mau/ready"

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The running Popen, None once stopped."""
        return self.child.proc

    @property
    def running(self) -> bool:
        return self.child.running

    @property
    def returncode(self) -> int | None:
        return self.child.returncode

    def spawn(self) -> None:
        self.starts += 1
        self.child.spawn(banner=f"\n===== start #{self.starts} at {datetime.now(UTC)} =====\n")

    async def start(self, timeout: float = 30) -> None:
        """Spawn and wait for ready; ChildFailed (with the log's tail) if it exits first
        or is not ready in time (then it is stopped)."""
        assert not self.running, "bridge already running"
        t0 = time.monotonic()
        self.spawn()
        try:
            await self.wait_ready(timeout)
        except ChildFailed:
            await self.stop()
            raise
        self.start_seconds.append(time.monotonic() - t0)

    async def wait_ready(self, timeout: float) -> None:
        await self.child.wait_ready(http_ok(self.ready_url), timeout, f"ready at {self.ready_url}")

    def freeze(self) -> None:
        """SIGSTOP: the bridge keeps its sockets but answers nothing, so a transaction
        Synapse pushes now stays in flight until the process dies or thaws."""
        assert self.child.proc is not None
        self.child.signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL, no goodbye."""
        self.child.kill()
        self.child.proc = None

    async def stop(
        self, timeout: float = 15, on_kill: Callable[[], None] | None = None
    ) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Returns the exit code."""
        return await self.child.stop(timeout, on_kill)

    async def restart(self, timeout: float = 30) -> None:
        await self.stop()
        await self.start(timeout)

    def tail(self, lines: int = 60) -> str:
        return self.child.tail(lines)
