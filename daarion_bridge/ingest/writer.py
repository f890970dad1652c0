"""Apply one Synapse transaction's operations to the index in one Postgres transaction."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from asyncpg import Connection

from ..db import agents, bookkeeping, channels, members, messages, microdaos, rooms, sessions, users
from ..db.errors import is_data_error
from ..db.outbox import AGENT, HUMAN
from ..translate import bus
from ..translate import events as ev
from ..translate.rooms import RoomSnapshot, may_redact_others, role_for
from . import lookup
from .announce import Announcer

LEFT = frozenset({"leave", "ban"})


@dataclass(frozen=True, slots=True)
class ChannelSetup:
    """A room the bot just joined, to become a channel in this transaction."""

    snapshot: RoomSnapshot
    microdao_external_id: str
    inviter: str
    invite_event_id: str = ""


@dataclass(frozen=True, slots=True)
class Announce:
    """Write the platform's events to the outbox (NATS is on)."""

    bot_mxid: str


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


async def write_transaction(
    conn: Connection,
    txn_id: str,
    digest: str,
    items: Sequence[Item],
    setups: Sequence[ChannelSetup] = (),
    *,
    events: Sequence[Any] | None = None,
    announce: Announce | None = None,
) -> Outcome:
    """Write all rows of one transaction and its id in one commit (see write_rows)."""
    async with bookkeeping.ingest_transaction(conn):
        return await write_rows(
            conn, txn_id, digest, items, setups, events=events, announce=announce
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
) -> Outcome:
    """Write all rows of one transaction and its id, in the caller's
    bookkeeping.ingest_transaction.

    With `events` (the raw events, parallel to `items`), each operation runs under its
    own savepoint and one the database rejects as data is dead-lettered instead of
    failing the whole transaction: the slow path after a data error. With `announce`,
    every change also becomes an outbox event in the same commit.
    """
    wanted = _wanted(_operations(items))
    claim, known = await lookup.claim_and_look_up(conn, txn_id, digest, len(items), *wanted)
    return await _write_claimed(
        conn, txn_id, (claim, known, wanted), items, setups, events=events, announce=announce
    )


