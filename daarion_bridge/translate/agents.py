"""What the index needs to know about agents from events: mentions and who may invite.

Pure: no I/O. Built once per roster (at start and on each config reload).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..roster import AgentSpec, Roster

# Roles in an agent's microDAO that may bring it into any room, and into open rooms.
ANY_ROOM_ROLES = frozenset({"owner", "admin"})
OPEN_ROOM_ROLES = frozenset({"member"})
OPEN_VISIBILITIES = frozenset({"public", "microdao"})


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
    """The configured agents by Matrix id, and one pattern that finds any of them in text."""

    def __init__(self, roster: Roster) -> None:
        self.roster = roster
        self.agents: Mapping[str, AgentSpec] = dict(roster.by_mxid)
        by_text: dict[str, str] = {}
        for mxid, agent in self.agents.items():
            by_text[mxid.lower()] = mxid
            by_text.setdefault(agent.name.lower(), mxid)
        self._by_text = by_text
        # The longest match wins, so `Sofia Prime` over `Sofia`; word edges so `Sofiana` is
        # not her.
        self._pattern = (
            re.compile(r"(?<!\w)(" + trie_pattern(by_text) + r")(?!\w|[.:-]\w)", re.IGNORECASE)
            if by_text
            else None
        )

    @classmethod
    def empty(cls) -> AgentDirectory:
        return cls(Roster())

    def __contains__(self, matrix_id: object) -> bool:
        return matrix_id in self.agents

    def mentioned(self, content: Mapping[str, Any]) -> tuple[str, ...]:
        """Agents a message mentions: in m.mentions, or by Matrix id or name in its text."""
        if not self.agents:
            return ()
        found: dict[str, None] = {}
        mentions = content.get("m.mentions")
        user_ids = mentions.get("user_ids") if isinstance(mentions, dict) else None
        if isinstance(user_ids, list):
            found.update((u, None) for u in user_ids if isinstance(u, str) and u in self.agents)
        for key in ("body", "formatted_body"):
            text = content.get(key)
            if isinstance(text, str) and self._pattern is not None:
                for match in self._pattern.finditer(text):
                    mxid = self._owner_of(match.group(1))
                    if mxid is not None:
                        found[mxid] = None
        return tuple(found)

    def _owner_of(self, matched: str) -> str | None:
        mxid = self._by_text.get(matched.lower())
        if mxid is None:  # case-insensitive matching and lower() disagree (rare scripts)
            for text, candidate in self._by_text.items():
                if re.fullmatch(re.escape(text), matched, re.IGNORECASE):
                    return candidate
        return mxid


def agent_invite_allowed(
    inviter: str, agent: AgentSpec, inviter_role: str | None, visibility: str | None
) -> bool:
    """Whether the puppet accepts an invite: its owner, its microDAO's owners and admins,
    and its microDAO's members for rooms open to the microDAO or the city. An agent with
    neither owner nor microDAO serves the whole city: anyone may bring it into open rooms.
    Private rooms (or rooms whose join rule is unknown) need an owner or admin."""
    if agent.owner is not None and inviter == agent.owner:
        return True
    if agent.microdao is not None:
        if inviter_role in ANY_ROOM_ROLES:
            return True
        return inviter_role in OPEN_ROOM_ROLES and visibility in OPEN_VISIBILITIES
    return agent.owner is None and visibility in OPEN_VISIBILITIES


class LiveDirectory:
    """The directory in force; a config reload swaps it whole, never edits it."""

    def __init__(self, roster: Roster) -> None:
        self.current = AgentDirectory(roster)

    def replace(self, roster: Roster) -> None:
        self.current = AgentDirectory(roster)
