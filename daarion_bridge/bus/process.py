"""The publisher (publisher.py) in a process of its own.

Synapse waits on ingest, and ingest runs on one core. Publishing (reading the outbox,
one NATS publish and one ack per event) took about a sixth of that core; in a process
of its own it runs on the core that PostgreSQL leaves free while the bridge works.

The bridge and the child talk over the child's stdin and stdout:
- bridge to child: first one JSON line with the database URL, the `nats` section and
  the `logging` section (not on the command line, where `ps` would show a password);
  then one byte per commit that wrote outbox rows: publish now. End of input: stop.
- child to bridge: a line `connected` or `disconnected` whenever that changes.
The child's stderr is the bridge's, so its log lines go where the bridge's go.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import stat
import sys
from typing import Any

import asyncpg

from ..config import NatsConfig
from ..db.database import keep_session
from ..errors import OperatorError
from ..process import configure_logging, event_loop_factory, freeze_long_lived_objects
from .publisher import Publisher

log = logging.getLogger("daarion.publisher")

MAX_RESTART_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
WAKE = b"w"


class PublisherProcess:
    """The bridge's handle on the child: start, wake, stop, and whether it is connected.

    A child that exits while the bridge runs is started again, with backoff."""

    def __init__(
        self, database_url: str, config: NatsConfig, logging_config: dict[str, Any] | None
    ) -> None:
        hello = {
            "database_url": database_url,
            "nats": dataclasses.asdict(config),
            "logging": logging_config,
        }
        # default=str: a YAML logging section may hold a date or a tagged scalar.
        self._hello = json.dumps(hello, default=str).encode() + b"\n"
        self.connected = False
        self._child: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        """The child's process id; None while none runs."""
        return self._child.pid if self._child is not None else None

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="publisher process")

    def wake(self) -> None:
        """New outbox rows were committed. One wake not yet read is as good as many."""
        child = self._child
        if child is None or child.stdin is None or child.stdin.is_closing():
            return
        if child.stdin.transport.get_write_buffer_size() == 0:
            child.stdin.write(WAKE)

    async def _supervise(self) -> None:
        backoff = 1.0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            started = loop.time()
            try:
                code: int | str = await self._run_child()
            except OSError as e:
                code = f"not started ({e.strerror or e})"
            if self._stopping:
                return
            if loop.time() - started > 60:
                backoff = 1.0  # it ran a while: a new failure, not the same one again
            log.warning(
                "Publisher process ended (exit code %s); events wait in the outbox; "
                "starting it again in %.0f s",
                code,
                backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_RESTART_SECONDS)

    async def _run_child(self) -> int:
        child = self._child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdin is not None and child.stdout is not None
        try:
            child.stdin.write(self._hello)
            async for line in child.stdout:
                self.connected = line.strip() == b"connected"
            return await child.wait()
        finally:
            self.connected = False
            self._child = None
            if child.returncode is None:  # cancelled: leave no orphan behind
                child.kill()
                await child.wait()

    async def stop(self) -> None:
        """End of input tells the child to stop; it gets STOP_TIMEOUT_SECONDS."""
        self._stopping = True
        child = self._child
        if child is not None and child.stdin is not None:
            child.stdin.close()
            try:
                await asyncio.wait_for(child.wait(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                log.warning("Publisher process did not stop in time; killing it")
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def serve_child(stdin: asyncio.StreamReader) -> None:
    """The child: publish until the bridge closes our input."""
    try:
        hello = json.loads(await stdin.readline())
        nats_config = NatsConfig(**hello["nats"])
    except (ValueError, KeyError, TypeError):
        raise OperatorError(
            "no settings on standard input: the bridge starts this process itself"
        ) from None
    configure_logging(hello["logging"], "logging")

    def report(connected: bool) -> None:
        with contextlib.suppress(OSError):  # the bridge is gone: our input ends too
            sys.stdout.buffer.write(b"connected\n" if connected else b"disconnected\n")
            sys.stdout.buffer.flush()

    # min_size 0: a database that is down now is the publisher's to retry, not a crash.
    # Its only writes move the publish cursor, so they need not wait for the WAL flush:
    # a move lost in a server crash only sends those events again, and JetStream drops
    # them by message id. Every bridge commit is followed by one such write, and waiting
    # for its flush took a share of the flushes the bridge's own commits wait for.
    pool = await asyncpg.create_pool(
        hello["database_url"],
        min_size=0,
        max_size=2,
        reset=keep_session,
        server_settings={"synchronous_commit": "off"},
    )
    publisher = Publisher(pool, nats_config)
    publisher.on_connected = report
    publisher.start()
    freeze_long_lived_objects()
    try:
        while await stdin.read(4096):
            publisher.wake()
    finally:
        await publisher.stop()
        await pool.close()


async def _main() -> None:
    # The bridge gives us a pipe (a socket pair under uvloop); uvloop would abort the
    # process on a file or a terminal.
    mode = os.fstat(sys.stdin.fileno()).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        raise OperatorError("standard input is not a pipe: the bridge starts this process itself")
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    await serve_child(stdin)


def main() -> int:
    # Ctrl-C reaches the whole process group; the bridge stops us by closing our input.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(_main())
    except OperatorError as e:
        print(f"daarion-bridge publisher: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
