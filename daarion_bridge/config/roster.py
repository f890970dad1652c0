"""The microDAOs, agent blueprints and agents an admin declares in the config.

Pure: parsing and validation only. Every mistake is reported as one line naming the
file, the entry (`agents[1] (agent:sofia)`) and the problem, before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from ..errors import ConfigError
from ..ids import AGENT_ID, BLUEPRINT_CODE, LOCALPART, MICRODAO_ID, MXC, ROOM_OR_ALIAS, USER_ID

AGENT_KINDS = ("system", "assistant", "node", "quest")
MEMBER_ROLES = ("owner", "admin", "member", "guest")


@dataclass(frozen=True, slots=True)
class MicrodaoSpec:
    external_id: str
    name: str
    owner: str
    members: Mapping[str, str]
    space: str | None = None


@dataclass(frozen=True, slots=True)
class BlueprintSpec:
    code: str
    model: str
    description: str | None = None
    capabilities: Any = None


@dataclass(frozen=True, slots=True)
class AgentSpec:
    external_id: str
    name: str
    kind: str
    blueprint: str
    matrix_id: str
    microdao: str | None = None
    owner: str | None = None
    avatar: str | None = None

    @property
    def localpart(self) -> str:
        return self.matrix_id[1:].split(":", 1)[0]


@dataclass(frozen=True)
class Roster:
    microdaos: tuple[MicrodaoSpec, ...] = ()
    blueprints: tuple[BlueprintSpec, ...] = ()
    agents: tuple[AgentSpec, ...] = ()
    by_mxid: Mapping[str, AgentSpec] = field(default_factory=dict, compare=False)

    def agent(self, matrix_id: str) -> AgentSpec | None:
        return self.by_mxid.get(matrix_id)

    def microdao(self, external_id: str) -> MicrodaoSpec | None:
        return next((m for m in self.microdaos if m.external_id == external_id), None)


def agent_localpart(template: str, external_id: str) -> str:
    return template.replace("{name}", external_id.split(":", 1)[1])


class _Entry:
    """One list entry, with errors that name the file, the entry and its id."""

    def __init__(self, path: Path, section: str, index: int, raw: Any, id_key: str) -> None:
        self.path = path
        self.where = f"{section}[{index}]"
        if not isinstance(raw, Mapping):
            self.fail("must be a mapping")
        self.raw = raw
        ident = raw.get(id_key)
        if isinstance(ident, str) and ident:
            self.where += f" ({ident})" if ident.isprintable() else f" ({ident!r})"

    def fail(self, problem: str) -> NoReturn:
        raise ConfigError(f"{self.path}: {self.where}: {problem}")

    def text(self, key: str, pattern: re.Pattern[str] | None = None, optional: bool = False) -> Any:
        value = self.raw.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(f"{key} must be a non-empty string")
        if pattern is not None and not pattern.fullmatch(value):
            self.fail(f"{key} {value!r} must match {pattern.pattern}")
        return value

    def one_of(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.raw.get(key)
        if value not in choices:
            self.fail(f"{key} must be one of {' | '.join(choices)}, got {value!r}")
        return value

    def unknown_keys(self, allowed: tuple[str, ...]) -> None:
        extra = sorted(str(k) for k in self.raw if k not in allowed)
        if extra:
            self.fail(f"unknown key {extra[0]!r} (known: {', '.join(allowed)})")


def _list(path: Path, raw: Mapping[str, Any], section: str) -> list[Any]:
    value = raw.get(section)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{path}: {section} must be a list")
    return value


def _unique(entry: _Entry, seen: dict[str, str], value: str, what: str) -> None:
    if value in seen:
        entry.fail(f"duplicate {what} {value!r}, already used by {seen[value]}")
    seen[value] = entry.where


def _plain(value: Any) -> Any:
    """ruamel's commented maps and lists as plain JSON-able values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def parse_roster(
    path: Path, raw: Mapping[str, Any], *, domain: str, template: str, bot_localpart: str
) -> Roster:
    microdaos = _microdaos(path, raw, domain)
    blueprints = _blueprints(path, raw)
    known_microdaos = {m.external_id for m in microdaos}
    known_blueprints = {b.code for b in blueprints}
    agents: list[AgentSpec] = []
    ids: dict[str, str] = {}
    mxids: dict[str, str] = {f"@{bot_localpart}:{domain}": "appservice.bot_username"}
    for i, item in enumerate(_list(path, raw, "agents")):
        e = _Entry(path, "agents", i, item, "external_id")
        e.unknown_keys(
            ("external_id", "name", "kind", "blueprint", "microdao", "owner", "avatar", "localpart")
        )
        external_id = e.text("external_id", AGENT_ID)
        _unique(e, ids, external_id, "external_id")
        blueprint = e.text("blueprint")
        if blueprint not in known_blueprints:
            e.fail(f"blueprint {blueprint!r} is not in blueprints")
        microdao = e.text("microdao", MICRODAO_ID, optional=True)
        if microdao is not None and microdao not in known_microdaos:
            e.fail(f"microdao {microdao!r} is not in microdaos")
        localpart = e.text("localpart", LOCALPART, optional=True)
        localpart = localpart or agent_localpart(template, external_id)
        matrix_id = f"@{localpart}:{domain}"
        _unique(e, mxids, matrix_id, "Matrix id")
        agents.append(
            AgentSpec(
                external_id=external_id,
                name=e.text("name").strip(),
                kind=e.one_of("kind", AGENT_KINDS),
                blueprint=blueprint,
                matrix_id=matrix_id,
                microdao=microdao,
                owner=e.text("owner", USER_ID, optional=True),
                avatar=e.text("avatar", MXC, optional=True),
            )
        )
    return Roster(
        tuple(microdaos), tuple(blueprints), tuple(agents), {a.matrix_id: a for a in agents}
    )


