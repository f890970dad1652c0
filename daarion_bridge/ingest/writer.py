"""Apply one Synapse transaction's operations to the index in one Postgres transaction.

The entry points: claim the transaction's id and look up what it names (lookup.py,
wanted.py), dead-letter what was rejected, set up new channels (channel_setup.py), apply
the operations (applier.py), and write the outbox events (announce.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, NamedTuple

from asyncpg import Connection

from ..db import backfills, bookkeeping
from . import lookup
from .applier import apply_operations
from .channel_setup import ChannelSetup, create_channel
from .items import Announce, Item, Outcome, Rejected, Writing
from .wanted import Wanted, covers, operations, wanted_by_events, wanted_by_operations


class Claimed(NamedTuple):
    """The transaction's claim on its id, and what was looked up in the same statement."""

    claim: bookkeeping.Claim
    known: lookup.Known
    looked_up: Wanted  # what `known` was read for


async def write_transaction(
    conn: Connection,
    txn_id: str,
    digest: str,
    items: Sequence[Item],
    setups: Sequence[ChannelSetup] = (),
    *,
    events: Sequence[Any] | None = None,
    announce: Announce | None = None,
    backfill: bool = False,
) -> Outcome:
    """Write all rows of one transaction and its id in one commit (see write_rows)."""
    async with bookkeeping.ingest_transaction(conn):
        return await write_rows(
            conn,
            txn_id,
            digest,
            items,
            setups,
            events=events,
            announce=announce,
            backfill=backfill,
        )


async def write_rows(
    conn: Connection,
    txn_id: str,
    digest: str,
    items: Sequence[Item],
    setups: Sequence[ChannelSetup] = (),
    *,
    events: Sequence[Any] | None = None,
    announce: Announce | None = None,
    backfill: bool = False,
) -> Outcome:
    """Write all rows of one transaction and its id, in the caller's
    bookkeeping.ingest_transaction.

    With `events` (the raw events, parallel to `items`), each operation runs under its
    own savepoint and one the database rejects as data is dead-lettered instead of
    failing the whole transaction: the slow path after a data error. With `announce`,
    every change also becomes an outbox event in the same commit. `backfill`: the items
    are a room's earlier history (items.Writing).
    """
    wanted = wanted_by_operations(operations(items))
    claim, known = await lookup.claim_and_look_up(conn, txn_id, digest, len(items), *wanted)
    write = Writing.begin(conn, txn_id, announce, backfill)
    return await _write_claimed(write, Claimed(claim, known, wanted), items, setups, events)


async def write_while_translating(
    conn: Connection,
    txn_id: str,
    digest: str,
    events: Sequence[Any],
    items: Awaitable[Sequence[Item]],
    *,
    announce: Announce | None = None,
    backfill: bool = False,
) -> Outcome:
    """write_transaction for events still being translated; `items` comes when they are.

    Meanwhile the transaction begins, claims its id and looks up what the raw events
    name (`wanted_by_events`), so PostgreSQL works while the bridge translates. No
    channel setups: invites must act on the homeserver before anything is written, so
    a caller that finds some makes `items` fail, and this rolls back."""
    guess = wanted_by_events(events)
    async with bookkeeping.ingest_transaction(conn):
        claim, known = await lookup.claim_and_look_up(conn, txn_id, digest, len(events), *guess)
        translated = await items
        write = Writing.begin(conn, txn_id, announce, backfill)
        return await _write_claimed(write, Claimed(claim, known, guess), translated, (), None)


async def _write_claimed(
    write: Writing,
    claimed: Claimed,
    items: Sequence[Item],
    setups: Sequence[ChannelSetup],
    events: Sequence[Any] | None,
) -> Outcome:
    """write_rows after the claim (see there for `events`)."""
    outcome = write.outcome
    if claimed.claim is bookkeeping.Claim.REPLAY:
        outcome.replay = True
        return outcome
    outcome.reused_id = claimed.claim is bookkeeping.Claim.REUSED
    raw = events if events is not None else [None] * len(items)
    pairs = [(e, i) for e, i in zip(raw, items, strict=True) if i and not isinstance(i, Rejected)]
    ops = [op for _, op in pairs]
    for setup in setups:
        channel, created = await create_channel(write.conn, setup, write.announcer)
        # The bot and an agent invited into one room in one transaction: two setups, one
        # channel.
        if all(c.id != channel.id for c in outcome.new_channels):
            outcome.new_channels.append(channel)
        if created:
            # Its room's earlier history is read back after the commit (ingest/backfill.py);
            # a channel moved by an upgrade, or joined again, has its history already.
            await backfills.add(write.conn, channel.id, channel.room_id)
            outcome.backfills.append(channel)
    for item in items:  # after the set-ups: a letter is kept only for a channel's event
        if isinstance(item, Rejected):
            await write.set_aside(item.event, item.reason)
    known = claimed.known
    wanted = wanted_by_operations(ops)
    if ops and (setups or not covers(claimed.looked_up, wanted)):
        # Read again: the new channels were not there at the claim, or the guess from the
        # raw events missed something.
        known = await lookup.look_up(write.conn, *wanted)
    await apply_operations(write, pairs, known, isolate=events is not None)
    outcome.announced = await write.announcer.flush(write.conn)
    return outcome
