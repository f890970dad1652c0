"""Room events as Synapse pushes them, for the database tests: unique ids, rising times."""

from __future__ import annotations

import itertools
import time
from typing import Any

ALICE = "@alice:localhost"
ROOM = "!room:localhost"
_ids = itertools.count(1)
# Near now: the session sweep compares activity times with the database clock.
_ts = itertools.count(int(time.time() * 1000) - 3_600_000, 1000)


def event(
    etype: str, content: dict[str, Any], sender: str = ALICE, room: str = ROOM, **extra: Any
) -> dict[str, Any]:
    return {
        "type": etype,
        "room_id": room,
        "event_id": f"$e{next(_ids)}",
        "sender": sender,
        "origin_server_ts": next(_ts),
        "content": content,
        **extra,
    }


def text(body: str, sender: str = ALICE, room: str = ROOM, **content: Any) -> dict[str, Any]:
    return event("m.room.message", {"msgtype": "m.text", "body": body, **content}, sender, room)


def member(
    user: str, membership: str, sender: str | None = None, room: str = ROOM
) -> dict[str, Any]:
    return event("m.room.member", {"membership": membership}, sender or user, room, state_key=user)
