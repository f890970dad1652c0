"""What a transaction's write looks up (lookup.py): from its translated operations, or
guessed from the raw events while they are still being translated. Pure, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, TypeGuard

from ..translate import events as ev
from .items import Item, Rejected


class Wanted(NamedTuple):
    """What to look up: rooms, the rooms whose power levels are needed, Matrix users.
    In lookup.look_up's order, so `*wanted` passes it on."""

    rooms: set[str]
    power: set[str]
    users: set[str]


def operations(items: Sequence[Item]) -> list[ev.Operation]:
    return [i for i in items if i and not isinstance(i, Rejected)]


def wanted_by_operations(ops: Sequence[ev.Operation]) -> Wanted:
    """What to look up for these operations: their rooms, the rooms whose power levels
    they need, and their Matrix users."""
    return Wanted(
        {op.room_id for op in ops},
        {op.room_id for op in ops if _needs_power(op)},
        {m for op in ops for m in _users_of(op)},
    )


def wanted_by_events(events: Sequence[Any]) -> Wanted:
    """What `wanted_by_operations` will need for these events' operations, read from the
    raw events before they are translated: every room, the rooms of redactions, power
    levels and joins (`_needs_power`), every sender and member. Ids that are not plain
    ASCII are left out, so the guess always encodes; the writer looks up again what it
    missed. Any JSON will do: nothing here hashes a value before knowing it is a string."""
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
    return Wanted(rooms, power, users)


def covers(looked_up: Wanted, wanted: Wanted) -> bool:
    return all(w <= have for w, have in zip(wanted, looked_up, strict=True))


def actors_of(op: ev.Operation) -> tuple[str, ...]:
    """Who acts: a message's or an edit's or a redaction's sender, a membership's member."""
    if isinstance(op, ev.NewMessage):
        return (op.sender,)
    if isinstance(op, ev.Membership):
        return (op.user_id,)
    if isinstance(op, ev.EditMessage | ev.RedactMessage) and op.sender:
        return (op.sender,)
    return ()


def _plain(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and value.isascii() and "\x00" not in value


def _users_of(op: ev.Operation) -> tuple[str, ...]:
    """The actors, and the agent invited (an agent mentioned is one of its channel's)."""
    if isinstance(op, ev.AgentInvited):
        return (op.agent_mxid,)
    return actors_of(op)


def _needs_power(op: ev.Operation) -> bool:
    """A person's role on joining, a redaction's right, a new power levels' creators."""
    return isinstance(op, ev.RedactMessage | ev.PowerLevels) or (
        isinstance(op, ev.Membership) and op.membership == "join"
    )
