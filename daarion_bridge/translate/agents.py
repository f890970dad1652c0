"""What the index needs to know about agents from events: who a message mentions.

Pure: no I/O. Built once per roster (at start and on each config reload).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..config.roster import AgentSpec, Roster
from .preview import (
    is_reply,
    reply_fallback_sender,
    strip_html_reply_fallback,
    strip_reply_fallback,
)

_WORD = re.compile(r"\w")
# Searches for the sets of agents found together in rooms: a city has far fewer such sets
# than this, and a directory lives only until the next config reload.
_MAX_ROOM_PATTERNS = 4096


def trie_pattern(words: Iterable[str]) -> str:
    """A regex matching any of the words, shaped as a trie: at each character only the
    words that go on with it are tried. A flat `a|b|c` alternation makes Python's `re`
    try every word at every position of the text: with a thousand agents, half a
    millisecond per message. Where one word extends another, the longer is tried first
    and the shorter is what backtracking falls back to, as in a longest-first alternation."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # a word ends here

    def build(node: dict[str, Any]) -> str:
        branches = [re.escape(char) + build(child) for char, child in node.items() if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return build(trie)


class AgentDirectory:
    """The configured agents by Matrix id, and the searches that find them in text."""

    def __init__(self, roster: Roster) -> None:
        self.roster = roster
        self.agents: Mapping[str, AgentSpec] = dict(roster.by_mxid)
        self._search = _NameSearch(self.agents)
        # The least recently used set goes first when the cache is full.
        self._room_search = functools.lru_cache(maxsize=_MAX_ROOM_PATTERNS)(self._new_room_search)

    @classmethod
    def empty(cls) -> AgentDirectory:
        return cls(Roster())

    def __contains__(self, matrix_id: object) -> bool:
        return matrix_id in self.agents

    def mentioned(
        self, content: Mapping[str, Any], among: Collection[str] | None = None
    ) -> tuple[str, ...]:
        """Agents a message mentions: in m.mentions, or by Matrix id or name in its text,
        or (from a client without m.mentions) as the sender of the message it replies to.

        With `among` (the agents in the message's room), as if only those agents were
        configured: "Sofia Prime" mentions Sofia when Sofia Prime is not in the room,
        and of two agents with one name, the one in the room. Searching a room's few
        names instead of the whole city's saves most of what finding mentions costs."""
        wanted: Collection[str]
        if among is None:
            search, wanted = self._search, self.agents.keys()
        else:
            wanted = frozenset(a for a in among if a in self.agents)
            if not wanted:
                return ()
            search = self._room_search(wanted)
        if search.pattern is None:
            return ()
        found: dict[str, None] = {}
        mentions = content.get("m.mentions")
        user_ids = mentions.get("user_ids") if isinstance(mentions, dict) else None
        if isinstance(user_ids, list):
            found.update((u, None) for u in user_ids if isinstance(u, str) and u in wanted)
        body, html = content.get("body"), content.get("formatted_body")
        if is_reply(content):
            # Quoting a message that names an agent is not naming it. But a client
            # without intentional mentions addresses the parent's sender through the
            # quote's `> <@sender>`, as it always has (Element lists that sender in
            # m.mentions instead).
            if isinstance(body, str):
                parent = reply_fallback_sender(body) if mentions is None else None
                if parent is not None and parent in wanted:
                    found[parent] = None
                body = strip_reply_fallback(body)
            if isinstance(html, str):
                html = strip_html_reply_fallback(html)
        for text in (body, html):
            if isinstance(text, str):
                found.update((mxid, None) for mxid in search.named_in(text.lower()))
        return tuple(found)

    def _new_room_search(self, agents: frozenset[str]) -> _NameSearch:
        return _NameSearch({mxid: spec for mxid, spec in self.agents.items() if mxid in agents})


class _NameSearch:
    """Finds the Matrix ids and names of some agents as words in lowercased text."""

    def __init__(self, agents: Mapping[str, AgentSpec]) -> None:
        by_text: dict[str, str] = {}
        for mxid, agent in agents.items():
            by_text[mxid.lower()] = mxid
            by_text.setdefault(agent.name.lower(), mxid)
        self.by_text = by_text
        # The longest match wins, so `Sofia Prime` over `Sofia`; word edges so `Sofiana` is
        # not her. The text is lowercased and the left edge checked after a match: with
        # no IGNORECASE and no lookbehind at its start, `re` skips ahead to the characters
        # a name can begin with instead of trying every position (half the time).
        self.pattern = (
            re.compile("(" + trie_pattern(by_text) + r")(?!\w|[.:-]\w)") if by_text else None
        )

    def named_in(self, text: str) -> Iterator[str]:
        pattern = self.pattern
        if pattern is None:
            return
        pos = 0
        while (match := pattern.search(text, pos)) is not None:
            start = match.start()
            if start and _WORD.match(text, start - 1):
                pos = start + 1  # inside a word: a name may still start later in the match
                continue
            yield self.by_text[match.group(1)]
            pos = match.end()


@dataclass(frozen=True, slots=True)
class PendingMentions:
    """A person's message whose mentions are looked for once its room's agents are
    known (the writer reads them), not among every agent of the city."""

    directory: AgentDirectory
    content: Mapping[str, Any]

    def among(self, agents: Collection[str] | None) -> tuple[str, ...]:
        return self.directory.mentioned(self.content, among=agents)


class LiveDirectory:
    """The directory in force; a config reload swaps it whole, never edits it."""

    def __init__(self, roster: Roster) -> None:
        self.current = AgentDirectory(roster)

    def replace(self, roster: Roster) -> None:
        self.current = AgentDirectory(roster)
