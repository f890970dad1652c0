"""Whether a person's message is a bot command, and the command's text. Pure.

Translation needs this to tell commands from mentions; what a command means and who may
run it is the commands package's business.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PREFIX = "!daarion"
_PREFIX = re.compile(re.escape(PREFIX) + r"(?=\s|$)", re.IGNORECASE)


def _strip_reply_fallback(body: str) -> str:
    """A reply's body may start with the quoted parent (`> ...` lines, then a blank line)."""
    lines = body.split("\n")
    i = 0
    while i < len(lines) and lines[i].startswith(">"):
        i += 1
    if i and i < len(lines) and not lines[i].strip():
        return "\n".join(lines[i + 1 :])
    return body


def command_text(content: Mapping[str, object]) -> str | None:
    """What follows `!daarion` in a person's text message, or None when it is not a
    command. Only `m.text`: notices are what bots send each other, and never commands."""
    if content.get("msgtype") != "m.text":
        return None
    body = content.get("body")
    if not isinstance(body, str) or PREFIX[0] not in body:  # the usual message: no "!"
        return None
    relates = content.get("m.relates_to")
    if isinstance(relates, dict):
        if relates.get("rel_type") == "m.replace":
            return None  # an edit never runs a command again
        if isinstance(relates.get("m.in_reply_to"), dict):
            body = _strip_reply_fallback(body)
    body = body.strip()
    match = _PREFIX.match(body)
    if match is None:
        return None
    return body[match.end() :].strip()
