"""Agents speak: the agent runtime posts a reply, the agent's puppet sends it as
`m.notice`, and the row is indexed before the caller hears back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from asyncpg import Pool
from mautrix.api import Method, Path
from mautrix.errors import MatrixRequestError, MLimitExceeded

from ..crypto import CannotEncrypt, Crypto, seal
from ..db import agents, channels, members, messages
from ..matrix.bot import UNREACHABLE, HomeserverUnavailable
from ..matrix.puppets import Puppets, send_message
from ..translate.agents import LiveDirectory
from ..translate.relations import reply_relation, thread_relation

log = logging.getLogger("daarion.speak")

HOUR = 3600.0
REMEMBERED_TXNS = 10_000  # runtimes' transaction ids kept, newest; the homeserver keeps its own


class PostError(Exception):
    def __init__(self, status: int, message: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_ms = retry_after_ms


@dataclass(frozen=True, slots=True)
class Post:
    text: str
    html: str | None = None
    reply_to: str | None = None
    # The thread to answer in; found from `reply_to` when that names a message in one.
    thread_root: str | None = None
    # The only users the post notifies. Always sent, so that clients do not guess
    # mentions from the text: an agent's output must not ping people by name or @room.
    mentions: tuple[str, ...] = ()
    # The runtime's id for this post: a retry with the same one posts nothing new.
    txn_id: str | None = None

    def content(self) -> dict[str, Any]:
        content: dict[str, Any] = {
            "msgtype": "m.notice",
            "body": self.text,
            "m.mentions": {"user_ids": list(self.mentions)},
        }
        if self.html is not None:
            content |= {"format": "org.matrix.custom.html", "formatted_body": self.html}
        if self.reply_to is not None:
            content["m.relates_to"] = reply_relation(self.reply_to, self.thread_root)
        elif self.thread_root is not None:
            # Nothing in particular answered: the root stands in for the thread's latest.
            content["m.relates_to"] = thread_relation(self.thread_root, self.thread_root)
        return content


class RateLimiter:
    """At most `limit` posts per agent in any hour. In memory: a restart forgets."""

    def __init__(self, limit: int, window: float = HOUR) -> None:
        self.limit = limit
        self.window = window
        self._sent: dict[UUID, deque[float]] = {}

    def retry_after(self, agent_id: UUID, now: float | None = None) -> float:
        """Seconds until the agent may post again; 0 when it may now."""
        now = time.monotonic() if now is None else now
        sent = self._sent.setdefault(agent_id, deque())
        while sent and sent[0] <= now - self.window:
            sent.popleft()
        return 0.0 if len(sent) < self.limit else sent[0] + self.window - now

    def record(self, agent_id: UUID, now: float | None = None) -> None:
        self._sent.setdefault(agent_id, deque()).append(time.monotonic() if now is None else now)


IndexEvent = Callable[[str, dict[str, Any]], Awaitable[None]]


class Speaker:
    def __init__(
        self,
        pool: Pool,
        puppets: Puppets,
        directory: LiveDirectory,
        limiter: RateLimiter,
        index_event: IndexEvent,
        crypto: Crypto | None = None,
    ) -> None:
        self.pool = pool
        # On: a post into an encrypted room goes out encrypted with the agent's device.
        self.crypto = crypto
        self.puppets = puppets
        self.directory = directory
        self.limiter = limiter
        self.index_event = index_event
        self._locks: dict[UUID, asyncio.Lock] = {}
        # (agent, the runtime's txn_id) -> the event sent for it: a retry gets it back,
        # neither sent nor counted again.
        self._sent: OrderedDict[tuple[UUID, str], str] = OrderedDict()

    async def post(self, agent_ref: str, channel_ref: str, post: Post) -> tuple[UUID | None, str]:
        """Send as the agent; returns (message row id, Matrix event id) once indexed, or
        (None, event id) when the message was sent but could not be indexed at once."""
        async with self.pool.acquire() as conn:
            agent = await agents.by_ref(conn, agent_ref)
            channel = await channels.by_ref(conn, channel_ref)
            if agent is None or self.directory.current.agents.get(agent.matrix_id) is None:
                raise PostError(404, f"unknown agent {agent_ref}")
            if channel is None:
                raise PostError(404, f"unknown channel {channel_ref}")
            present = await members.agent_present(conn, channel.id, agent.id)
            visibility = await channels.visibility_of(conn, channel.room_id)
            if post.reply_to is not None and post.thread_root is None:
                # An answer to a message in a thread goes into that thread.
                roots = await messages.thread_roots(conn, [post.reply_to])
                post = replace(post, thread_root=roots.get(post.reply_to))
        lock = self._locks.setdefault(agent.id, asyncio.Lock())
        key = (agent.id, post.txn_id) if post.txn_id is not None else None
        async with lock:  # a burst of posts is counted one by one
            event_id = self._sent.get(key) if key is not None else None
            if event_id is None:
                event_id = await self._send_new(agent, channel, present, visibility, post)
                if key is not None:
                    self._remember(key, event_id)
        message_id = await self._index(agent, channel.room_id, event_id)
        log.info("%s posted %s in %s", agent.external_id, event_id, channel.room_id)
        return message_id, event_id

    async def _send_new(
        self, agent: agents.Agent, channel: Any, present: bool, visibility: Any, post: Post
    ) -> str:
        """Join where needed and send, within the hourly limit, which counts this post."""
        wait = self.limiter.retry_after(agent.id)
        if wait > 0:
            raise PostError(429, "agent rate limit reached", retry_after_ms=int(wait * 1000))
        intent = self.puppets.intent(agent.matrix_id)
        # The homeserver keeps a transaction id per path and appservice, not per user:
        # the agent's id keeps two agents' ids apart.
        txn_id = f"daarion-{agent.id.hex}-{post.txn_id}" if post.txn_id is not None else None
        try:
            if not present:
                await self._join(intent, agent, channel, visibility)
            event_id = await self._send(intent, channel.room_id, post, txn_id)
        except UNREACHABLE as e:
            raise HomeserverUnavailable(str(e) or type(e).__name__) from e
        self.limiter.record(agent.id)
        return event_id

    def _remember(self, key: tuple[UUID, str], event_id: str) -> None:
        self._sent[key] = event_id
        while len(self._sent) > REMEMBERED_TXNS:
            self._sent.popitem(last=False)

    async def _index(self, agent: agents.Agent, room_id: str, event_id: str) -> UUID | None:
        """Index the sent message now, so the caller's next read finds it. The message is
        in the room whatever happens here: a failure answers success all the same (a
        retry would post it twice), and the homeserver's push indexes it later."""
        try:
            intent = self.puppets.intent(agent.matrix_id)
            event = await intent.api.request(Method.GET, Path.v3.rooms[room_id].event[event_id])
            await self.index_event(f"post-{event_id}", event)
            async with self.pool.acquire() as conn:
                return await messages.row_id(conn, event_id)
        except Exception as e:  # noqa: BLE001 (any failure: the post itself succeeded)
            log.warning(
                "%s posted %s in %s; indexing it at once failed (%s), the homeserver's push will",
                agent.external_id,
                event_id,
                room_id,
                type(e).__name__,
            )
            return None

    async def _join(self, intent: Any, agent: agents.Agent, channel: Any, visibility: Any) -> None:
        """An agent not in the channel joins where it may: public rooms, and its own
        microDAO's rooms open to the microDAO. Private rooms need an invite."""
        open_to_it = visibility == "public" or (
            visibility == "microdao" and agent.microdao_id == channel.microdao_id
        )
        if not open_to_it:
            raise PostError(403, "agent is not a member of this channel; invite it first")
        try:
            await intent.join_room(channel.room_id)
        except MatrixRequestError as e:
            raise PostError(403, f"agent may not join this channel ({e.errcode})") from None

    async def _send(self, intent: Any, room_id: str, post: Post, txn_id: str | None) -> str:
        """Send (encrypted by the agent's own device where the room is), waiting out the
        homeserver's own rate limit as it asks."""
        try:
            event_type, content = await seal(self.crypto, intent.mxid, room_id, post.content())
            return await send_message(
                intent, room_id, content, txn_id=txn_id, event_type=event_type
            )
        except CannotEncrypt as e:
            log.warning("%s could not post in %s: %s", intent.mxid, room_id, e)
            raise PostError(503, f"cannot encrypt for this channel: {e}") from None
        except MLimitExceeded:
            raise PostError(429, "homeserver rate limit", retry_after_ms=5000) from None
        except MatrixRequestError as e:
            raise PostError(403, f"homeserver refused the message ({e.errcode})") from None
