"""Where a message stands among others: the thread it is in and the message it answers.
Pure: no I/O.

Element sends a message in a thread with `rel_type: m.thread` naming the thread's root,
and `m.in_reply_to` naming the thread's latest event with `is_falling_back: true` (for
clients without threads: not a real reply). A real reply in a thread has
`is_falling_back: false`. The relation stays in the clear in an encrypted event, so this
works there too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from .preview import has_unstorable

THREAD = "m.thread"
MAX_EVENT_ID = 255  # the spec's limit on an event id


@dataclass(frozen=True, slots=True)
class Relations:
    thread_root: str | None = None  # the thread's root event, None outside threads
    reply_to: str | None = None  # the event it really replies to (not a thread fallback)


NONE = Relations()


def event_id_like(value: object) -> TypeGuard[str]:
    """An event id the index can store: `$...`, at most 255 characters, no NUL."""
    return (
        isinstance(value, str)
        and value.startswith("$")
        and 1 < len(value) <= MAX_EVENT_ID
        and not has_unstorable(value)
    )


def relations_of(content: Mapping[str, Any]) -> Relations:
    """The thread and the reply of a message's content; a malformed relation is none."""
    relates = content.get("m.relates_to")
    if not isinstance(relates, dict):
        return NONE
    root = relates.get("event_id") if relates.get("rel_type") == THREAD else None
    thread_root = root if event_id_like(root) else None
    parent = relates.get("m.in_reply_to")
    reply_to = parent.get("event_id") if isinstance(parent, dict) else None
    if not event_id_like(reply_to) or (thread_root and relates.get("is_falling_back") is True):
        reply_to = None
    if thread_root is None and reply_to is None:
        return NONE
    return Relations(thread_root, reply_to)


def reply_relation(reply_to: str, thread_root: str | None) -> dict[str, Any]:
    """`m.relates_to` of a reply; in a thread, as Element sends a reply there."""
    in_reply_to = {"event_id": reply_to}
    if thread_root is None:
        return {"m.in_reply_to": in_reply_to}
    return {
        "rel_type": THREAD,
        "event_id": thread_root,
        "is_falling_back": False,
        "m.in_reply_to": in_reply_to,
    }


def thread_relation(thread_root: str, latest: str) -> dict[str, Any]:
    """`m.relates_to` of a message in a thread that replies to nothing in particular:
    the fallback names the thread's latest event, as Element sends it."""
    return {
        "rel_type": THREAD,
        "event_id": thread_root,
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": latest},
    }
