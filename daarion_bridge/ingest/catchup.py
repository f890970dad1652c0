"""Catch-up: read recently active rooms back from the homeserver, index what never came.

Synapse can lose events on their way to an appservice: those queued in memory when it
stops, or one stored while it still counts the appservice as down. The homeserver's
room history is the truth, so after a start or a homeserver restart the bridge pages
back through each room active in the last `bridge.catch_up_window` seconds and feeds
the message events it has no row for through the normal ingest path (idempotent by
event id, so anything already indexed is untouched). The room's current state (members,
name, join rule, power levels) is read too: each state event newer than the one the
index applied last goes the same way, where the per-state-key order (db/room_state.py)
keeps an event pushed meanwhile from being rolled back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from asyncpg import Pool
from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixRequestError
from mautrix.types import UserID

from ..db import bookkeeping, members, room_state, rooms
from ..db.bookkeeping import events_digest
from ..matrix.bot import Bot, room_history
from ..matrix.bot import room_state as read_room_state
from ..translate.events import MESSAGE_TYPES
from .ingestor import Ingestor

log = logging.getLogger("daarion.catchup")

CATCH_UP_TYPES = MESSAGE_TYPES | {"m.room.redaction"}
MAX_EVENTS_PER_ROOM = 1000
BATCH = 100
RECONCILED_STATE = frozenset({room_state.MEMBER, "m.room.name", "m.room.join_rules",
                              "m.room.power_levels"})  # fmt: skip
# Not in the room, as far as the channel goes; fed as a leave (a member whose leave was
# dropped and who was invited again is no member of the channel meanwhile).
NOT_JOINED = frozenset({"invite", "knock"})


def state_to_reconcile(
    state: Sequence[dict[str, Any]],
    room_id: str,
    marks: dict[tuple[str, str], room_state.Mark],
    bot_mxid: str,
) -> list[dict[str, Any]]:
    """The room's current state events the index may lack: those of the kinds it keeps
    whose (origin_server_ts, event_id) is not the one applied last for their key, nor
    older. The writer's own order check decides ties; the bot's own membership is not
    the channel's business. Invites and knocks come out as leaves (NOT_JOINED)."""
    found = []
    for event in state:
        etype, key = event.get("type"), event.get("state_key")
        ts, event_id = event.get("origin_server_ts"), event.get("event_id")
        if etype not in RECONCILED_STATE or not isinstance(key, str) or key == bot_mxid:
            continue
        if etype != room_state.MEMBER and key != "":
            continue  # not the room's name, rule or levels: the writer ignores those
        if not isinstance(ts, int) or not isinstance(event_id, str):
            continue
        kept = marks.get((etype, key))
        if kept is not None and (kept.ts_ms > ts or kept == (ts, event_id)):
            continue
        content = event.get("content")
        content = content if isinstance(content, dict) else {}
        if etype == room_state.MEMBER and content.get("membership") in NOT_JOINED:
            event = {**event, "content": {**content, "membership": "leave"}}
        found.append({"room_id": room_id, **event})
    return found


# Reads a room's history as one reader, returns the events to index, oldest first.
Scan = Callable[[str, IntentAPI], Awaitable[list[dict[str, Any]]]]


def _no_progress(indexed: int) -> None:
    return None


def is_join_of(event: dict[str, Any], user_id: str) -> bool:
    """The user's joining the room: not a profile change, which is a join event too
    (a renamed bot would otherwise end the reading back at its rename)."""
    content = event.get("content") or {}
    unsigned = event.get("unsigned")
    before = unsigned.get("prev_content") if isinstance(unsigned, dict) else None
    before = before if isinstance(before, dict) else event.get("prev_content")
    was_joined = isinstance(before, dict) and before.get("membership") == "join"
    return (
        event.get("type") == "m.room.member"
        and event.get("state_key") == user_id
        and content.get("membership") == "join"
        and not was_joined
    )


