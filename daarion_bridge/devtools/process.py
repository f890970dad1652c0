"""The one harness for child processes of the dev mode, the tests and the benchmark.

``ChildProcess`` spawns a command with a given environment and output file, waits until
an async probe says it is ready (an HTTP 200, an open port, a line in a log), naming the
log when the child dies or does not get ready in time, and stops it gracefully: SIGTERM,
a wait, then SIGKILL. It is an async context manager.

Popen (not asyncio's subprocess) so a child is not tied to one event loop: pytest's
session fixtures and ``kill()`` from a finalizer outlive any one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import aiohttp

Probe = Callable[[], Awaitable[bool]]
"""Asked again and again while the child starts: is it ready?"""

POLL_SECONDS = 0.05


class ChildFailed(RuntimeError):
    """The child exited during its start, or was not ready in time. The message names
    its log and ends with the log's tail."""

    def __init__(self, message: str, returncode: int | None) -> None:
        super().__init__(message)
        self.returncode = returncode  # None: still running, just not ready


def _load_prctl() -> Any:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


# Looked up now, in the parent: the child of a fork must not import or load anything.
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """preexec_fn: have Linux SIGTERM the child when the thread that started it dies, so a
    killed test run or dev session leaves no Synapse or bridge behind."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def tail_file(path: Path, lines: int) -> str:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 256 * 1024))
        data = f.read()
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


# -- probes -----------------------------------------------------------------------------------


def http_ok(url: str) -> Probe:
    """Ready once ``url`` answers 200."""

    async def probe() -> bool:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with (
                aiohttp.ClientSession() as session,
                session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp,
            ):
                return resp.status == 200
        return False

    return probe


def port_open(port: int, host: str = "127.0.0.1") -> Probe:
    """Ready once something accepts TCP connections on ``host:port``."""

    async def probe() -> bool:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    return probe


def log_line(path: Path, text: str) -> Probe:
    """Ready once a line of ``path`` contains ``text``."""

    def found() -> bool:
        if not path.exists():
            return False
        data = path.read_bytes().decode("utf-8", "replace")
        return any(text in line for line in data.splitlines())

    async def probe() -> bool:
        return await asyncio.to_thread(found)

    return probe


# -- the child --------------------------------------------------------------------------------


class ChildProcess:
    """``command`` as a child process.

    ``output``: the file its stdout (and stderr, unless ``stderr_to_output`` is off) is
    appended to; None inherits ours. ``logs``: further files it writes (its own log),
    shown with ``output`` when it fails. ``own_group``: a process group of its own, so
    Ctrl-C at a terminal reaches only us (we stop children in order) and signals reach
    whatever it starts; off, signals go to the child alone and Ctrl-C reaches it too."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        output: Path | None = None,
        stderr_to_output: bool = True,
        logs: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        own_group: bool = True,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.output = output
        self.stderr_to_output = stderr_to_output
        self.logs = list(logs)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.own_group = own_group
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def spawn(self, banner: str | None = None) -> None:
        """Start the child; ``banner`` is first written to ``output`` (a line that tells
        one start from the next in a file they share)."""
        assert not self.running, f"{self.name} already running"
        out: IO[bytes] | None = None
        if self.output is not None:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            out = self.output.open("ab")
        try:
            if out is not None and banner is not None:
                out.write(banner.encode())
                out.flush()
            self.proc = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out is not None and self.stderr_to_output else None,
                start_new_session=self.own_group,
                preexec_fn=die_with_parent,
            )
        finally:
            if out is not None:
                out.close()  # the child holds its own copy

    async def wait_ready(self, probe: Probe, timeout: float, what: str = "ready") -> None:
        """Ask ``probe`` until it says yes. ChildFailed if the child exits first or
        ``timeout`` seconds pass (the child is left as it is)."""
        assert self.proc is not None, f"{self.name} not spawned"
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise ChildFailed(
                    f"{self.name} exited with code {code} during start; {self.log_note()}", code
                )
            if await probe():
                return
            if time.monotonic() > deadline:
                raise ChildFailed(
                    f"{self.name} not {what} after {timeout:.0f} s; {self.log_note()}", None
                )
            await asyncio.sleep(POLL_SECONDS)

    async def start(
        self, probe: Probe | None = None, timeout: float = 30, what: str = "ready"
    ) -> float:
        """Spawn, then wait until ``probe`` says ready; on failure, stop the child and
        raise ChildFailed. Returns (and keeps in ``start_seconds``) the seconds it took."""
        t0 = time.monotonic()
        self.spawn()
        if probe is not None:
            try:
                await self.wait_ready(probe, timeout, what)
            except BaseException:
                await self.stop()
                raise
        self.start_seconds = time.monotonic() - t0
        return self.start_seconds

    def signal(self, sig: int, alone: bool = False) -> None:
        """Send ``sig`` to the child's group (its own), or to the child alone (``alone``,
        or when it has no group of its own), as `timeout` or a crash would."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            if self.own_group and not alone:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass
        except PermissionError:  # its group holds a process not ours: the child, at least
            proc.send_signal(sig)

    async def wait(self, timeout: float | None = None) -> int | None:
        """Its exit code once it exits; None if it still runs after ``timeout``."""
        proc = self.proc
        if proc is None:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        while proc.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                return None
            await asyncio.sleep(POLL_SECONDS)
        return proc.returncode

    async def stop(
        self, timeout: float | None = 10, on_kill: Callable[[], None] | None = None
    ) -> int | None:
        """SIGTERM, wait up to ``timeout`` seconds (None: as long as it takes), then
        SIGKILL (``on_kill`` is told first). Returns the exit code, None if never spawned."""
        proc = self.proc
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                self.signal(signal.SIGTERM)
                if await self.wait(timeout) is None:
                    if on_kill is not None:
                        on_kill()
                    self.kill()
        finally:
            self.proc = None
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL and reap, synchronously: for finalizers where no event loop runs, and
        for a crash with no goodbye."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self.signal(signal.SIGKILL)
            proc.wait()

    def log_note(self, lines: int = 60) -> str:
        """Where its output went, and the tail of it."""
        paths = [p for p in (self.output, *self.logs) if p is not None]
        where = "log: " + ", ".join(str(p) for p in paths) if paths else "output not captured"
        return f"{where}\n{self.tail(lines)}"

    def tail(self, lines: int = 60) -> str:
        parts = []
        for path in (self.output, *self.logs):
            if path is not None and path.exists():
                text = tail_file(path, lines)
                if text.strip():
                    parts.append(f"--- {path} ---\n{text}")
        return "\n".join(parts) or f"(no {self.name} output)"

    async def __aenter__(self) -> ChildProcess:
        if self.proc is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


# -- one-shot commands ------------------------------------------------------------------------


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


async def run_to_end(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = 90,
    stderr_to_stdout: bool = False,
) -> Finished:
    """Run a command that ends by itself; SIGKILL its group and raise TimeoutError
    (with what it printed) if it is still running after ``timeout`` seconds (None: no
    limit)."""
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if stderr_to_stdout else subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = await proc.communicate()
        raise TimeoutError(
            f"`{' '.join(command)}` still running after {timeout} s\n"
            f"stdout: {out.decode(errors='replace')[-3000:]}\n"
            f"stderr: {(err or b'').decode(errors='replace')[-3000:]}"
        ) from None
    assert proc.returncode is not None
    return Finished(
        proc.returncode,
        out.decode("utf-8", "replace"),
        (err or b"").decode("utf-8", "replace"),
        time.monotonic() - t0,
    )


def python_module(module: str, *args: str) -> list[str]:
    """``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]
