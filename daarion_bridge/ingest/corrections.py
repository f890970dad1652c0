"""Edits and redactions of indexed messages, inside the writer's transaction: each
batch in one statement, with the announcements of what changed. They commute (newest
edit wins, redaction is final) and only need the rows to exist, so the applier runs
them after the transaction's new messages and membership."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

from asyncpg import Connection

from ..db import bookkeeping, messages, rooms
from ..db.channels import Channel
from ..translate import events as ev
from ..translate.rooms import may_redact_others
from .announce import Announcer


@dataclass
class Scope:
    """What one transaction knows of the rooms it touches (see lookup.Known)."""

    conn: Connection
    announcer: Announcer
    channels: dict[str, Channel]  # by room id
    agents: dict[str, UUID]  # by Matrix id
    users: dict[str, UUID]  # by Matrix id, agents excluded
    # By room id; a room's entry is read when first needed, and replaced when the
    # transaction changes its power levels.
    power: dict[str, rooms.RoomPower]
    by_id: dict[UUID, Channel] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {c.id: c for c in self.channels.values()}

    async def room_power(self, room_id: str) -> rooms.RoomPower:
        if room_id not in self.power:
            self.power[room_id] = await rooms.get(self.conn, room_id)
        return self.power[room_id]

    def author(self, room_id: str, sender: str) -> messages.Author:
        agent_id = self.agents.get(sender)
        user_id = None if agent_id is not None else self.users.get(sender)
        return messages.Author(self.channels[room_id].id, user_id, agent_id, sender)

    async def may_redact_others(self, op: ev.RedactMessage) -> bool:
        power = await self.room_power(op.room_id)
        return may_redact_others(op.sender, power.power_levels, power.creators)


async def edit(scope: Scope, edits: Sequence[ev.EditMessage]) -> int:
    """The edits that changed a message's text; how many."""
    rows = [
        messages.Edit(
            op.target_event_id, op.event_id, op.ts_ms, op.preview,
            scope.author(op.room_id, op.sender),
        )
        for op in edits
    ]  # fmt: skip
    changed = await messages.edit_many(scope.conn, rows)
    by_cause = {op.event_id: op for op in edits}
    # Decrypted late: applied as `[encrypted]` before (then the edit above found it
    # there), it shows its text now.
    late = [(op.event_id, op.preview) for op in edits if op.late]
    revealed = await messages.reveal_edits(scope.conn, late)
    for row, decrypted in [*((r, False) for r in changed), *((r, True) for r in revealed)]:
        op = by_cause[row.cause]
        at = ev.EPOCH + timedelta(milliseconds=op.ts_ms)
        channel = scope.by_id[row.channel_id]
        scope.announcer.message_changed(channel, row, at, op.preview, decrypted=decrypted)
    return len(changed) + len(revealed)


async def reveal(scope: Scope, late: Sequence[ev.NewMessage]) -> dict[str, messages.Revealed]:
    """Messages decrypted after they were indexed as `[encrypted]`: each shows its text
    where the index keeps it (plaintext previews) unless redacted or edited meanwhile;
    a changed preview is announced. By event id, those indexed."""
    revealed = await messages.reveal(scope.conn, [(op.event_id, op.preview) for op in late])
    by_id = {op.event_id: op for op in late}
    for event_id, found in revealed.items():
        if found.shown:
            channel = scope.by_id[found.row.channel_id]
            at = datetime.now(UTC)  # the text is known from now on
            preview = by_id[event_id].preview
            scope.announcer.message_changed(channel, found.row, at, preview, decrypted=True)
    return revealed


async def redact(
    scope: Scope, redactions: Sequence[ev.RedactMessage], judged: dict[int, bool]
) -> int:
    """Redactions of messages, then of edits: those that deleted no message may name
    an edit ("Remove" on an edit in Element), whose message goes back a version.
    `judged`: whether each redaction (by id()) may remove others' messages, judged where
    it stood in the transaction; those missing are judged now."""
    rows = []
    for op in redactions:
        others = judged.pop(id(op), None)
        if others is None:
            others = await scope.may_redact_others(op)
        author = scope.author(op.room_id, op.sender)
        rows.append(messages.Redaction(op.target_event_id, op.event_id, author, others))
    changed = await messages.redact_many(scope.conn, rows)
    by_cause = {op.event_id: op for op in redactions}
    for row in changed:
        channel = scope.by_id[row.channel_id]
        scope.announcer.message_changed(channel, row, by_cause[row.cause].ts, None)
    done = {row.cause for row in changed}
    rest = [r for r in rows if r.redaction_event_id not in done]
    restored = await messages.remove_edits(scope.conn, rest)
    for row, preview in restored:
        at = by_cause[row.cause].ts or datetime.now(UTC)
        scope.announcer.message_changed(scope.by_id[row.channel_id], row, at, preview)
    done |= {row.cause for row, _ in restored}
    # What names no message may name an event set aside: its text goes too.
    letters = [
        bookkeeping.LetterRedaction(
            r.target_event_id, r.redaction_event_id, by_cause[r.redaction_event_id].room_id,
            by_cause[r.redaction_event_id].sender, r.may_redact_others,
        )
        for r in rows
        if r.redaction_event_id not in done
    ]  # fmt: skip
    await bookkeeping.redact_dead_letters(scope.conn, letters)
    return len(changed) + len(restored)