def target_of(event: dict[str, Any]) -> str | None:
    """The message an edit or a redaction acts on, None for a new message."""
    content = event.get("content") or {}
    if event.get("type") == "m.room.redaction":
        target = event.get("redacts") or content.get("redacts")
        return target if isinstance(target, str) else None
    relates = content.get("m.relates_to") if isinstance(content, dict) else None
    if isinstance(relates, dict) and relates.get("rel_type") == "m.replace":
        target = relates.get("event_id")
        return target if isinstance(target, str) else None
    return None


class CatchUp:
    def __init__(
        self,
        pool: Pool,
        bot: Bot,
        ingestor: Ingestor,
        window_seconds: float,
        delay_seconds: float = 2.0,
        min_interval_seconds: float = 10.0,
    ) -> None:
        self.pool = pool
        self.bot = bot
        self.ingestor = ingestor
        self.window = window_seconds
        # Let the homeserver push what it still has queued before reading history.
        self.delay = delay_seconds
        # Homeservers with other appservices skip ids often: rounds are spaced, never lost.
        self.min_interval = min_interval_seconds
        self._last_round = -float("inf")
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._checks: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return self.window > 0

    def homeserver_sign(self, sign: str, skipped: Sequence[str] = ()) -> None:
        """The ingestor saw the homeserver's transaction ids go back, repeat or skip. A
        skip is a sign only if the ids it skipped were never committed: two bridges on one
        database (an HA pair behind a load balancer) each see every other id, and the
        other bridge commits the rest."""
        if not skipped:
            self._on_sign(sign)
            return
        check = asyncio.create_task(self._unless_committed(sign, skipped), name="skipped ids")
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)
        check.add_done_callback(self._report)

    async def _unless_committed(self, sign: str, skipped: Sequence[str]) -> None:
        await asyncio.sleep(self.delay)  # grace: another bridge may be committing them now
        missing = await bookkeeping.missing_transactions(self.pool, skipped)
        if missing:
            self._on_sign(f"{sign} ({len(missing)} of them never reached this database)")
        else:
            log.debug("%s: another bridge on this database committed those", sign)

    def _on_sign(self, sign: str) -> None:
        # Said so an admin can act on it: what happened, and what the bridge does about it.
        what = "The homeserver's %s, as after a restart, which can drop events it had not yet "
        if not self.enabled:
            log.warning(
                what + "pushed; the catch-up is off (bridge.catch_up_window: 0), so those "
                "stay missing from the index",
                sign,
            )
            return
        log.info(
            what + "pushed: the bridge reads back recently active rooms and indexes what it lacks",
            sign,
        )
        self.schedule("signs of dropped events")

    def schedule(self, reason: str) -> None:
        if not self.enabled:
            return
        if self._task is not None and not self._task.done():
            self._again = True  # one more round when this one ends
            return
        self._task = asyncio.create_task(self._run(reason), name=f"catch-up ({reason})")
        self._task.add_done_callback(self._report)

    @staticmethod
    def _report(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("Catch-up failed", exc_info=task.exception())

    async def _run(self, reason: str) -> None:
        while True:
            self._again = False
            wait = max(self.delay, self._last_round + self.min_interval - time.monotonic())
            await asyncio.sleep(wait)
            started = self._last_round = time.monotonic()
            room_ids = await rooms.recently_active(self.pool, self.window)
            late = state = 0
            for room_id in room_ids:
                missing, newer_state = await self.catch_up_room(room_id)
                late, state = late + missing, state + newer_state
            log.info(
                "Catch-up after %s: read back %d room(s) in %.1f s, %d event(s) were "
                "missing, %d state event(s) newer than the index",
                reason,
                len(room_ids),
                time.monotonic() - started,
                late,
                state,
            )
            if not self._again:
                return
            reason = "more signs of dropped events"

    async def catch_up_room(self, room_id: str) -> tuple[int, int]:
        """Apply the room's current state where the index lags behind it, then index the
        room's recent message events that have no row; returns how many of each."""
        read: list[list[dict[str, Any]]] = []  # the room's state, as the reader saw it

        async def scan(room_id: str, reader: IntentAPI) -> list[dict[str, Any]]:
            state = await read_room_state(reader, room_id)
            recent = await self._recent_events(room_id, reader)
            read.append(state)  # only once both reads worked
            return recent

        missing = await self.read_back(room_id, scan, "Catch-up")
        if not read:
            return 0, 0
        async with self.pool.acquire() as conn:
            marks = await room_state.marks(conn, room_id)
        # State first: the members are right when the missing messages are judged
        # (mentions, the direct-room rule).
        newer = state_to_reconcile(read[-1], room_id, marks, self.bot.intent.mxid)
        await self.feed(newer, "catch-up")
        await self.feed(missing, "catch-up")
        return len(missing), len(newer)

    async def read_back(self, room_id: str, scan: Scan, what: str) -> list[dict[str, Any]]:
        """The events `scan` finds in the room's history whose effect the index lacks.

        The bot reads the room; in a room only agents were invited to, a puppet does."""
        errcode = None
        for reader in [self.bot.intent, *await self._puppets_in(room_id)]:
            try:
                found = await scan(room_id, reader)
                break
            except MatrixRequestError as e:
                errcode = e.errcode
        else:
            log.info("%s skips %s: %s", what, room_id, errcode)
            return []
        return await self._without_rows(found)

    async def feed(
        self,
        events: Sequence[dict[str, Any]],
        name: str,
        *,
        backfill: bool = False,
        progress: Callable[[int], None] = _no_progress,
    ) -> None:
        """Through the ingest path in batches, each its own transaction: the ingest lock
        is never held for long, and live transactions go in between. `progress`: how many
        are indexed so far, after each batch."""
        for start in range(0, len(events), BATCH):
            chunk = events[start : start + BATCH]
            txn_id = f"{name}-{events_digest(chunk)[:32]}"
            await self.ingestor.handle_transaction(txn_id, chunk, backfill=backfill)
            progress(start + len(chunk))

    async def _puppets_in(self, room_id: str) -> list[IntentAPI]:
        async with self.pool.acquire() as conn:
            agents = await members.agents_in_room(conn, room_id)
        return [self.bot.intent.user(UserID(mxid)) for mxid in agents]

    async def _recent_events(self, room_id: str, reader: IntentAPI) -> list[dict[str, Any]]:
        cutoff_ms = (time.time() - self.window) * 1000
        found: list[dict[str, Any]] = []
        async for page in room_history(reader, room_id):
            for event in page:
                ts = event.get("origin_server_ts")
                if is_join_of(event, reader.mxid) or (isinstance(ts, int) and ts < cutoff_ms):
                    return found[::-1]
                if event.get("type") in CATCH_UP_TYPES:
                    found.append(event)
            if len(found) >= MAX_EVENTS_PER_ROOM:
                break
        return found[::-1]  # oldest first, as the homeserver would have pushed them

    async def _without_rows(self, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The events whose effect the index lacks: messages without a row, edits newer
        than what their row shows, redactions of rows not yet `[deleted]`."""
        ids = [e["event_id"] for e in events if isinstance(e.get("event_id"), str)]
        targets = [t for t in map(target_of, events) if t is not None]
        known = {
            r["matrix_event_id"]
            for r in await self.pool.fetch(
                "SELECT matrix_event_id FROM messages WHERE matrix_event_id = ANY($1::text[])",
                ids,
            )
        }
        state = {
            r["matrix_event_id"]: (r["last_edit_ts"], r["redacted"])
            for r in await self.pool.fetch(
                "SELECT matrix_event_id, last_edit_ts, redacted FROM bridge_message_state "
                "WHERE matrix_event_id = ANY($1::text[])",
                targets,
            )
        }

        def lacking(event: dict[str, Any]) -> bool:
            target = target_of(event)
            if target is None:
                return event.get("event_id") not in known
            last_edit_ts, redacted = state.get(target, (None, False))
            if event.get("type") == "m.room.redaction":
                return not redacted
            return not redacted and (last_edit_ts or -1) < (event.get("origin_server_ts") or 0)

        return [e for e in events if lacking(e)]

    async def stop(self) -> None:
        tasks = [*self._checks, *([self._task] if self._task is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
