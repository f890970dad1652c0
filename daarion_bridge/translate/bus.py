"""Payloads of the events the platform hears on NATS, from indexed facts. Pure.

Field names follow the platform's contract (daarion-platform.md): platform ids
(`user:93`, `agent:sofia`, `microdao:7`), uuids of our rows, ISO 8601 UTC times.
Each event carries a message id that is the same however often it is built, so
JetStream drops a resend (`Nats-Msg-Id`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

MESSAGE_CREATED = "messaging.message.created"
MESSAGE_UPDATED = "messaging.message.updated"
MESSAGE_DELETED = "messaging.message.deleted"
MEMBER_JOINED = "messaging.member.joined"
MEMBER_LEFT = "messaging.member.left"
MEMBER_INVITED = "messaging.member.invited"
CHANNEL_CREATED = "messaging.channel.created"
CHANNEL_UPDATED = "messaging.channel.updated"
INVOKE_AGENT = "router.invoke.agent"
SUBJECTS = (
    MESSAGE_CREATED,
    MESSAGE_UPDATED,
    MESSAGE_DELETED,
    MEMBER_JOINED,
    MEMBER_LEFT,
    MEMBER_INVITED,
    CHANNEL_CREATED,
    CHANNEL_UPDATED,
    INVOKE_AGENT,
)


@dataclass(frozen=True, slots=True)
class BusEvent:
    subject: str  # without the configured prefix
    msg_id: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ChannelRef:
    id: UUID
    microdao: str  # platform id of its microDAO
    room_id: str


@dataclass(frozen=True, slots=True)
class Sender:
    platform_id: str  # users.external_id or agents.external_id
    type: str  # human | agent


def iso(at: datetime | None) -> str | None:
    if at is None:
        return None
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _message(channel: ChannelRef, message_id: UUID, event_id: str, sender: Sender) -> dict:
    return {
        "channel_id": str(channel.id),
        "message_id": str(message_id),
        "matrix_event_id": event_id,
        "matrix_room_id": channel.room_id,
        "sender_id": sender.platform_id,
        "sender_type": sender.type,
        "microdao_id": channel.microdao,
    }


def message_created(
    channel: ChannelRef,
    message_id: UUID,
    event_id: str,
    sender: Sender,
    created_at: datetime,
    preview: str,
    thread_root: str | None = None,
    backfilled: bool = False,
) -> BusEvent:
    """`thread_root`: the root event of the thread the message is in; null outside.
    `backfilled`: history from before the room was a channel, read back when it became
    one; such a message invokes no agent."""
    payload = _message(channel, message_id, event_id, sender)
    payload |= {
        "created_at": iso(created_at),
        "content_preview": preview,
        "thread_root": thread_root,
        "backfilled": backfilled,
    }
    return BusEvent(MESSAGE_CREATED, f"{MESSAGE_CREATED}:{event_id}", payload)


def message_updated(
    channel: ChannelRef,
    message_id: UUID,
    event_id: str,
    sender: Sender,
    edit_event_id: str,
    updated_at: datetime,
    preview: str,
    decrypted: bool = False,
) -> BusEvent:
    """`decrypted`: the text of a message or edit whose key came after it was indexed
    as `[encrypted]` (`edit_event_id` is then that event's): an id of its own, as the
    edit's `[encrypted]` version may have gone out under the edit's."""
    payload = _message(channel, message_id, event_id, sender)
    payload |= {
        "edit_event_id": edit_event_id,
        "updated_at": iso(updated_at),
        "content_preview": preview,
    }
    msg_id = f"{MESSAGE_UPDATED}:{edit_event_id}" + (":decrypted" if decrypted else "")
    return BusEvent(MESSAGE_UPDATED, msg_id, payload)


def message_deleted(
    channel: ChannelRef,
    message_id: UUID,
    event_id: str,
    sender: Sender,
    redaction_event_id: str,
    deleted_at: datetime | None,
) -> BusEvent:
    payload = _message(channel, message_id, event_id, sender)
    payload |= {"redaction_event_id": redaction_event_id, "deleted_at": iso(deleted_at)}
    return BusEvent(MESSAGE_DELETED, f"{MESSAGE_DELETED}:{redaction_event_id}", payload)


def member_changed(
    subject: str,
    channel: ChannelRef,
    member: Sender,
    role: str | None,
    at: datetime,
    event_id: str,
) -> BusEvent:
    payload = {
        "channel_id": str(channel.id),
        "matrix_room_id": channel.room_id,
        "microdao_id": channel.microdao,
        "member_id": member.platform_id,
        "member_type": member.type,
        "role": role,
        "at": iso(at),
        "matrix_event_id": event_id,
    }
    return BusEvent(subject, f"{subject}:{event_id}:{member.platform_id}", payload)


def channel_changed(
    subject: str, channel: ChannelRef, fields: dict[str, Any], at: datetime, cause: str
) -> BusEvent:
    """`cause`: the Matrix event (or invite) that made or changed the channel."""
    payload = {
        "channel_id": str(channel.id),
        "matrix_room_id": channel.room_id,
        "microdao_id": channel.microdao,
        **fields,
        "at": iso(at),
    }
    return BusEvent(subject, f"{subject}:{cause}", payload)


def invoke_agent(
    agent: str,
    entrypoint: str,
    channel: ChannelRef,
    message_id: UUID,
    event_id: str,
    thread_root: str | None = None,
    reply_to: str | None = None,
) -> BusEvent:
    """Small on purpose: the runtime reads the text through the context endpoint.
    `thread_root` and `reply_to` (null when none) let it answer in place."""
    payload = {
        "agent_id": agent,
        "entrypoint": entrypoint,
        "payload": {
            "channel_id": str(channel.id),
            "message_id": str(message_id),
            "matrix_event_id": event_id,
            "matrix_room_id": channel.room_id,
            "microdao_id": channel.microdao,
            "thread_root": thread_root,
            "reply_to": reply_to,
        },
    }
    return BusEvent(INVOKE_AGENT, f"{INVOKE_AGENT}:{agent}:{event_id}", payload)
