"""Matrix room events become index operations. Pure: no I/O, no clock, no logging.

Each operation says what a single event means for the index; the database layer
decides how to apply it. An event that can never be applied raises BadEvent and is
dead-lettered by the caller.

Events come from a JSON decoder, so their objects are dicts: the shape checks here and
in preview.py test `dict`, which costs a fraction of the `Mapping` ABC's check on the
hot path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .agents import AgentDirectory, PendingMentions
from .commands import command_text
from .kinds import POLL_START_TYPES, VERIFICATION_REQUEST, poll
from .preview import BadEvent, has_unstorable, render_preview, storable
from .relations import relations_of
from .rooms import (
    Access,
    access_from,
    display_name_of,
    is_room_id,
    replacement_of,
    visibility_for,
)

MESSAGE_TYPES = frozenset({"m.room.message", "m.sticker", "m.room.encrypted", *POLL_START_TYPES})
DELETED = "[deleted]"


@dataclass(frozen=True, slots=True)
class NewMessage:
    room_id: str
    event_id: str
    sender: str
    ts: datetime
    preview: str
    # What follows `!daarion` in a person's text message (a bot command), else None. Kept
    # out of repr: it is message text, logged nowhere.
    command: str | None = field(default=None, repr=False)
    # A person's message that may call agents (not a command): searched once its room's
    # agents are known. Out of repr and comparison: it holds the message's content.
    may_mention: PendingMentions | None = field(default=None, repr=False, compare=False)
    # An m.notice: the spec's automated message, never answered automatically. Its
    # mentions still count as the agents' activity; it calls none of them.
    notice: bool = False
    # The thread it is in (its root event) and the message it really replies to.
    thread_root: str | None = None
    reply_to: str | None = None
    # Decrypted after it was indexed as [encrypted]: its row exists, what depends on its
    # text (mentions, invocations, commands) runs now.
    late: bool = False
    # Still encrypted, its key yet to come: its text is unknown, so it calls no agent
    # (not even in a room alone with one); it may once decrypted (`late`).
    sealed: bool = False

    @property
    def mentions(self) -> tuple[str, ...]:
        """Every configured agent the message mentions, whether in its room or not."""
        return () if self.may_mention is None else self.may_mention.among(None)


@dataclass(frozen=True, slots=True)
class EditMessage:
    room_id: str
    event_id: str
    target_event_id: str
    ts_ms: int
    preview: str
    sender: str = ""  # only the original's sender may edit it
    # Decrypted after it was applied as `[encrypted]`: its text replaces that one.
    late: bool = False


@dataclass(frozen=True, slots=True)
class RedactMessage:
    room_id: str
    event_id: str
    target_event_id: str
    sender: str = ""  # the original's sender, or someone with the power to redact
    ts: datetime | None = None


@dataclass(frozen=True, slots=True)
class Membership:
    room_id: str
    event_id: str
    user_id: str
    membership: str
    ts: datetime
    display_name: str | None = field(default=None, compare=False)  # a join's, if set


@dataclass(frozen=True, slots=True)
class PowerLevels:
    room_id: str
    content: dict[str, Any]
    event_id: str = field(default="", compare=False)
    ts: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class RoomName:
    room_id: str
    name: str | None
    # Where the change came from, for the platform's events; not part of what it means.
    event_id: str = field(default="", compare=False)
    ts: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class JoinRules:
    room_id: str
    visibility: str
    event_id: str = field(default="", compare=False)
    ts: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class SpaceLinkChanged:
    """A room's m.space.parent, or a space's m.space.child, changed: which microDAO the
    room `child` belongs to may have too (checked against the space after the commit)."""

    room_id: str
    event_id: str
    child: str


@dataclass(frozen=True, slots=True)
class RoomTombstoned:
    """The room was upgraded (to `replacement`) or closed for good (no replacement)."""

    room_id: str
    event_id: str
    sender: str
    replacement: str | None
    ts: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class BotInvited:
    room_id: str
    event_id: str
    inviter: str


@dataclass(frozen=True, slots=True)
class AgentInvited:
    room_id: str
    event_id: str
    agent_mxid: str
    inviter: str
    access: Access | None  # from the invite's room state; None when it does not say
    ts: datetime | None = field(default=None, compare=False)


Invited = BotInvited | AgentInvited
Operation = (
    NewMessage
    | EditMessage
    | RedactMessage
    | Membership
    | PowerLevels
    | RoomName
    | JoinRules
    | RoomTombstoned
    | SpaceLinkChanged
    | BotInvited
    | AgentInvited
)
NO_AGENTS = AgentDirectory.empty()


def _str(event: Mapping[str, Any], key: str) -> str:
    value = event.get(key)
    if not isinstance(value, str) or not value:
        raise BadEvent(f"event without a string {key}")
    if has_unstorable(value):
        raise BadEvent(f"event {key} holds NUL or a lone surrogate")
    return value


def _content(event: Mapping[str, Any]) -> Mapping[str, Any]:
    content = event.get("content", {})
    if not isinstance(content, dict):
        raise BadEvent("event content is not an object")
    return content


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant datetime holds


def timestamp(event: Mapping[str, Any]) -> tuple[int, datetime]:
    ts = event.get("origin_server_ts")
    if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= MAX_TS:
        raise BadEvent("event without a valid origin_server_ts")
    # Integer arithmetic: going through a float would be off by a microsecond.
    return ts, EPOCH + timedelta(milliseconds=ts)


def _optional_ts(event: Mapping[str, Any]) -> datetime | None:
    """The event's time where only the platform's events need it: never a reason to reject."""
    try:
        return timestamp(event)[1]
    except BadEvent:
        return None


def _replace_target(content: Mapping[str, Any]) -> str | None:
    relates = content.get("m.relates_to")
    if isinstance(relates, dict) and relates.get("rel_type") == "m.replace":
        target = relates.get("event_id")
        if not isinstance(target, str) or not target:
            raise BadEvent("m.replace relation without an event_id")
        return target
    return None


def _is_redacted(event: Mapping[str, Any]) -> bool:
    unsigned = event.get("unsigned")
    return isinstance(unsigned, dict) and "redacted_because" in unsigned


def _message(
    event: Mapping[str, Any],
    room_id: str,
    event_id: str,
    limit: int,
    agents: AgentDirectory,
    bot_mxid: str,
) -> Operation | None:
    etype = event["type"]
    sender = _str(event, "sender")
    ts_ms, ts = timestamp(event)
    if _is_redacted(event):
        return NewMessage(room_id, event_id, sender, ts, DELETED)
    content = _content(event)
    if content.get("msgtype") == VERIFICATION_REQUEST:
        return None
    target = _replace_target(content)
    if target is None:
        preview = render_preview(etype, content, limit, sender)
        # Neither the bot nor an agent ever gives a command.
        machine = sender in agents or sender == bot_mxid
        command = None if machine or etype != "m.room.message" else command_text(content)
        # Loop rule: what an agent or the bot says never wakes an agent; a command is for
        # the bridge, not for the agents it names.
        calls = not machine and command is None and bool(agents.agents)
        may_mention = PendingMentions(agents, _mention_source(etype, content)) if calls else None
        notice = content.get("msgtype") == "m.notice"
        rel = relations_of(content)
        return NewMessage(
            room_id,
            event_id,
            sender,
            ts,
            preview,
            command,
            may_mention,
            notice,
            rel.thread_root,
            rel.reply_to,
        )
    if etype == "m.room.encrypted":
        new_content: Mapping[str, Any] = content
    else:
        replacement = content.get("m.new_content")
        if not isinstance(replacement, dict):
            raise BadEvent("edit without an m.new_content object")
        new_content = replacement
    preview = render_preview(etype, new_content, limit, sender)
    return EditMessage(room_id, event_id, target, ts_ms, preview, sender)


def _mention_source(etype: str, content: Mapping[str, Any]) -> Mapping[str, Any]:
    """Where a message's mentions are looked for: a poll names agents in its question."""
    if etype not in POLL_START_TYPES:
        return content
    question = poll(content)
    return {"body": question[0] if question else "", "m.mentions": content.get("m.mentions")}


