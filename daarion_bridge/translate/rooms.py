"""Room state becomes channel attributes: name, slug, visibility, member roles. Pure."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from .preview import has_unstorable, storable

# Room versions where the creators hold implicit top power (MSC4289), not listed in
# m.room.power_levels. Synapse creates version 12 rooms by default.
CREATOR_POWER_VERSIONS = frozenset({"12", "org.matrix.hydra.11"})
SLUG_MAX = 64
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


RESTRICTED_RULES = frozenset({"restricted", "knock_restricted"})


def visibility_for(join_rule: Any) -> str:
    """The channel's `visibility` column: how the room is joined, whatever room a
    restricted rule names. Who may bring an agent asks `open_to` instead."""
    if join_rule == "public":
        return "public"
    if join_rule in RESTRICTED_RULES:
        return "microdao"
    return "private"


@dataclass(frozen=True)
class Access:
    """A room's join rule and, for a restricted rule, the rooms whose members may join."""

    rule: str | None
    allow_rooms: tuple[str, ...] = ()


def access_from(content: Any) -> Access:
    """From an m.room.join_rules content, as Synapse sends it (in state or stripped)."""
    if not isinstance(content, Mapping):
        return Access(None)
    rule = content.get("join_rule")
    allow = content.get("allow")
    rooms = [
        entry.get("room_id")
        for entry in (allow if isinstance(allow, list) else [])
        if isinstance(entry, dict) and entry.get("type") == "m.room_membership"
    ]
    return Access(
        rule if isinstance(rule, str) else None,
        tuple(r for r in rooms if isinstance(r, str) and r),
    )


def open_to(access: Access | None, spaces: Collection[str]) -> str | None:
    """How open the room is to the members of a microDAO whose space is among `spaces`:
    `public`; `microdao` only when its rule is restricted to one of those spaces (a room
    restricted to someone's private room is not open to the microDAO); else `private`.
    None when the join rule is unknown."""
    if access is None or access.rule is None:
        return None
    if access.rule == "public":
        return "public"
    if access.rule in RESTRICTED_RULES and any(r in spaces for r in access.allow_rooms):
        return "microdao"
    return "private"


def role_for_level(level: int) -> str:
    if level >= 100:
        return "owner"
    if level >= 50:
        return "admin"
    return "member"


def int_or(value: Any, default: int) -> int:
    """A power level as the homeserver reads it: an int, or a string of one; else the default."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return default
    return default


def has_via(content: Any) -> bool:
    """A parent or child link is live only with a non-empty `via` (an empty one removes it)."""
    via = content.get("via") if isinstance(content, dict) else None
    return isinstance(via, list) and bool(via)


def user_level(user_id: str, power_levels: Mapping[str, Any] | None) -> int:
    if not power_levels:
        return 0
    users = power_levels.get("users")
    default = int_or(power_levels.get("users_default"), 0)
    return int_or(users.get(user_id), default) if isinstance(users, dict) else default


def role_for(user_id: str, power_levels: Mapping[str, Any] | None, creators: Iterable[str]) -> str:
    if user_id in creators:
        return "owner"
    return role_for_level(user_level(user_id, power_levels))


def may_redact_others(
    user_id: str, power_levels: Mapping[str, Any] | None, creators: Iterable[str]
) -> bool:
    """Whether the user's redactions remove other people's messages: power at least the
    room's `redact` level (50 by default). Redactions of one's own messages always do."""
    if user_id in creators:
        return True
    redact = int_or(power_levels.get("redact"), 50) if power_levels else 50
    return user_level(user_id, power_levels) >= redact


def invite_level(power_levels: Mapping[str, Any] | None) -> int:
    """The power the room asks of whoever invites (0 when it does not say)."""
    return int_or(power_levels.get("invite"), 0) if power_levels else 0


def may_invite(
    user_id: str, power_levels: Mapping[str, Any] | None, creators: Iterable[str]
) -> bool:
    """Whether the homeserver would let the user invite into the room."""
    if user_id in creators:
        return True
    return user_level(user_id, power_levels) >= invite_level(power_levels)


def creators_of(create_event: Mapping[str, Any] | None, has_power_levels: bool) -> tuple[str, ...]:
    """Users who hold top power without appearing in m.room.power_levels."""
    if not create_event:
        return ()
    content = create_event.get("content") or {}
    version = str(content.get("room_version", "1"))
    sender = create_event.get("sender")
    if version in CREATOR_POWER_VERSIONS:
        extra = content.get("additional_creators")
        extra = extra if isinstance(extra, list) else []
        found = [sender, *(u for u in extra if isinstance(u, str))]
        return tuple(dict.fromkeys(u for u in found if isinstance(u, str)))
    # Before any power levels exist, the spec gives the creator 100.
    return (sender,) if isinstance(sender, str) and not has_power_levels else ()


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = _NOT_SLUG.sub("-", ascii_text.lower()).strip("-")
    return slug[:SLUG_MAX].rstrip("-") or "room"


def alias_localpart(alias: str) -> str:
    return alias[1:].split(":", 1)[0] if alias.startswith("#") else alias


def name_from_members(members: Iterable[tuple[str, str | None]]) -> str | None:
    """A room without a name, named as Element names it (matrix-js-sdk's
    calculateRoomName) from its members, each (Matrix id, display name or None): by
    display name, else localpart; "Alice", "Alice and Bob", "Alice and 2 others".
    Element leaves out the viewer; an index has none, so the caller leaves out only the
    bot. Ordered by those names (then Matrix id), so the same members give the same name
    whatever order they come in. None when nobody is left."""
    labelled = [
        (storable(display.strip()) if display and display.strip() else user_localpart(mxid), mxid)
        for mxid, display in dict(members).items()
    ]
    labels = [label for label, _ in sorted(labelled, key=lambda lm: (lm[0].casefold(), lm))]
    if not labels:
        return None
    if len(labels) <= 2:
        return " and ".join(labels)
    return f"{labels[0]} and {len(labels) - 1} others"


def user_localpart(mxid: str) -> str:
    return mxid[1:].split(":", 1)[0] if mxid.startswith("@") else mxid


def display_name_of(content: Any) -> str | None:
    """The display name an m.room.member content sets, if any."""
    name = content.get("displayname") if isinstance(content, Mapping) else None
    return name if isinstance(name, str) and name.strip() else None


@dataclass(frozen=True)
class RoomSnapshot:
    """What the index needs from a room's full state at the moment the bot joined."""

    room_id: str
    name: str
    slug: str
    visibility: str
    room_version: str
    creators: tuple[str, ...]
    power_levels: dict[str, Any] | None
    joined: tuple[str, ...] = field(default=())
    # Spaces the room names as parents (with a live `via`), in state order, and who named
    # each: a claim to check against the space (translate/spaces.py), not yet a fact.
    space_parents: tuple[str, ...] = field(default=())
    parent_senders: Mapping[str, str] = field(default_factory=dict)
    # A space (room type m.space) organises rooms; people do not chat in it.
    is_space: bool = False
    access: Access = field(default=Access(None))
    # The room this one replaces (m.room.create's predecessor): a claim, true only when
    # that room's tombstone names this one back.
    predecessor: str | None = None
    # The room that replaces this one (m.room.tombstone's replacement_room).
    replacement: str | None = None
    # No m.room.name nor canonical alias: the name is made from the joined members but
    # the bot (`bot_mxid`), and follows them until the room is given one.
    from_members: bool = False
    bot_mxid: str = ""
    # Display names the joined members' events set, the bot's included.
    display_names: Mapping[str, str] = field(default_factory=dict)


