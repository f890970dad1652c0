"""What a runtime reads of a message through the context endpoint: its full current
text, as the homeserver gives the event to the agent's puppet. Pure: no I/O.

Unlike the preview this keeps the whole text (lines and all, up to the platform's
10,000 characters), applies the latest edit the homeserver bundles with the event
(`unsigned.m.relations.m.replace`), drops the reply fallback, and shows media as their
label and name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .events import MESSAGE_TYPES
from .preview import (
    BadEvent,
    is_reply,
    render_preview,
    storable,
    strip_html_reply_fallback,
    strip_reply_fallback,
)
from .relations import relations_of

MAX_TEXT = 10_000  # the platform's cap on a message
MAX_HTML = 4 * MAX_TEXT
TEXT_TYPES = frozenset({"m.text", "m.notice", "m.emote"})


@dataclass(frozen=True, slots=True)
class MessageView:
    event_id: str
    sender: str  # Matrix id
    ts_ms: int
    text: str | None  # None: deleted
    html: str | None
    truncated: bool
    reply_to: str | None
    thread_root: str | None
    edited: bool
    deleted: bool


def is_message(event: Mapping[str, Any]) -> bool:
    """A message of the conversation: not an edit of one, not state, not a reaction."""
    if event.get("type") not in MESSAGE_TYPES or "state_key" in event:
        return False
    content = event.get("content")
    relates = content.get("m.relates_to") if isinstance(content, dict) else None
    return not (isinstance(relates, dict) and relates.get("rel_type") == "m.replace")


def _replacement(event: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The new content of the latest edit the homeserver bundles with the event, if it is
    the original sender's (anyone else's edit is no edit, as Element shows it)."""
    unsigned = event.get("unsigned")
    relations = unsigned.get("m.relations") if isinstance(unsigned, dict) else None
    edit = relations.get("m.replace") if isinstance(relations, dict) else None
    if not isinstance(edit, dict) or edit.get("sender") != event.get("sender"):
        return None
    content = edit.get("content")
    new = content.get("m.new_content") if isinstance(content, dict) else None
    return new if isinstance(new, dict) else None


def _cut(text: str, limit: int) -> tuple[str, bool]:
    return (text, False) if len(text) <= limit else (text[:limit], True)


def _texts(etype: str, content: Mapping[str, Any], sender: str) -> tuple[str, str | None]:
    """The plain text and the HTML (None without one) of a message's content."""
    msgtype = content.get("msgtype")
    body = content.get("body")
    if etype == "m.room.message" and msgtype in TEXT_TYPES and isinstance(body, str):
        text = strip_reply_fallback(body) if is_reply(content) else body
        if msgtype == "m.emote":
            text = render_preview(etype, {**content, "body": text}, MAX_TEXT + 1, sender)
        html = content.get("formatted_body")
        if content.get("format") != "org.matrix.custom.html" or not isinstance(html, str):
            return text, None
        return text, strip_html_reply_fallback(html) if is_reply(content) else html
    # Media, stickers, locations, polls, encrypted: their label and name, as the preview.
    return render_preview(etype, content, MAX_TEXT + 1, sender), None


def rel_pair(rel: Any) -> tuple[str | None, str | None]:
    return rel.reply_to, rel.thread_root


def view(event: Mapping[str, Any]) -> MessageView:
    """A message event as the runtime reads it; BadEvent for one without id, sender or
    time (the homeserver never sends such)."""
    event_id, sender, ts = event.get("event_id"), event.get("sender"), event.get("origin_server_ts")
    if not isinstance(event_id, str) or not isinstance(sender, str) or not isinstance(ts, int):
        raise BadEvent("event without an id, sender or time")
    content = event.get("content")
    content = content if isinstance(content, dict) else {}
    rel = relations_of(content)
    unsigned = event.get("unsigned")
    if (isinstance(unsigned, dict) and "redacted_because" in unsigned) or not content:
        return MessageView(event_id, sender, ts, None, None, False, None, None, False, True)
    etype = str(event.get("type"))
    new = _replacement(event) if etype != "m.room.encrypted" else None
    try:
        text, html = _texts(etype, new if new is not None else content, sender)
    except BadEvent:  # a shape no client sends: shown as no text, never an error
        return MessageView(event_id, sender, ts, None, None, False, *rel_pair(rel), False, False)
    text, cut = _cut(storable(text), MAX_TEXT)
    html_cut = False
    if html is not None:
        html, html_cut = _cut(storable(html), MAX_HTML)
    return MessageView(
        event_id,
        sender,
        ts,
        text,
        html,
        cut or html_cut,
        rel.reply_to,
        rel.thread_root,
        new is not None,
        False,
    )
