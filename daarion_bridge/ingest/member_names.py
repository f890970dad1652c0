"""Channels of rooms without a name follow their members' names, as Element shows the
room ("Alice and Sofia"), until the room is given a name (translate/rooms.py)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime

from ..db import channels, room_names
from ..translate import bus
from ..translate import events as ev
from ..translate.rooms import name_from_members
from .items import Writing


async def follow_members(
    write: Writing,
    by_room: dict[str, channels.Channel],
    ops: Sequence[ev.Operation],
    unnamed: Collection[str],
) -> None:
    """After a transaction's operations: keep the display names its joins set, and name
    again the channels of the rooms whose members changed (or, `unnamed`, whose name was
    removed) that are named after their members."""
    members = [op for op in ops if isinstance(op, ev.Membership)]
    joins = [(op.room_id, op.user_id, op.display_name) for op in members if op.membership == "join"]
    if joins:
        await room_names.put_display_names(write.conn, joins)
    rooms = {op.room_id for op in members} | set(unnamed)
    if not rooms:
        return
    # What renamed each room last: the cause the platform's event names.
    causes: dict[str, ev.Membership | ev.RoomName] = {}
    for op in ops:
        if isinstance(op, ev.Membership | ev.RoomName):
            causes[op.room_id] = op
    for room_id, people in (await room_names.named_after_members(write.conn, rooms)).items():
        channel = by_room[room_id]
        name = name_from_members(people) or room_id
        if await channels.set_name(write.conn, channel.id, name):
            cause = causes.get(room_id)
            at = (cause.ts if cause is not None else None) or datetime.now(UTC)
            event_id = cause.event_id if cause is not None else room_id
            write.announcer.channel(bus.CHANNEL_UPDATED, channel, {"name": name}, at, event_id)
