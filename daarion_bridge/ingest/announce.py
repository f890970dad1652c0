"""What a transaction tells the platform: its changes as outbox events, and which agents
a person's message calls on. Runs inside the writer's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from asyncpg import Connection

from ..db import members
from ..db.channels import Channel
from ..db.messages import Changed, NewRow
from ..db.outbox import AGENT, HUMAN, Emitter, NoEmitter, Resolve
from ..translate import bus
from ..translate import events as ev

DIRECT, CHANNEL_MESSAGE = "direct", "channel_message"


@dataclass(frozen=True, slots=True)
class HumanMessage:
    channel: Channel
    message_id: UUID
    event_id: str
    sender: str  # Matrix id
    mentioned_agents: tuple[UUID, ...]
    thread_root: str | None = None
    reply_to: str | None = None


def _who(user_id: UUID | None, agent_id: UUID | None) -> tuple[str, UUID]:
    return (AGENT, agent_id) if agent_id is not None else (HUMAN, user_id)  # type: ignore[return-value]


class Announcer:
    def __init__(
        self, enabled: bool, bot_mxid: str, *, invoke_agents: bool = True, backfilled: bool = False
    ) -> None:
        self.enabled = enabled
        self.bot_mxid = bot_mxid
        # The messages are history from before the room was a channel (ingest/backfill.py).
        self.backfilled = backfilled
        # nats.invoke_agents: false leaves invoking agents to the platform's own router.
        self.invoke_agents = enabled and invoke_agents
        self.emitter = Emitter() if enabled else NoEmitter()
        self.human_messages: list[HumanMessage] = []

    def know(self, platform_ids: dict[tuple[str, UUID], str]) -> None:
        """Platform ids the writer read anyway: the outbox need not read them again."""
        self.emitter.know(platform_ids)

    def message_created(self, channel: Channel, row: NewRow, message_id: UUID) -> None:
        if not self.enabled:  # NATS off: not even the closure, for every message
            return
        who = _who(row.sender_user_id, row.sender_agent_id)
        ref = channel.ref
        backfilled = self.backfilled

        def build(resolve: Resolve) -> bus.BusEvent:
            return bus.message_created(
                ref,
                message_id,
                row.event_id,
                resolve(*who),
                row.created_at,
                row.preview,
                row.thread_root,
                backfilled,
            )

        self.emitter.add(build, who)

    def message_changed(
        self,
        channel: Channel,
        changed: Changed,
        at: datetime | None,
        preview: str | None,
        *,
        decrypted: bool = False,
    ) -> None:
        """An edit (with its preview) or, with preview None, a redaction; `decrypted`:
        the text of a message or edit whose key came late (bus.message_updated)."""
        who = _who(changed.sender_user_id, changed.sender_agent_id)
        ref = channel.ref

        def build(resolve: Resolve) -> bus.BusEvent:
            sender = resolve(*who)
            if preview is None:
                return bus.message_deleted(
                    ref, changed.id, changed.event_id, sender, changed.cause, at
                )
            assert at is not None
            return bus.message_updated(
                ref, changed.id, changed.event_id, sender, changed.cause, at, preview, decrypted
            )

        self.emitter.add(build, who)

    def member(
        self,
        subject: str,
        channel: Channel,
        member: tuple[str, UUID],
        role: str | None,
        at: datetime,
        event_id: str,
    ) -> None:
        ref = channel.ref
        self.emitter.add(
            lambda resolve: bus.member_changed(subject, ref, resolve(*member), role, at, event_id),
            member,
        )

    def channel(
        self, subject: str, channel: Channel, fields: dict[str, Any], at: datetime, cause: str
    ) -> None:
        ref = channel.ref
        self.emitter.add(lambda _: bus.channel_changed(subject, ref, fields, at, cause))

    def human_message(
        self,
        channel: Channel,
        message_id: UUID,
        op: ev.NewMessage,
        mentioned_agents: tuple[UUID, ...],
    ) -> None:
        """A person's message, which may call agents. The bot's answers never do, and
        neither does a notice (m.notice): the spec reserves it for automated senders and
        says it must not be answered automatically, or two bots may answer each other
        forever."""
        if self.invoke_agents and op.sender != self.bot_mxid and not op.notice:
            message = HumanMessage(
                channel,
                message_id,
                op.event_id,
                op.sender,
                mentioned_agents,
                op.thread_root,
                op.reply_to,
            )
            self.human_messages.append(message)

    async def flush(self, conn: Connection) -> int:
        await self._invoke_agents(conn, self.human_messages)
        self.human_messages = []
        return await self.emitter.flush(conn)

    async def _invoke_agents(self, conn: Connection, messages: Sequence[HumanMessage]) -> None:
        """A mention of an agent in the channel calls it (`channel_message`); any message
        in a room where the sender is alone with one agent calls that agent (`direct`)."""
        if not messages:
            return
        company = await members.company_of(conn, {m.channel.id for m in messages})
        for m in messages:
            here = company[m.channel.id]
            calls = {a: CHANNEL_MESSAGE for a in m.mentioned_agents if a in here.agents}
            direct = here.direct_agent([m.sender, self.bot_mxid])
            if direct is not None:
                calls[direct] = DIRECT
            for agent_id, entrypoint in calls.items():
                self._invoke(agent_id, entrypoint, m)

    def _invoke(self, agent_id: UUID, entrypoint: str, m: HumanMessage) -> None:
        ref = m.channel.ref

        def build(resolve: Resolve) -> bus.BusEvent:
            agent = resolve(AGENT, agent_id).platform_id
            return bus.invoke_agent(
                agent, entrypoint, ref, m.message_id, m.event_id, m.thread_root, m.reply_to
            )

        self.emitter.add(build, (AGENT, agent_id))
