"""Sends the outbox to NATS JetStream, in order, exactly once as far as subscribers see.

Each event goes out with `Nats-Msg-Id` set to its stable message id, and the outbox
cursor passes it only after the server acknowledged it. A crash between the two resends
it, and the stream's de-duplication window drops the copy. NATS down: events wait in
Postgres, the bridge keeps ingesting, and the publisher retries with backoff. With two
bridges on one database, a Postgres advisory lock lets only one publish, so order holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg
import nats
import nats.errors
import nats.js.errors
import orjson
from asyncpg import Pool
from nats.aio.client import NO_RESPONDERS_STATUS
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from ..config import NatsConfig
from ..db import outbox
from ..redact import redact_url
from ..translate.bus import SUBJECTS

log = logging.getLogger("daarion.publisher")

BATCH = 100
PUBLISHER_LOCK = 0x44415052  # pg advisory lock key ("DAPR"): one publisher per database
IDLE_POLL_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
ACK_TIMEOUT_SECONDS = 10.0
NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, OSError, asyncio.TimeoutError)


class Acks:
    """The server's answers to one batch of publishes, by position in the batch.

    One wildcard subscription takes them all: nats-py's publish_async spends a future, a
    timer task and a JSON parse on each message, and the publisher's CPU per event is
    what ingest with NATS on is bound by."""

    def __init__(self, batch_id: str, size: int) -> None:
        self.batch_id = batch_id
        self.size = size
        self.results: dict[int, Exception | None] = {}
        self.complete = asyncio.Event()

    def record(self, position: int, error: Exception | None) -> None:
        if 0 <= position < self.size:
            self.results.setdefault(position, error)
            if len(self.results) == self.size:
                self.complete.set()

    def acked_run(self) -> tuple[int, Exception | None]:
        """How many from the start were stored, and why the next one was not (None when
        it has no answer yet)."""
        n = 0
        while n < self.size and self.results.get(n, False) is None:
            n += 1
        return n, self.results.get(n) if n < self.size else None


def ack_error(msg: Msg) -> Exception | None:
    """What JetStream said about one publish: None when it stored it (or dropped it as a
    duplicate, which is the same to us)."""
    if msg.headers and msg.headers.get("Status") == NO_RESPONDERS_STATUS:
        return nats.js.errors.NoStreamResponseError()
    if b'"error"' not in msg.data:
        return None
    try:
        error = orjson.loads(msg.data).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return nats.js.errors.Error(f"unreadable answer from JetStream: {msg.data[:100]!r}")
    if error is None:
        return None
    if isinstance(error, dict) and "code" in error:
        with contextlib.suppress(TypeError):  # fields this nats-py does not know
            try:
                nats.js.errors.APIError.from_error(error)  # raises the exception that fits
            except nats.js.errors.Error as e:
                return e
    return nats.js.errors.APIError(description=str(error))


class Publisher:
    def __init__(self, pool: Pool, config: NatsConfig) -> None:
        self.pool = pool
        self.config = config
        # A NATS URL may carry a user and password, or a token as its user.
        self._shown_url = redact_url(config.url, user_is_secret=True)
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self._connected = False
        # Told of every change of `connected` (the publisher process reports it).
        self.on_connected: Callable[[bool], None] = lambda _: None
        self.published = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ack_prefix = ""
        self._acks: Acks | None = None
        self._batches = 0

    @property
    def connected(self) -> bool:
        return self._connected

    @connected.setter
    def connected(self, value: bool) -> None:
        if value != self._connected:
            self._connected = value
            self.on_connected(value)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run_forever(), name="publisher")

    def wake(self) -> None:
        """New outbox rows were committed: publish now instead of at the next poll."""
        self._wake.set()

    async def run_forever(self) -> None:
        backoff = 1.0
        while True:
            try:
                async with self.pool.acquire() as lock_conn:
                    if not await lock_conn.fetchval(
                        "SELECT pg_try_advisory_lock($1)", PUBLISHER_LOCK
                    ):
                        await asyncio.sleep(5)  # another bridge publishes; stand by
                        continue
                    try:
                        await self._connect()
                        backoff = 1.0
                        await self._publish_until_stopped()
                    finally:
                        await self._unlock(lock_conn)
            except asyncio.CancelledError:
                raise
            except NATS_ERRORS as e:
                self._lost(f"NATS at {self._shown_url}: {type(e).__name__} {e}".strip())
            except (asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                self._lost(f"database: {type(e).__name__}")
            except Exception:
                log.exception("Publisher failed; retrying")
                self.connected = False
            await self._close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    @staticmethod
    async def _client_error(e: Exception) -> None:
        """nats-py's own report of a lost connection: one line, not its traceback at
        ERROR; the publisher says what it means for the events (`_lost`)."""
        log.info("NATS connection: %s", f"{type(e).__name__} {e}".strip())

    @staticmethod
    async def _unlock(lock_conn: asyncpg.Connection) -> None:
        """The pool keeps sessions as they are (database.py), so a lock the unlock could
        not release goes with its session instead of staying in the pool."""
        try:
            await lock_conn.execute("SELECT pg_advisory_unlock($1)", PUBLISHER_LOCK)
        except BaseException:
            lock_conn.terminate()
            raise

    def _lost(self, why: str) -> None:
        if self.connected:
            log.warning("Publishing paused, events wait in the outbox (%s)", why)
        else:
            log.info("Cannot publish yet (%s); retrying", why)
        self.connected = False

    async def _connect(self) -> None:
        self.nc = await nats.connect(
            servers=[self.config.url],
            connect_timeout=5,
            allow_reconnect=False,  # we reconnect ourselves, from the outbox
            name="daarion-bridge",
            error_cb=self._client_error,
        )
        self.js = self.nc.jetstream(timeout=5)
        await self._ensure_stream()
        self._ack_prefix = self.nc.new_inbox()
        await self.nc.subscribe(self._ack_prefix + ".*", cb=self._on_ack)
        self.connected = True
        log.info("Publishing to NATS stream %s at %s", self.config.stream, self._shown_url)

    async def _ensure_stream(self) -> None:
        assert self.js is not None
        subjects = [self.config.subject(s) for s in SUBJECTS]
        try:
            info = await self.js.stream_info(self.config.stream)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(
                StreamConfig(
                    name=self.config.stream,
                    subjects=subjects,
                    duplicate_window=self.config.duplicate_window,
                )
            )
            return
        have = list(info.config.subjects or [])
        missing = [s for s in subjects if s not in have]
        if missing:
            info.config.subjects = have + missing
            await self.js.update_stream(info.config)

    async def _publish_until_stopped(self) -> None:
        while True:
            if self.nc is None or not self.nc.is_connected:
                raise nats.errors.ConnectionClosedError()
            sent = await self.publish_batch()
            if sent < BATCH:
                self._wake.clear()
                # Woken by a commit, or polling for rows another process wrote.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL_SECONDS)

    async def publish_batch(self) -> int:
        """Publish up to BATCH unsent events in order, pipelined on one connection (the
        server stores them in the order sent); move the cursor past the acked run from the
        start. A failure sends the rest again, and the server drops what it already stored."""
        assert self.nc is not None
        pending = await outbox.unsent(self.pool, BATCH)
        if not pending:
            return 0
        self._batches += 1
        acks = self._acks = Acks(str(self._batches), len(pending))
        try:
            for position, event in enumerate(pending):
                await self.nc.publish(
                    self.config.subject(event.subject),
                    event.payload,
                    reply=f"{self._ack_prefix}.{acks.batch_id}-{position}",
                    headers={"Nats-Msg-Id": event.msg_id},
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(acks.complete.wait(), ACK_TIMEOUT_SECONDS)
        finally:
            self._acks = None  # answers that come later are for a batch given up
        stored, error = acks.acked_run()
        if stored:
            await outbox.mark_sent(self.pool, pending[stored - 1].id)
        self.published += stored
        if stored < len(pending):
            raise error or TimeoutError(f"JetStream did not answer in {ACK_TIMEOUT_SECONDS} s")
        return stored

    async def _on_ack(self, msg: Msg) -> None:
        acks = self._acks
        batch_id, _, position = msg.subject.rpartition(".")[2].partition("-")
        if acks is not None and batch_id == acks.batch_id and position.isdigit():
            acks.record(int(position), ack_error(msg))

    async def _close(self) -> None:
        if self.nc is not None:
            # Closing a broken connection: it is gone either way.
            with contextlib.suppress(Exception):
                await self.nc.close()
        self.nc = self.js = None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._close()