def snapshot_from_state(
    room_id: str, state: Iterable[Mapping[str, Any]], bot_mxid: str = ""
) -> RoomSnapshot:
    by_key: dict[tuple[str, str], Mapping[str, Any]] = {}
    joined: list[str] = []
    display_names: dict[str, str] = {}
    parents: dict[str, str] = {}
    for event in state:
        etype, key = event.get("type"), event.get("state_key")
        if not isinstance(etype, str) or not isinstance(key, str):
            continue
        by_key[(etype, key)] = event
        event_content = event.get("content") or {}
        if etype == "m.room.member" and event_content.get("membership") == "join":
            joined.append(key)
            if (display := display_name_of(event_content)) is not None:
                display_names[key] = display
        if etype == "m.space.parent" and key and has_via(event_content):
            sender = event.get("sender")
            parents[key] = sender if isinstance(sender, str) else ""

    def content(etype: str) -> Mapping[str, Any]:
        return (by_key.get((etype, "")) or {}).get("content") or {}

    name = content("m.room.name").get("name")
    alias = content("m.room.canonical_alias").get("alias")
    alias = storable(alias) if isinstance(alias, str) and alias else None
    name = storable(name.strip()) if isinstance(name, str) and name.strip() else None
    power_levels = dict(content("m.room.power_levels")) or None
    members_name = None
    if not name and not alias:
        members_name = name_from_members((m, display_names.get(m)) for m in joined if m != bot_mxid)
    fallback = name or members_name or room_id.lstrip("!").split(":")[0]
    create = by_key.get(("m.room.create", ""))
    return RoomSnapshot(
        room_id=room_id,
        name=name or alias or members_name or room_id,
        slug=slugify(alias_localpart(alias) if alias else fallback),
        visibility=visibility_for(content("m.room.join_rules").get("join_rule")),
        access=access_from(content("m.room.join_rules")),
        room_version=str(content("m.room.create").get("room_version", "1")),
        creators=creators_of(create, power_levels is not None),
        power_levels=power_levels,
        joined=tuple(joined),
        space_parents=tuple(parents),
        parent_senders=parents,
        is_space=content("m.room.create").get("type") == "m.space",
        predecessor=predecessor_of(content("m.room.create")),
        replacement=replacement_of(content("m.room.tombstone")),
        from_members=not name and not alias,
        bot_mxid=bot_mxid,
        display_names=display_names,
    )


def predecessor_of(create: Mapping[str, Any]) -> str | None:
    """The room an upgrade replaced, from the new room's m.room.create."""
    predecessor = create.get("predecessor")
    room_id = predecessor.get("room_id") if isinstance(predecessor, Mapping) else None
    return room_id if is_room_id(room_id) else None


def replacement_of(tombstone: Mapping[str, Any]) -> str | None:
    """The room an upgrade made, from the old room's m.room.tombstone."""
    room_id = tombstone.get("replacement_room")
    return room_id if is_room_id(room_id) else None


def is_room_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and value.startswith("!") and not has_unstorable(value)
