"""Bot commands: `!daarion <command>` in a room with the bot. Pure: parsing, who may do
what, and the text of the answers; no I/O, no clock, no logging.

The bridge runs them (commands/run.py) after the transaction that indexed the message
committed. Who may use them is `bridge.permissions`: a Matrix id, a domain or `*` ->
`admin` | `user`; an exact Matrix id wins over its domain, a domain over `*`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..config import ADMIN_LEVEL, USER_LEVEL
from ..config.roster import AgentSpec
from ..ids import MICRODAO_ID
from ..translate.commands import PREFIX

ADMIN, USER = ADMIN_LEVEL, USER_LEVEL
LEVELS = (ADMIN, USER)
EVERYONE = "*"
_RANK = {USER: 1, ADMIN: 2}
# A command sent longer ago than this (queued while the bridge could not take it) is
# answered but not run: `link` ten minutes late would surprise whoever sent it.
STALE_AFTER = timedelta(minutes=5)
_WORD_SHOWN = 32  # characters of an unknown command word repeated in the answer


@dataclass(frozen=True, slots=True)
class Spec:
    name: str
    level: str
    usage: str  # after the prefix, e.g. "invite <agent>"
    summary: str
    args: str  # "none" | "one" | "rest" (one or more words, joined)


SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec("help", USER, "help", "the commands you may use", "none"),
        Spec("status", USER, "status", "homeserver, database, NATS and outbox backlog", "none"),
        Spec("agents", USER, "agents", "the agents, whether each is here, its session", "none"),
        Spec("invite", USER, "invite <agent>", "bring an agent into this room", "rest"),
        Spec("link", ADMIN, "link <microdao>", "make this room a channel of a microDAO", "one"),
        Spec("unlink", ADMIN, "unlink", "move this room back to the default microDAO", "none"),
    )
}


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # lower case; "help" for a bare prefix
    args: tuple[str, ...] = ()

    @property
    def arg(self) -> str:
        return " ".join(self.args)


@dataclass(frozen=True, slots=True)
class Run:
    """Allowed: run it."""

    spec: Spec
    command: Command


@dataclass(frozen=True, slots=True)
class Refuse:
    """Not run: answer this one line."""

    text: str


# -- recognising and parsing --------------------------------------------------------------


def parse(text: str) -> Command:
    words = text.split()
    if not words:
        return Command("help")
    return Command(words[0].lower(), tuple(words[1:]))


# -- who may do what ----------------------------------------------------------------------


def server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1].lower() if ":" in user_id else ""


def level_of(user_id: str, permissions: Mapping[str, str]) -> str | None:
    """The user's level: by their Matrix id, else their server's domain, else `*`."""
    if user_id in permissions:
        return permissions[user_id]
    domains = {k.lower(): v for k, v in permissions.items() if not k.startswith("@")}
    return domains.get(server_of(user_id)) or domains.get(EVERYONE)


def allows(level: str | None, needed: str) -> bool:
    return level is not None and _RANK.get(level, 0) >= _RANK[needed]


def shown(word: str) -> str:
    """A word the user typed, safe to repeat in one line: printable, short."""
    clean = "".join(c if unicodedata.category(c)[0] not in "CZ" else "?" for c in word)
    return clean if len(clean) <= _WORD_SHOWN else clean[: _WORD_SHOWN - 1] + "\u2026"


def decide(command: Command, level: str | None) -> Run | Refuse:
    if level is None:
        return Refuse(
            "You may not use the bridge's commands here (bridge.permissions does not list you)."
        )
    spec = SPECS.get(command.name)
    if spec is None:
        return Refuse(f"Unknown command '{shown(command.name)}'. Say {PREFIX} help for the list.")
    if not allows(level, spec.level):
        return Refuse(f"{PREFIX} {spec.name} needs the {spec.level} level; you have {level}.")
    n = len(command.args)
    if (
        (spec.args == "none" and n)
        or (spec.args == "one" and n != 1)
        or (spec.args == "rest" and not n)
    ):
        return Refuse(f"Usage: {PREFIX} {spec.usage}")
    return Run(spec, command)


def is_stale(sent: datetime, now: datetime) -> bool:
    return now - sent > STALE_AFTER


def stale_text(sent: datetime, now: datetime) -> str:
    minutes = int((now - sent).total_seconds() // 60)
    return (
        f"Not run: this command was sent {minutes} min ago, while the bridge could not take "
        "it. Send it again if it is still wanted."
    )


def microdao_ref(arg: str) -> str | None:
    """`microdao:core` or just `core` -> `microdao:core`; None when it cannot be one."""
    ref = arg if arg.startswith("microdao:") else f"microdao:{arg}"
    return ref if MICRODAO_ID.fullmatch(ref) else None


def find_agent(ref: str, agents: Iterable[AgentSpec]) -> AgentSpec | None:
    """An agent by platform id (`agent:sofia` or `sofia`), Matrix id or display name
    (case-insensitive)."""
    agents = list(agents)
    folded = ref.casefold()
    for agent in agents:
        if ref in (agent.external_id, agent.matrix_id) or f"agent:{ref}" == agent.external_id:
            return agent
    named = [a for a in agents if a.name.casefold() == folded]
    return named[0] if len(named) == 1 else None


# -- answers ------------------------------------------------------------------------------


def help_text(level: str) -> str:
    lines = [f"{PREFIX} commands you may use ({level}):"]
    lines += [
        f"  {PREFIX} {s.usage}: {s.summary}" for s in SPECS.values() if allows(level, s.level)
    ]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Status:
    homeserver: str | None  # None: reachable; else why not
    homeserver_ms: float | None
    database: str | None  # None: reachable; else why not
    nats: str  # "off" | "connected" | "not connected"
    backlog: int | None  # None: unknown (database down)
    encryption: str = "off"  # the crypto service's own line


def status_text(s: Status) -> str:
    hs = (
        f"reachable ({s.homeserver_ms:.0f} ms)"
        if s.homeserver is None
        else f"NOT reachable ({s.homeserver})"
    )
    db = "reachable" if s.database is None else f"NOT reachable ({s.database})"
    nats = {
        "off": "off (nats.url is empty; no events are published)",
        "connected": "connected",
    }.get(s.nats, "NOT connected (events wait in the outbox)")
    backlog = "unknown" if s.backlog is None else f"{s.backlog} event(s) not yet published"
    return "\n".join(
        [
            "Bridge status:",
            f"  Homeserver: {hs}",
            f"  Database: {db}",
            f"  NATS: {nats}",
            f"  Outbox backlog: {backlog}",
            f"  Encryption: {s.encryption}",
        ]
    )


@dataclass(frozen=True, slots=True)
class AgentHere:
    agent: AgentSpec
    present: bool
    session: str | None  # status of its session here that is not closed, or None


def agents_text(rows: Sequence[AgentHere]) -> str:
    if not rows:
        return "No agents are configured (agents in the bridge's config)."
    lines = ["Agents:"]
    for row in rows:
        where = "in this room" if row.present else "not in this room"
        session = f"session {row.session}" if row.session else "no open session here"
        lines.append(f"  {row.agent.name} ({row.agent.external_id}): {where}, {session}")
    return "\n".join(lines)