def _microdaos(path: Path, raw: Mapping[str, Any], domain: str) -> list[MicrodaoSpec]:
    found: list[MicrodaoSpec] = []
    ids: dict[str, str] = {}
    for i, item in enumerate(_list(path, raw, "microdaos")):
        e = _Entry(path, "microdaos", i, item, "external_id")
        e.unknown_keys(("external_id", "name", "owner", "members", "space"))
        external_id = e.text("external_id", MICRODAO_ID)
        _unique(e, ids, external_id, "external_id")
        members = item.get("members") or {}
        if not isinstance(members, Mapping):
            e.fail("members must be a mapping of Matrix id to role")
        for mxid, role in members.items():
            if not isinstance(mxid, str) or not USER_ID.fullmatch(mxid):
                e.fail(f"members key {mxid!r} is not a Matrix user id")
            if role not in MEMBER_ROLES:
                e.fail(f"members.{mxid} must be one of {' | '.join(MEMBER_ROLES)}, got {role!r}")
        found.append(
            MicrodaoSpec(
                external_id=external_id,
                name=e.text("name").strip(),
                owner=e.text("owner", USER_ID),
                members={str(k): str(v) for k, v in members.items()},
                space=e.text("space", ROOM_OR_ALIAS, optional=True),
            )
        )
    return found


def _blueprints(path: Path, raw: Mapping[str, Any]) -> list[BlueprintSpec]:
    found: list[BlueprintSpec] = []
    codes: dict[str, str] = {}
    for i, item in enumerate(_list(path, raw, "blueprints")):
        e = _Entry(path, "blueprints", i, item, "code")
        e.unknown_keys(("code", "description", "model", "capabilities"))
        code = e.text("code", BLUEPRINT_CODE)
        _unique(e, codes, code, "code")
        capabilities = item.get("capabilities")
        if capabilities is not None and not isinstance(capabilities, Mapping | list):
            e.fail("capabilities must be a mapping or a list")
        found.append(
            BlueprintSpec(
                code=code,
                model=e.text("model"),
                description=e.text("description", optional=True),
                capabilities=_plain(capabilities),
            )
        )
    return found
