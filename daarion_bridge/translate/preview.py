"""Turn a Matrix event's content into the one-line preview stored in the index.

Pure and allocation-light on purpose: it runs for every message on the hot path,
so short texts never pay for grapheme segmentation.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any, TypeGuard

import regex

from .kinds import (
    POLL_START_TYPES,
    is_voice,
    location_description,
    poll,
    poll_text,
    voice_text,
)

ELLIPSIS = "\u2026"

# Exactly the Unicode White_Space property. str.split()/str.strip() would also eat
# the C0 separators U+001C..U+001F, which are control characters we must keep.
_WHITESPACE = "".join(
    map(
        chr,
        [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B)]
        + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000],
    )
)
_WHITESPACE_RUN = re.compile(f"[{re.escape(_WHITESPACE)}]+")
_C0_SEPARATORS = re.compile("[\x1c-\x1f]")
# Postgres text rejects NUL, and a lone surrogate cannot be encoded as UTF-8 at all.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_GRAPHEME = regex.compile(r"\X")
# What normalize_text replaces or collapses, but for the plain space.
_NOT_PLAIN = re.compile(f"[\x00\ud800-\udfff\x1c-\x1f{re.escape(_WHITESPACE.replace(' ', ''))}]")

_MEDIA_LABELS = {
    "m.image": "[image]",
    "m.video": "[video]",
    "m.audio": "[audio]",
    "m.file": "[file]",
}


class BadEvent(ValueError):
    """The event can never be turned into a row (malformed / unexpected shape).

    Retrying cannot help, so callers should skip the event. The message names the
    problem, never the message text, so it is safe to log.
    """


def render_preview(
    event_type: str, content: Mapping[str, Any], limit: int, sender: str = ""
) -> str:
    """Preview of at most ``limit`` code points; raises BadEvent for unusable events.
    ``sender`` names who acts in an emote."""
    _check_limit(limit)
    if event_type == "m.room.encrypted":
        # Whatever the content says, it is ciphertext or metadata we must not surface.
        text = "[encrypted]"
    elif not isinstance(content, dict):
        raise BadEvent(f"content is a {type(content).__name__}, not a mapping")
    elif event_type == "m.sticker":
        text = _labelled("[sticker]", content.get("body"))
    elif event_type == "m.room.message":
        text = _message_text(content, sender)
    elif event_type in POLL_START_TYPES:
        found = poll(content)
        if found is None:
            raise BadEvent("poll start without a question")
        text = poll_text(*found, limit)
    else:
        raise BadEvent("unsupported event type")
    return fit(text, limit)


# How much more than `limit` of a long text is normalized before the full text is.
_HEAD_SLACK = 64


def fit(text: str, limit: int) -> str:
    """`truncate_graphemes(normalize_text(text), limit)`, but a long text only has its
    head normalized: most bodies are longer than their preview, and normalizing every
    character was a tenth of the bridge's CPU. Exact, because normalizing a prefix gives
    a prefix of the normalized text, and truncation reads only the first `limit` code
    points (and whether there are more); a head that collapses to `limit` or less falls
    back to the full text."""
    head = text[: 2 * limit + _HEAD_SLACK]
    if len(head) < len(text):
        normalized = normalize_text(head)
        if len(normalized) > limit:
            return truncate_graphemes(normalized, limit)
    return truncate_graphemes(normalize_text(text), limit)


def _message_text(content: Mapping[str, Any], sender: str) -> str:
    """Media are labelled so a filename is not mistaken for something the user typed."""
    msgtype = content.get("msgtype")
    body = content.get("body")
    if not isinstance(msgtype, str):
        raise BadEvent("m.room.message without a string msgtype")
    if msgtype in _MEDIA_LABELS:
        if msgtype == "m.audio" and is_voice(content):
            return voice_text(content)
        label = _MEDIA_LABELS[msgtype]
        filename = content.get("filename")
        if not _usable(filename):
            return _labelled(label, body)
        if _usable(body) and body != filename:  # MSC2530: body is then a caption
            return f"{label} {filename}: {body}"
        return f"{label} {filename}"
    if msgtype == "m.location":
        return _labelled("[location]", location_description(content))
    if not isinstance(body, str):
        raise BadEvent("m.room.message without a string body")
    text = strip_reply_fallback(body) if is_reply(content) else body
    return emote_text(sender, text) if msgtype == "m.emote" else text


def emote_text(sender: str, text: str) -> str:
    """`* <name> <text>`, as Element shows an emote (/me). The index keeps no display
    names, so the name is the sender's localpart."""
    name = sender[1:].split(":", 1)[0] if sender.startswith("@") else sender
    return f"* {name} {text}" if name else f"* {text}"


def is_reply(content: Mapping[str, Any]) -> bool:
    relates_to = content.get("m.relates_to")
    return isinstance(relates_to, dict) and isinstance(relates_to.get("m.in_reply_to"), dict)


def _usable(value: object) -> TypeGuard[str]:
    """A name that would render as nothing is no better than no name."""
    return isinstance(value, str) and bool(value.strip(_WHITESPACE))


def _labelled(label: str, name: object) -> str:
    return f"{label} {name}" if _usable(name) else label


