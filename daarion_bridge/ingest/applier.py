"""Apply one transaction's operations in order, inside the writer's transaction: the
fast path batches them, the slow path (after a data error) isolates each under a
savepoint and dead-letters what the database rejects. Rooms that are not channels are
ignored."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from asyncpg import Connection

from ..db import (
    channels,
    members,
    messages,
    pending_upgrades,
    room_names,
    room_state,
    rooms,
    sessions,
    users,
)
from ..db.errors import WRITE_ERRORS, is_data_error
from ..db.outbox import AGENT, HUMAN
from ..translate import bus
from ..translate import events as ev
from ..translate.rooms import role_for
from . import corrections, lookup
from .items import Writing
from .member_names import follow_members
from .wanted import actors_of

log = logging.getLogger("daarion.ingest")

LEFT = frozenset({"leave", "ban"})
StateOp = ev.Membership | ev.PowerLevels | ev.RoomName | ev.JoinRules


def mark_of(op: StateOp) -> room_state.Mark | None:
    """Where the state event stands among its key's events (room_state.py); None for an
    operation without an event id, which nothing orders."""
    if not op.event_id:
        return None
    # Exact: the time was made from whole milliseconds (events.timestamp).
    ts_ms = (op.ts - ev.EPOCH) // timedelta(milliseconds=1) if op.ts is not None else 0
    return room_state.Mark(ts_ms, op.event_id)


async def apply_operations(
    write: Writing,
    pairs: Sequence[tuple[Any, ev.Operation]],
    known: lookup.Known,
    *,
    isolate: bool,
) -> None:
    """Apply the operations of `pairs` (each with its raw event, or None) in order, with
    what `known` holds about them. `isolate`: the slow path, one savepoint each."""
    if not pairs:
        return
    ops = [op for _, op in pairs]
    write.announcer.know(known.platform_ids)
    await _add_unseen_people(write, ops, known)
    await Applier(write, known, ops, isolate=isolate).run(pairs)


async def _add_unseen_people(
    write: Writing, ops: Sequence[ev.Operation], known: lookup.Known
) -> None:
    """People seen for the first time get a row, but only in bridged rooms."""
    unseen = {
        m
        for op in ops
        if op.room_id in known.channels
        for m in actors_of(op)
        if m not in known.agents and m not in known.people
    }
    if unseen:
        for matrix_id, row_id, platform_id in await users.create(write.conn, sorted(unseen)):
            known.people[matrix_id] = row_id
            write.announcer.know({(HUMAN, row_id): platform_id})


@asynccontextmanager
async def _savepoint(conn: Connection) -> AsyncIterator[None]:
    """A savepoint by hand: asyncpg's nested transaction() needs a top transaction of its
    own, and the ingest transaction is begun by hand (bookkeeping.ingest_transaction)."""
    await conn.execute("SAVEPOINT operation")
    try:
        yield
    except BaseException:
        await conn.execute("ROLLBACK TO SAVEPOINT operation; RELEASE SAVEPOINT operation")
        raise
    await conn.execute("RELEASE SAVEPOINT operation")


def _room_agents(ops: Sequence[ev.Operation], known: lookup.Known) -> dict[str, set[str]]:
    """The agents a message in each room can mention: those in its channel, and those
    whose membership changes in this transaction (a join before the mention counts)."""
    rooms = {room: set(agents) for room, agents in known.channel_agents.items()}
    for op in ops:
        if isinstance(op, ev.Membership) and op.user_id in known.agents:
            rooms.setdefault(op.room_id, set()).add(op.user_id)
    return rooms


_STATE_TYPES: dict[type, str] = {
    ev.PowerLevels: "m.room.power_levels",
    ev.RoomName: "m.room.name",
    ev.JoinRules: "m.room.join_rules",
}


class Applier:
    """One transaction's operations, applied in order (see apply_operations)."""

    def __init__(
        self,
        write: Writing,
        known: lookup.Known,
        ops: Sequence[ev.Operation],
        *,
        isolate: bool,
    ) -> None:
        self.write = write
        self.conn = write.conn
        self.txn_id = write.txn_id
        self.outcome = write.outcome
        self.announcer = write.announcer
        self.isolate = isolate
        self.scope = corrections.Scope(
            write.conn, write.announcer, known.channels, known.agents, known.people, known.power
        )
        self.channels = known.channels  # by room id
        self.power = known.power
        self.agents = known.agents  # by Matrix id
        self.users = known.people  # by Matrix id, agents excluded
        self.room_agents = _room_agents(ops, known)  # room id -> agents it may mention
        # Where each operation (by id()) stands in the transaction.
        self.position = {id(op): i for i, op in enumerate(ops)}
        # Whether each redaction (by id()) may remove others' messages, judged where it
        # stands in the transaction (apply_batched).
        self.redact_power: dict[int, bool] = {}
        # (agent, channel) -> [(position of the event in the transaction, when)]
        self.activity: dict[tuple[UUID, UUID], list[tuple[int, datetime]]] = {}
        self.unnamed: set[str] = set()  # rooms whose name was removed: named after members

    async def run(self, pairs: Sequence[tuple[Any, ev.Operation]]) -> None:
        bridged = [(raw, op) for raw, op in pairs if self.bridged(op)]
        if self.isolate:
            for raw, op in bridged:
                self.count(op, await self.apply_isolated(raw, op))
        else:
            await self.apply_batched([op for _, op in bridged])
        await self.record_activity(before=None)
        await follow_members(self.write, self.channels, [op for _, op in bridged], self.unnamed)

    def bridged(self, op: ev.Operation) -> bool:
        if isinstance(op, ev.SpaceLinkChanged):
            # Whether the room is a channel, and whether the space accepts it, is looked
            # at after the commit (ingest/spaces_follow.py): the homeserver knows.
            if op.child not in self.outcome.space_changes:
                self.outcome.space_changes.append(op.child)
            self.count(op, True)
            return False
        if op.room_id in self.channels and not isinstance(op, ev.Invited):
            return True
        if isinstance(op, ev.AgentInvited) and op.room_id in self.channels:
            agent_id = self.agents.get(op.agent_mxid)
            if agent_id is not None:  # the invite itself, whether or not the agent accepts
                at = op.ts or datetime.now(UTC)
                channel = self.channels[op.room_id]
                member = (AGENT, agent_id)
                self.announcer.member(bus.MEMBER_INVITED, channel, member, None, at, op.event_id)
        self.outcome.ignored[type(op).__name__] += 1
        return False

    def count(self, op: ev.Operation, applied: bool) -> None:
        (self.outcome.applied if applied else self.outcome.ignored)[type(op).__name__] += 1

    async def apply_batched(self, ops: Sequence[ev.Operation]) -> None:
        """The fast path: all new messages in one statement, then membership and room
        state in order (people's joins and leaves in runs of one statement), then all
        edits and all redactions in one statement each. Edits and redactions commute
        (newest edit wins, redaction is final) and only need the rows to exist, once
        each redaction's right is judged where it stands; membership and state never
        depend on messages."""
        news = [op for op in ops if isinstance(op, ev.NewMessage)]
        await self.insert_messages(news)
        self.outcome.applied["NewMessage"] += len(news)
        # People's joins and leaves go in runs, each run before the next other operation,
        # so roles follow power levels and announcements keep the events' order.
        people: list[ev.Membership] = []
        for op in ops:
            if isinstance(op, ev.RedactMessage):
                # Applied with the others below, but judged by the power levels in
                # force where it stands: a later demotion does not undo it.
                self.redact_power[id(op)] = await self.scope.may_redact_others(op)
                continue
            if isinstance(op, ev.NewMessage | ev.EditMessage):
                continue
            if isinstance(op, ev.Membership) and self.is_person_change(op):
                people.append(op)
                continue
            await self.change_people(people)
            self.outcome.applied["Membership"] += len(people)
            people = []
            self.count(op, await self.apply(op))
        await self.change_people(people)
        self.outcome.applied["Membership"] += len(people)
        edits = [op for op in ops if isinstance(op, ev.EditMessage)]
        changed = await corrections.edit(self.scope, edits)
        self.outcome.applied["EditMessage"] += changed
        self.outcome.ignored["EditMessage"] += len(edits) - changed
        redactions = [op for op in ops if isinstance(op, ev.RedactMessage)]
        changed = await corrections.redact(self.scope, redactions, self.redact_power)
        self.outcome.applied["RedactMessage"] += changed
        self.outcome.ignored["RedactMessage"] += len(redactions) - changed

    async def insert_messages(self, news: Sequence[ev.NewMessage]) -> None:
        """Insert, and note agent activity for the rows that are new (not replays). The
        agents people's messages call on are found while PostgreSQL writes the rows."""
        if not news:
            return
        rows = [self.new_row(op) for op in news]
        insert = asyncio.ensure_future(messages.insert_many(self.conn, rows))
        try:
            await asyncio.sleep(0)  # the statement goes out before the search begins
            calls = [self.mentioned(op, row) for op, row in zip(news, rows, strict=True)]
        finally:
            inserted = await insert
        # Decrypted late: indexed as [encrypted] before, their text acts now (unless
        # they were deleted meanwhile).
        late = await corrections.reveal(self.scope, [op for op in news if op.late])
        for op, row, mentioned in zip(news, rows, calls, strict=True):
            message_id = inserted.get(op.event_id)
            if message_id is None and op.event_id in late:
                revealed = late[op.event_id]
                message_id = None if revealed.redacted else revealed.row.id
            if message_id is None:
                continue
            channel = self.channels[op.room_id]
            if op.event_id in inserted:
                self.announcer.message_created(channel, row, message_id)
            if self.write.backfill:
                continue  # history: no agent is called, no command runs, no activity
            if row.sender_agent_id is not None:
                self.note_activity(row.sender_agent_id, row.channel_id, op)
                continue
            if op.command is not None:
                # For the bridge: it invokes no agent and counts as no agent's activity.
                self.outcome.commands.append(op)
                continue
            if op.sealed:
                continue
            for agent_id in mentioned:
                self.note_activity(agent_id, row.channel_id, op)
            self.announcer.human_message(channel, message_id, op, mentioned)

    def mentioned(self, op: ev.NewMessage, row: messages.NewRow) -> tuple[UUID, ...]:
        """The agents of its room a person's message mentions; none for an agent's
        message or a command."""
        if row.sender_agent_id is not None or op.command is not None or op.may_mention is None:
            return ()
        found = op.may_mention.among(self.room_agents.get(op.room_id, ()))
        return tuple(self.agents[m] for m in found)

    def note_activity(self, agent_id: UUID, channel_id: UUID, op: ev.NewMessage) -> None:
        position = self.position.get(id(op), len(self.position))
        self.activity.setdefault((agent_id, channel_id), []).append((position, op.ts))

    async def record_activity(
        self, before: int | None, key: tuple[UUID, UUID] | None = None
    ) -> None:
        """Record the activity of events before a position (all, with None) for one
        (agent, channel) or all: messages are written before membership in a batch, but
        their activity must land in event order around the agent's joins and leaves."""
        due: dict[tuple[UUID, UUID], datetime] = {}
        for k in [key] if key is not None else list(self.activity):
            entries = self.activity.get(k, [])
            now = [at for pos, at in entries if before is None or pos < before]
            if now:
                due[k] = max(now)
                self.activity[k] = [
                    (p, at) for p, at in entries if before is not None and p >= before
                ]
        await sessions.record_activity(self.conn, due)

    def new_row(self, op: ev.NewMessage) -> messages.NewRow:
        channel = self.channels[op.room_id]
        agent_id = self.agents.get(op.sender)
        user_id = None if agent_id is not None else self.users[op.sender]
        return messages.NewRow(
            channel.id, op.event_id, user_id, agent_id, op.preview, op.ts, op.thread_root
        )

    async def apply_isolated(self, raw: Any, op: ev.Operation) -> bool:
        try:
            async with _savepoint(self.conn):
                return await self.apply(op)
        except WRITE_ERRORS as e:
            if not is_data_error(e):
                raise
            self.power.pop(op.room_id, None)  # may hold what the savepoint rolled back
            code = getattr(e, "sqlstate", None) or "encoding"
            reason = f"database rejected the row: {type(e).__name__} ({code})"
            await self.write.set_aside(raw, reason)
            return False

    async def apply(self, op: ev.Operation) -> bool:
        """One operation on its own (the slow path, and membership and state always)."""
        conn = self.conn
        channel = self.channels[op.room_id]
        if isinstance(op, ev.NewMessage):
            await self.insert_messages([op])
            return True
        if isinstance(op, ev.EditMessage):
            return await corrections.edit(self.scope, [op]) > 0
        if isinstance(op, ev.RedactMessage):
            return await corrections.redact(self.scope, [op], self.redact_power) > 0
        if isinstance(op, ev.Membership):
            return await self.membership(op, channel)
        if isinstance(op, ev.PowerLevels | ev.RoomName | ev.JoinRules) and not await self.newer(op):
            return False  # an older state event than the one applied: a replay
        if isinstance(op, ev.PowerLevels):
            await self.power_levels(op, channel)
            return True
        if isinstance(op, ev.RoomName):
            unnamed = op.name is None
            if await room_names.set_from_members(conn, op.room_id, unnamed) and unnamed:
                self.unnamed.add(op.room_id)  # named after its members again, at the end
                return True
            name = op.name or op.room_id
            if await channels.set_name(conn, channel.id, name):
                self.channel_updated(channel, {"name": name}, op)
            return True
        if isinstance(op, ev.JoinRules):
            if await channels.set_visibility(conn, channel.id, op.visibility):
                self.channel_updated(channel, {"visibility": op.visibility}, op)
            return True
        if isinstance(op, ev.RoomTombstoned):
            return await self.tombstone(op, channel)
        return False

    async def tombstone(self, op: ev.RoomTombstoned, channel: channels.Channel) -> bool:
        """An upgrade is followed after the commit (joining the new room is the
        homeserver's business); a room closed for good closes its agents' sessions."""
        if op.replacement is not None:
            if op.replacement != op.room_id:
                await pending_upgrades.add(self.conn, op)  # kept until followed
                self.outcome.upgrades.append(op)
            return True
        closed = await sessions.close_in_channel(self.conn, channel.id)
        log.info("Room %s was closed for good: %d agent session(s) closed", op.room_id, closed)
        return True

    async def newer(self, op: ev.PowerLevels | ev.RoomName | ev.JoinRules) -> bool:
        """Whether the room state event is newer than its key's last applied one."""
        mark = mark_of(op)
        etype = _STATE_TYPES[type(op)]
        return mark is None or await room_state.newer(self.conn, op.room_id, etype, "", mark)

    def channel_updated(
        self, channel: channels.Channel, fields: dict[str, Any], op: ev.RoomName | ev.JoinRules
    ) -> None:
        at = op.ts or datetime.now(UTC)
        self.announcer.channel(bus.CHANNEL_UPDATED, channel, fields, at, op.event_id)

    async def membership(self, op: ev.Membership, channel: channels.Channel) -> bool:
        agent_id = self.agents.get(op.user_id)
        if agent_id is not None:
            return await self.agent_membership(op, channel, agent_id)
        if self.is_person_change(op):
            await self.change_people([op])
            return True
        if op.membership == "invite":
            member = (HUMAN, self.users[op.user_id])
            self.announce_member(bus.MEMBER_INVITED, channel, member, None, op)
        return False  # invites and knocks are not membership yet

    def is_person_change(self, op: ev.Operation) -> bool:
        return (
            isinstance(op, ev.Membership)
            and op.user_id not in self.agents
            and (op.membership == "join" or op.membership in LEFT)
        )

    async def change_people(self, ops: Sequence[ev.Membership]) -> None:
        """People's joins and leaves, in order, in one round trip."""
        changes = []
        for op in ops:
            role = None
            if op.membership == "join":
                power = await self.scope.room_power(op.room_id)
                role = role_for(op.user_id, power.power_levels, power.creators)
            user_id = self.users[op.user_id]
            mark = mark_of(op)
            event = (op.room_id, op.user_id, mark) if mark is not None else None
            channel_id = self.channels[op.room_id].id
            changes.append(members.PersonChange(channel_id, user_id, role, op.ts, event))
        changed = await members.change_people(self.conn, changes)
        for op, change, did in zip(ops, changes, changed, strict=True):
            if did:
                subject = bus.MEMBER_JOINED if change.role is not None else bus.MEMBER_LEFT
                member = (HUMAN, change.user_id)
                self.announce_member(subject, self.channels[op.room_id], member, change.role, op)

    def announce_member(
        self,
        subject: str,
        channel: channels.Channel,
        member: tuple[str, UUID],
        role: str | None,
        op: ev.Membership,
    ) -> None:
        self.announcer.member(subject, channel, member, role, op.ts, op.event_id)

    async def agent_membership(
        self, op: ev.Membership, channel: channels.Channel, agent_id: UUID
    ) -> bool:
        await self.record_activity(self.position.get(id(op)), (agent_id, channel.id))
        member = (AGENT, agent_id)
        mark = mark_of(op)
        if (op.membership == "join" or op.membership in LEFT) and mark is not None:
            key = (op.room_id, room_state.MEMBER, op.user_id)
            if not await room_state.newer(self.conn, *key, mark):
                return False  # an older membership than the one applied: a replay
        if op.membership == "join":
            if await members.join_agent(self.conn, channel.id, agent_id, op.ts):
                self.announce_member(bus.MEMBER_JOINED, channel, member, members.AGENT_ROLE, op)
            await sessions.open_on_join(self.conn, agent_id, channel.id, op.ts)
            return True
        if op.membership in LEFT:
            if await members.leave(self.conn, channel.id, agent_id, op.ts, agent=True):
                self.announce_member(bus.MEMBER_LEFT, channel, member, None, op)
            await sessions.close(self.conn, agent_id, channel.id)
            return True
        if op.membership == "invite":
            self.announce_member(bus.MEMBER_INVITED, channel, member, None, op)
        return False

    async def power_levels(self, op: ev.PowerLevels, channel: channels.Channel) -> None:
        power = rooms.RoomPower((await self.scope.room_power(op.room_id)).creators, op.content)
        self.power[op.room_id] = power
        current = await members.people_under_new_power_levels(
            self.conn, channel.id, op.room_id, op.content
        )
        changed = {
            user_id: new_role
            for mxid, (user_id, role) in current.items()
            if (new_role := role_for(mxid, power.power_levels, power.creators)) != role
        }
        await members.set_roles(self.conn, channel.id, changed)