def _invite_access(event: Mapping[str, Any]) -> Access | None:
    """The room's join rule by the stripped state the homeserver sends with an invite."""
    unsigned = event.get("unsigned")
    state = unsigned.get("invite_room_state") if isinstance(unsigned, dict) else None
    for item in state if isinstance(state, list) else []:
        if isinstance(item, dict) and item.get("type") == "m.room.join_rules":
            content = item.get("content")
            if isinstance(content, dict):
                return access_from(content)
    return None


def _state(
    event: Mapping[str, Any], room_id: str, event_id: str, bot_mxid: str, agents: AgentDirectory
) -> Operation | None:
    etype = event["type"]
    state_key = event.get("state_key")
    if not isinstance(state_key, str):
        raise BadEvent(f"{etype} without a string state_key")
    content = _content(event)
    if etype == "m.room.member":
        membership = content.get("membership")
        if not isinstance(membership, str):
            raise BadEvent("m.room.member without a string membership")
        if not state_key.startswith("@") or ":" not in state_key or has_unstorable(state_key):
            raise BadEvent("m.room.member state_key is not a user id")
        if state_key == bot_mxid and membership == "invite":
            return BotInvited(room_id, event_id, _str(event, "sender"))
        if state_key in agents and membership == "invite":
            inviter = _str(event, "sender")
            if inviter == bot_mxid:
                # The bot invites an agent only for an `invite` command whose user's
                # rights the bridge checked; that command joins the puppet itself. Not an
                # invite for the puppet to accept or refuse: membership news only.
                return Membership(room_id, event_id, state_key, membership, timestamp(event)[1])
            return AgentInvited(
                room_id, event_id, state_key, inviter, _invite_access(event), _optional_ts(event)
            )
        display = display_name_of(content) if membership == "join" else None
        return Membership(room_id, event_id, state_key, membership, timestamp(event)[1], display)
    if etype == "m.space.parent":
        return SpaceLinkChanged(room_id, event_id, room_id)
    if etype == "m.space.child" and is_room_id(state_key):
        return SpaceLinkChanged(room_id, event_id, state_key)
    if state_key != "":
        return None
    if etype == "m.room.power_levels":
        return PowerLevels(room_id, dict(content), event_id, _optional_ts(event))
    if etype == "m.room.name":
        name = content.get("name")
        name = storable(name) if isinstance(name, str) and name.strip() else None
        return RoomName(room_id, name, event_id, _optional_ts(event))
    if etype == "m.room.join_rules":
        visibility = visibility_for(content.get("join_rule"))
        return JoinRules(room_id, visibility, event_id, _optional_ts(event))
    if etype == "m.room.tombstone":
        replacement = replacement_of(content)
        sender = _str(event, "sender")
        return RoomTombstoned(room_id, event_id, sender, replacement, _optional_ts(event))
    return None


def translate_event(
    event: Any, *, bot_mxid: str, preview_length: int, agents: AgentDirectory = NO_AGENTS
) -> Operation | None:
    """What one room event means for the index, or None when it means nothing."""
    if not isinstance(event, dict):
        raise BadEvent("event is not an object")
    etype = _str(event, "type")
    room_id = _str(event, "room_id")
    event_id = _str(event, "event_id")
    if etype in MESSAGE_TYPES and "state_key" not in event:
        return _message(event, room_id, event_id, preview_length, agents, bot_mxid)
    if etype == "m.room.redaction":
        target = event.get("redacts") or _content(event).get("redacts")
        if not isinstance(target, str) or not target:
            raise BadEvent("m.room.redaction without redacts")
        return RedactMessage(room_id, event_id, target, _str(event, "sender"), _optional_ts(event))
    if "state_key" in event:
        return _state(event, room_id, event_id, bot_mxid, agents)
    return None