def strip_reply_fallback(body: str) -> str:
    """Drop the quoted copy of the parent that older clients prepend to replies.

    Otherwise every reply's preview would start with somebody else's message. The
    fallback always opens with `> <@sender>`; a reply from a newer client (no fallback,
    MSC2781) that itself starts with a quote keeps it.
    """
    if not body.startswith("> <"):
        return body
    lines = body.split("\n")
    quoted = 0
    while quoted < len(lines) and _is_quote_line(lines[quoted]):
        quoted += 1
    if quoted == 0:
        return body
    if quoted < len(lines) and lines[quoted] in ("", "\r"):
        quoted += 1
    return "\n".join(lines[quoted:])


def reply_fallback_sender(body: str) -> str | None:
    """The parent's sender named by an older client's reply fallback (`> <@sender> ...`)."""
    if not body.startswith("> <@"):
        return None
    end = body.find(">", 3)
    sender = body[3:end] if end > 0 else ""
    return sender if sender and not any(c.isspace() for c in sender) else None


def strip_html_reply_fallback(html: str) -> str:
    """Drop the `<mx-reply>` block that older clients prepend to a reply's HTML."""
    if not html.startswith("<mx-reply>"):
        return html
    end = html.find("</mx-reply>")
    return html if end < 0 else html[end + len("</mx-reply>") :]


def _is_quote_line(line: str) -> bool:
    return line.startswith("> ") or line in (">", ">\r")


def storable(text: str) -> str:
    """Text PostgreSQL can hold: NUL and lone surrogates become U+FFFD, the rest stays."""
    if text.isascii() and "\x00" not in text:  # ids and most texts: two C-speed scans
        return text
    return _UNSTORABLE.sub("\ufffd", text)


def has_unstorable(text: str) -> bool:
    if text.isascii():
        return "\x00" in text
    return _UNSTORABLE.search(text) is not None


def normalize_text(text: str) -> str:
    """One line, storable in a Postgres text column; everything else stays literal."""
    if _is_normal(text):  # most texts: one scan, no copy
        return text
    text = storable(text)
    if _C0_SEPARATORS.search(text) is None:
        return " ".join(text.split())  # exactly White_Space here, and cheaper than sub()
    return _WHITESPACE_RUN.sub(" ", text).strip(" ")


def _is_normal(text: str) -> bool:
    """normalize_text would return it as it is."""
    return (
        _NOT_PLAIN.search(text) is None
        and "  " not in text
        and not text.startswith(" ")
        and not text.endswith(" ")
    )


def truncate_graphemes(text: str, limit: int) -> str:
    """Fit ``text`` into ``limit`` code points (Postgres char_length) without
    splitting a user-perceived character, marking the cut with an ellipsis."""
    _check_limit(limit)
    if len(text) <= limit:
        return text
    budget = limit - 1  # room left for the ellipsis
    window = text[:limit]
    if window.isascii() and "\r" not in window:  # every code point is its own cluster
        return window[:budget].rstrip(_WHITESPACE) + ELLIPSIS
    # Segment only near the cut: from a nearby point where a cluster surely begins.
    start = keep = _cluster_start_near(text, budget)
    # endpos=limit: a boundary at p <= budget depends only on text[:p + 1], and it stops
    # a single enormous cluster (Zalgo) from being scanned to its end.
    for cluster in _GRAPHEME.finditer(text, start, limit):
        end = cluster.end()
        if end > budget:
            break
        if cluster.group().strip(_WHITESPACE):  # cutting after trailing spaces looks broken
            keep = end
    return text[:keep] + ELLIPSIS


_SCAN_BACK = 64
# Categories holding Grapheme_Extend characters besides marks: ZWJ/ZWNJ and tags (Cf),
# emoji modifiers (Sk), halfwidth sound marks (Lm). After one, an Indic conjunct may go
# on (consonant, virama, extend..., consonant is one cluster), so no cluster surely
# begins there. Too cautious only costs a longer scan.
_MAY_EXTEND = frozenset({"Cf", "Sk", "Lm"})
_HANGUL = ((0x1100, 0x11FF), (0xA960, 0xA97F), (0xAC00, 0xD7FF))
_REGIONAL_INDICATORS = (0x1F1E6, 0x1F1FF)


def _cluster_start_near(text: str, pos: int) -> int:
    """An index at or before ``pos`` where a grapheme cluster begins whatever precedes it
    and the cluster before it is not whitespace (so the text may be cut there), or 0 when
    none is near (then the caller segments from the start).

    A letter, digit, punctuation, symbol or space begins a cluster unless the character
    before it joins onward: a mark or format character (ZWJ, viramas of Indic conjuncts,
    prepended concatenation marks), another extending character, or CR. Regional
    indicators pair up from the start of their run, emoji modifiers (Sk) and Hangul jamo
    combine, so none of those anchor.
    """
    for i in range(pos, max(pos - _SCAN_BACK, 0), -1):
        char, before = text[i], text[i - 1]
        if before in _WHITESPACE:
            continue
        if char.isascii() and before.isascii():
            return i
        category, before_category = unicodedata.category(char), unicodedata.category(before)
        code = ord(char)
        if (
            category[0] in "LNPSZ"
            and category != "Sk"
            and not _REGIONAL_INDICATORS[0] <= code <= _REGIONAL_INDICATORS[1]
            and not any(low <= code <= high for low, high in _HANGUL)
            and before_category[0] != "M"
            and before_category not in _MAY_EXTEND
        ):
            return i
    return 0


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
