"""Whether a room's m.space.parent puts it in that space. Pure.

Anyone who may send state in their own room may name any space as its parent, so a
parent alone proves nothing. The spec (Spaces, `m.space.parent`) counts a parent only
when the space lists the room as a child, or when the parent event's sender may send
`m.space.child` in the space. This is the one place that rule lives: mapping a room on
join (ingest/invites.py) and any later change of a room's parents ask here, with the
space's state as the homeserver gives it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .rooms import creators_of, has_via, int_or, user_level

CHILD = "m.space.child"
# When a room has no m.room.power_levels, the spec gives every state event level 0 and
# the creator 100 (creators_of covers the creator).
NO_POWER_LEVELS_STATE_DEFAULT = 0
STATE_DEFAULT = 50


def may_send_state(
    user_id: str,
    event_type: str,
    power_levels: Mapping[str, Any] | None,
    creators: Iterable[str],
) -> bool:
    """Whether the user's power in the room reaches the level for this state event."""
    if user_id in creators:
        return True
    if not power_levels:
        needed = NO_POWER_LEVELS_STATE_DEFAULT
    else:
        default = int_or(power_levels.get("state_default"), STATE_DEFAULT)
        events = power_levels.get("events")
        needed = int_or(events.get(event_type), default) if isinstance(events, dict) else default
    return user_level(user_id, power_levels) >= needed


def parent_is_valid(room_id: str, sender: str, space_state: Iterable[Mapping[str, Any]]) -> bool:
    """Whether the space (given by its full state) accepts the room's `m.space.parent`
    sent by `sender`: the space lists the room as a child, or the sender may send
    `m.space.child` there."""
    by_key: dict[tuple[Any, Any], Mapping[str, Any]] = {
        (e.get("type"), e.get("state_key")): e for e in space_state if isinstance(e, Mapping)
    }
    create = by_key.get(("m.room.create", ""))
    if create is None:
        return False  # not a room's state: nothing in it can be trusted
    child = by_key.get((CHILD, room_id))
    if child is not None and has_via(child.get("content")):
        return True
    power = (by_key.get(("m.room.power_levels", "")) or {}).get("content")
    power_levels = power if isinstance(power, dict) and power else None
    creators = creators_of(create, power_levels is not None)
    return may_send_state(sender, CHILD, power_levels, creators)
