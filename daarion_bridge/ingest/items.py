"""What a write takes in and gives back: the translated items of a transaction, the
outcome, and the state the steps of one write share."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from asyncpg import Connection

from ..crypto.service import DECRYPTED
from ..db import bookkeeping, channels
from ..translate import events as ev
from .announce import Announcer


@dataclass(frozen=True, slots=True)
class Announce:
    """Write the platform's events to the outbox (NATS is on)."""

    bot_mxid: str
    invoke_agents: bool = True  # nats.invoke_agents: publish router.invoke.agent


@dataclass(frozen=True, slots=True)
class Rejected:
    """An event that can never be applied: dead-lettered, never blocks the transaction."""

    event: Any
    reason: str


Item = ev.Operation | Rejected | None


@dataclass
class Outcome:
    replay: bool = False
    reused_id: bool = False  # the homeserver reused a committed id for new events
    applied: Counter[str] = field(default_factory=Counter)
    ignored: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    new_channels: list[channels.Channel] = field(default_factory=list)
    announced: int = 0  # outbox rows written
    # People's `!daarion` commands in channels, newly indexed by this commit (a replay
    # has none): the caller runs them after the commit.
    commands: list[ev.NewMessage] = field(default_factory=list)
    # Channels' rooms upgraded by this commit: the caller follows them after it.
    upgrades: list[ev.RoomTombstoned] = field(default_factory=list)
    # Rooms whose space links changed: which microDAO they belong to is checked after it.
    space_changes: list[str] = field(default_factory=list)
    # Channels this commit made whose earlier history is to be read back (a row in
    # bridge_backfills each): the caller starts that after it.
    backfills: list[channels.Channel] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Writing:
    """One transaction's write under way, as its steps (channel set-up, operations,
    outbox) share it: the connection in its transaction, the id dead letters are filed
    under, the outbox events gathered so far, and the outcome counted so far.
    `backfill`: the events are a room's history from before it became a channel: they
    call no agent, run no command and count as no agent's activity."""

    conn: Connection
    txn_id: str
    announcer: Announcer
    outcome: Outcome
    backfill: bool = False

    async def set_aside(self, event: Any, reason: str) -> None:
        """Dead-letter an event that can never be written; one of a room that is no
        channel, or one set aside before, is only counted as ignored. A decrypted event
        is kept without its content: decrypted text never rests in the bridge's tables."""
        if isinstance(event, dict) and DECRYPTED in event:
            event = {**event, "content": {}}
        if await bookkeeping.dead_letter(self.conn, self.txn_id, event, reason):
            self.outcome.dead_letters += 1
        else:
            self.outcome.ignored["Rejected"] += 1

    @classmethod
    def begin(
        cls, conn: Connection, txn_id: str, announce: Announce | None, backfill: bool = False
    ) -> Writing:
        announcer = Announcer(
            announce is not None,
            announce.bot_mxid if announce else "",
            invoke_agents=announce is not None and announce.invoke_agents and not backfill,
            backfilled=backfill,
        )
        return cls(conn, txn_id, announcer, Outcome(), backfill)