async def write_while_translating(
    conn: Connection,
    txn_id: str,
    digest: str,
    events: Sequence[Any],
    items: Awaitable[Sequence[Item]],
    *,
    announce: Announce | None = None,
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
        return await _write_claimed(
            conn, txn_id, (claim, known, guess), translated, (), announce=announce
        )


async def _write_claimed(
    conn: Connection,
    txn_id: str,
    claimed: tuple[bookkeeping.Claim, lookup.Known, Wanted],
    items: Sequence[Item],
    setups: Sequence[ChannelSetup],
    *,
    events: Sequence[Any] | None = None,
    announce: Announce | None = None,
) -> Outcome:
    """write_rows after the claim and the lookup of what it names (`looked_up`)."""
    claim, known, looked_up = claimed
    outcome = Outcome()
    if claim is bookkeeping.Claim.REPLAY:
        outcome.replay = True
        return outcome
    outcome.reused_id = claim is bookkeeping.Claim.REUSED
    announcer = Announcer(announce is not None, announce.bot_mxid if announce else "")
    raw = events if events is not None else [None] * len(items)
    pairs = [(e, i) for e, i in zip(raw, items, strict=True) if i and not isinstance(i, Rejected)]
    ops = [op for _, op in pairs]
    for item in items:
        if isinstance(item, Rejected):
            await bookkeeping.dead_letter(conn, txn_id, item.event, item.reason)
            outcome.dead_letters += 1
    for setup in setups:
        channel = await _create_channel(conn, setup, announcer)
        outcome.new_channels.append(channel)
    wanted = _wanted(ops)
    if ops and (setups or not _covers(looked_up, wanted)):
        # Read again: the new channels were not there at the claim, or the guess from the
        # raw events missed something.
        known = await lookup.look_up(conn, *wanted)
    applier = _Applier(conn, txn_id, outcome, announcer, isolate=events is not None)
    await applier.run(pairs, known)
    outcome.announced = await announcer.flush(conn)
    return outcome


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


# What to look up: rooms, the rooms whose power levels are needed, Matrix users.
Wanted = tuple[set[str], set[str], set[str]]


def _operations(items: Sequence[Item]) -> list[ev.Operation]:
    return [i for i in items if i and not isinstance(i, Rejected)]


def _wanted(ops: Sequence[ev.Operation]) -> Wanted:
    """What to look up for these operations: their rooms, the rooms whose power levels
    they need, and their Matrix users."""
    return (
        {op.room_id for op in ops},
        {op.room_id for op in ops if _needs_power(op)},
        {m for op in ops for m in _users_of(op)},
    )


def wanted_by_events(events: Sequence[Any]) -> Wanted:
    """What `_wanted` will need for these events' operations, read from the raw events
    before they are translated: every room, the rooms of redactions, power levels and
    joins (`_needs_power`), every sender and member. Ids that are not plain ASCII are
    left out, so the guess always encodes; the writer looks up again what it missed.
    Any JSON will do: nothing here hashes a value before knowing it is a string."""
    rooms: set[str] = set()
    power: set[str] = set()
    users: set[str] = set()
    for event in events:
        if not isinstance(event, dict):
            continue
        room = event.get("room_id")
        room = room if _plain(room) else None
        if room is not None:
            rooms.add(room)
        if _plain(sender := event.get("sender")):
            users.add(sender)
        etype = event.get("type")
        needs_power = etype == "m.room.redaction" or etype == "m.room.power_levels"
        if etype == "m.room.member":
            if _plain(member := event.get("state_key")):
                users.add(member)
            content = event.get("content")
            needs_power = isinstance(content, dict) and content.get("membership") == "join"
        if needs_power and room is not None:
            power.add(room)
    return rooms, power, users


def _plain(value: Any) -> bool:
    return isinstance(value, str) and value.isascii() and "\x00" not in value


def _covers(looked_up: Wanted, wanted: Wanted) -> bool:
    return all(w <= have for w, have in zip(wanted, looked_up, strict=True))


async def _create_channel(
    conn: Connection, setup: ChannelSetup, announcer: Announcer
) -> channels.Channel:
    snap = setup.snapshot
    agent_ids = await agents.by_matrix_ids(conn, snap.joined)
    people = await users.ensure_users(
        conn, [m for m in (setup.inviter, *snap.joined) if m not in agent_ids]
    )
    microdao_id = await microdaos.ensure(conn, setup.microdao_external_id, people[setup.inviter])
    channel, created = await channels.create(
        conn,
        room_id=snap.room_id,
        name=snap.name,
        slug=snap.slug,
        visibility=snap.visibility,
        microdao_id=microdao_id,
        created_by_user_id=people[setup.inviter],
    )
    await rooms.put(conn, snap.room_id, snap.room_version, snap.creators, snap.power_levels)
    # The state snapshot has no per-member join time; the moment of bridging stands in.
    now = await conn.fetchval("SELECT now()")
    cause = setup.invite_event_id or snap.room_id
    if created:
        fields = {"name": snap.name, "slug": channel.slug, "visibility": snap.visibility}
        announcer.channel(bus.CHANNEL_CREATED, channel, fields, now, cause)
    for mxid in snap.joined:
        if mxid in agent_ids:
            member, role = (AGENT, agent_ids[mxid]), members.AGENT_ROLE
            joined = await members.join_agent(conn, channel.id, agent_ids[mxid], now)
            await sessions.open_on_join(conn, agent_ids[mxid], channel.id, now)
        else:
            member, role = (HUMAN, people[mxid]), role_for(mxid, snap.power_levels, snap.creators)
            joined = await members.join(conn, channel.id, people[mxid], role, now)
        if joined:
            announcer.member(bus.MEMBER_JOINED, channel, member, role, now, cause)
    return channel


def _actors_of(op: ev.Operation) -> tuple[str, ...]:
    """Who acts: a message's or an edit's or a redaction's sender, a membership's member."""
    if isinstance(op, ev.NewMessage):
        return (op.sender,)
    if isinstance(op, ev.Membership):
        return (op.user_id,)
    if isinstance(op, ev.EditMessage | ev.RedactMessage) and op.sender:
        return (op.sender,)
    return ()


def _users_of(op: ev.Operation) -> tuple[str, ...]:
    """The actors, and the agent invited (an agent mentioned is one of its channel's)."""
    if isinstance(op, ev.AgentInvited):
        return (op.agent_mxid,)
    return _actors_of(op)


def _room_agents(ops: Sequence[ev.Operation], known: lookup.Known) -> dict[str, set[str]]:
    """The agents a message in each room can mention: those in its channel, and those
    whose membership changes in this transaction (a join before the mention counts)."""
    rooms = {room: set(agents) for room, agents in known.channel_agents.items()}
    for op in ops:
        if isinstance(op, ev.Membership) and op.user_id in known.agents:
            rooms.setdefault(op.room_id, set()).add(op.user_id)
    return rooms


def _needs_power(op: ev.Operation) -> bool:
    """A person's role on joining, a redaction's right, a new power levels' creators."""
    return isinstance(op, ev.RedactMessage | ev.PowerLevels) or (
        isinstance(op, ev.Membership) and op.membership == "join"
    )


class _Applier:
    """Applies operations in order; rooms that are not channels are ignored."""

    def __init__(
        self,
        conn: Connection,
        txn_id: str,
        outcome: Outcome,
        announcer: Announcer,
        isolate: bool,
    ) -> None:
        self.conn = conn
        self.txn_id = txn_id
        self.outcome = outcome
        self.announcer = announcer
        self.isolate = isolate
        self.power: dict[str, rooms.RoomPower] = {}
        self.room_agents: dict[str, set[str]] = {}  # room id -> agents it may mention
        # (agent, channel) -> [(position of the event in the transaction, when)]
        self.activity: dict[tuple[UUID, UUID], list[tuple[int, datetime]]] = {}
        self.position: dict[int, int] = {}

    async def run(self, pairs: Sequence[tuple[Any, ev.Operation]], known: lookup.Known) -> None:
        if not pairs:
            return
        ops = [op for _, op in pairs]
        self.position = {id(op): i for i, op in enumerate(ops)}
        self.channels, self.power, self.agents = known.channels, known.power, known.agents
        self.room_agents = _room_agents(ops, known)
        self.announcer.know(known.platform_ids)
        # People seen for the first time get a row, but only in bridged rooms.
        unseen = {
            m
            for op in ops
            if op.room_id in self.channels
            for m in _actors_of(op)
            if m not in known.agents and m not in known.people
        }
        if unseen:
            for matrix_id, row_id, platform_id in await users.create(self.conn, sorted(unseen)):
                known.people[matrix_id] = row_id
                self.announcer.know({(HUMAN, row_id): platform_id})
        self.users = known.people
        self.by_id = {c.id: c for c in self.channels.values()}
        bridged = [(raw, op) for raw, op in pairs if self.bridged(op)]
        if self.isolate:
            for raw, op in bridged:
                self.count(op, await self.apply_isolated(raw, op))
        else:
            await self.apply_batched([op for _, op in bridged])
        await self.record_activity(before=None)

    def bridged(self, op: ev.Operation) -> bool:
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
        (newest edit wins, redaction is final) and only need the rows to exist;
        membership and state never depend on messages."""
        news = [op for op in ops if isinstance(op, ev.NewMessage)]
        await self.insert_messages(news)
        self.outcome.applied["NewMessage"] += len(news)
        # People's joins and leaves go in runs, each run before the next other operation,
        # so roles follow power levels and announcements keep the events' order.
        people: list[ev.Membership] = []
        for op in ops:
            if isinstance(op, ev.NewMessage | ev.EditMessage | ev.RedactMessage):
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
        changed = await self.edit(edits)
        self.outcome.applied["EditMessage"] += changed
        self.outcome.ignored["EditMessage"] += len(edits) - changed
        redactions = [op for op in ops if isinstance(op, ev.RedactMessage)]
        changed = await self.redact(redactions)
        self.outcome.applied["RedactMessage"] += changed
        self.outcome.ignored["RedactMessage"] += len(redactions) - changed

    async def edit(self, edits: Sequence[ev.EditMessage]) -> int:
        changed = await messages.edit_many(self.conn, [self.edit_of(op) for op in edits])
        by_cause = {op.event_id: op for op in edits}
        for row in changed:
            op = by_cause[row.cause]
            at = ev.EPOCH + timedelta(milliseconds=op.ts_ms)
            self.announcer.message_changed(self.by_id[row.channel_id], row, at, op.preview)
        return len(changed)

    async def redact(self, redactions: Sequence[ev.RedactMessage]) -> int:
        changed = await messages.redact_many(
            self.conn, [await self.redaction_of(op) for op in redactions]
        )
        by_cause = {op.event_id: op for op in redactions}
        for row in changed:
            channel = self.by_id[row.channel_id]
            self.announcer.message_changed(channel, row, by_cause[row.cause].ts, None)
        return len(changed)

    def author(self, room_id: str, sender: str) -> messages.Author:
        agent_id = self.agents.get(sender)
        user_id = None if agent_id is not None else self.users.get(sender)
        return messages.Author(self.channels[room_id].id, user_id, agent_id)

    def edit_of(self, op: ev.EditMessage) -> messages.Edit:
        author = self.author(op.room_id, op.sender)
        return messages.Edit(op.target_event_id, op.event_id, op.ts_ms, op.preview, author)

    async def redaction_of(self, op: ev.RedactMessage) -> messages.Redaction:
        power = await self.room_power(op.room_id)
        others = may_redact_others(op.sender, power.power_levels, power.creators)
        author = self.author(op.room_id, op.sender)
        return messages.Redaction(op.target_event_id, op.event_id, author, others)

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
        for op, row, mentioned in zip(news, rows, calls, strict=True):
            message_id = inserted.get(op.event_id)
            if message_id is None:
                continue
            channel = self.channels[op.room_id]
            self.announcer.message_created(channel, row, message_id)
            if row.sender_agent_id is not None:
                self.note_activity(row.sender_agent_id, row.channel_id, op)
                continue
            if op.command is not None:
                # For the bridge: it invokes no agent and counts as no agent's activity.
                self.outcome.commands.append(op)
                continue
            for agent_id in mentioned:
                self.note_activity(agent_id, row.channel_id, op)
            self.announcer.human_message(channel, message_id, op.event_id, op.sender, mentioned)

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
        return messages.NewRow(channel.id, op.event_id, user_id, agent_id, op.preview, op.ts)

    async def apply_isolated(self, raw: Any, op: ev.Operation) -> bool:
        try:
            async with _savepoint(self.conn):
                return await self.apply(op)
        except (asyncpg.PostgresError, UnicodeError) as e:
            if not is_data_error(e):
                raise
            self.power.pop(op.room_id, None)  # may hold what the savepoint rolled back
            code = getattr(e, "sqlstate", None) or "encoding"
            reason = f"database rejected the row: {type(e).__name__} ({code})"
            await bookkeeping.dead_letter(self.conn, self.txn_id, raw, reason)
            self.outcome.dead_letters += 1
            return False

    async def room_power(self, room_id: str) -> rooms.RoomPower:
        if room_id not in self.power:
            self.power[room_id] = await rooms.get(self.conn, room_id)
        return self.power[room_id]

    async def apply(self, op: ev.Operation) -> bool:
        """One operation on its own (the slow path, and membership and state always)."""
        conn = self.conn
        channel = self.channels[op.room_id]
        if isinstance(op, ev.NewMessage):
            await self.insert_messages([op])
            return True
        if isinstance(op, ev.EditMessage):
            return await self.edit([op]) > 0
        if isinstance(op, ev.RedactMessage):
            return await self.redact([op]) > 0
        if isinstance(op, ev.Membership):
            return await self.membership(op, channel)
        if isinstance(op, ev.PowerLevels):
            await self.power_levels(op, channel)
            return True
        if isinstance(op, ev.RoomName):
            name = op.name or op.room_id
            if await channels.set_name(conn, channel.id, name):
                self.channel_updated(channel, {"name": name}, op)
            return True
        if isinstance(op, ev.JoinRules):
            if await channels.set_visibility(conn, channel.id, op.visibility):
                self.channel_updated(channel, {"visibility": op.visibility}, op)
            return True
        return False

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
                power = await self.room_power(op.room_id)
                role = role_for(op.user_id, power.power_levels, power.creators)
            user_id = self.users[op.user_id]
            changes.append(members.PersonChange(self.channels[op.room_id].id, user_id, role, op.ts))
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
        power = rooms.RoomPower((await self.room_power(op.room_id)).creators, op.content)
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
