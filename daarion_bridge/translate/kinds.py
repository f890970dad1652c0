"""Message kinds whose text is not simply `body`: polls, locations, voice messages, and
the key-verification requests that are not messages at all. Pure.

Polls come as Element sends them (MSC3381, `org.matrix.msc3381.poll.start` with
MSC1767 text) and in the stable form (`m.poll.start` with `m.poll`). A location's body
is what the client generated, often with the coordinates in it (Element: `User Location
geo:51.50,-0.12;u=35 at ...`): only a description the sender typed is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

POLL_START_TYPES = frozenset({"org.matrix.msc3381.poll.start", "m.poll.start"})
# Sent as a room message in DMs to start a verification: a client's handshake, not a
# message anyone wrote.
VERIFICATION_REQUEST = "m.key.verification.request"

_POLL_KEYS = ("org.matrix.msc3381.poll.start", "m.poll")
_TEXT_KEYS = ("m.text", "org.matrix.msc1767.text", "body")
_LOCATION_KEYS = ("org.matrix.msc3488.location", "m.location")
_VOICE_KEYS = ("org.matrix.msc3245.voice", "m.voice")
_AUDIO_KEYS = ("org.matrix.msc1767.audio", "m.audio")


def _text_of(value: object) -> str | None:
    """MSC1767 text: a string, or a list of representations of which the plain one counts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and item.get("mimetype", "text/plain") == "text/plain":
                body = item.get("body")
                if isinstance(body, str):
                    return body
    return None


def _first_text(block: Mapping[str, Any]) -> str | None:
    for key in _TEXT_KEYS:
        text = _text_of(block.get(key))
        if text is not None and text.strip():
            return text
    return None


def poll(content: Mapping[str, Any]) -> tuple[str, tuple[str, ...]] | None:
    """The poll's question and its answers, or None when the content holds no poll."""
    for key in _POLL_KEYS:
        block = content.get(key)
        if isinstance(block, dict):
            question = block.get("question")
            text = _first_text(question) if isinstance(question, dict) else None
            if text is None:
                return None
            answers = block.get("answers")
            found = [
                a for a in (answers if isinstance(answers, list) else []) if isinstance(a, dict)
            ]
            return text, tuple(t for t in map(_first_text, found) if t is not None)
    return None


def poll_text(question: str, answers: tuple[str, ...], limit: int) -> str:
    """`[poll] <question>`, with the answers after it when they all fit the preview."""
    text = f"[poll] {question}"
    if answers:
        listed = f"{text} ({' / '.join(answers)})"
        if len(listed) <= limit:
            return listed
    return text


def location_description(content: Mapping[str, Any]) -> str | None:
    """What the sender typed about a location, never its coordinates."""
    for key in _LOCATION_KEYS:
        block = content.get(key)
        if isinstance(block, dict):
            description = block.get("description")
            if isinstance(description, str) and description.strip():
                return description
            break
    body = content.get("body")
    # A body with a geo: URI is the client's own text around the coordinates.
    if isinstance(body, str) and "geo:" not in body.lower():
        return body
    return None


def is_voice(content: Mapping[str, Any]) -> bool:
    return any(isinstance(content.get(key), dict) for key in _VOICE_KEYS)


def voice_text(content: Mapping[str, Any]) -> str:
    """`[voice message]`, with its length (`[voice message 0:07]`) when the client gave it."""
    duration = None
    for key in _AUDIO_KEYS:
        block = content.get(key)
        if isinstance(block, dict):
            duration = block.get("duration")
            break
    info = content.get("info")
    if duration is None and isinstance(info, dict):
        duration = info.get("duration")
    if isinstance(duration, bool) or not isinstance(duration, int | float) or duration <= 0:
        return "[voice message]"
    seconds = round(duration / 1000)
    return f"[voice message {seconds // 60}:{seconds % 60:02d}]"
