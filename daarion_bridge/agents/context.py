"""What an agent needs to answer: the message it was asked and the conversation before
it, read from the homeserver as the agent's puppet (never from the index's previews).

Bounded work per call: one read of the index for the ids, at most `MAX_PAGES` reads
from the homeserver, each of at most a few hundred events. No message text is logged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from asyncpg import Pool
from mautrix.api import Method, Path
from mautrix.errors import MatrixRequestError

from ..crypto import Crypto
from ..db import agents, channels, members, messages
from ..matrix.bot import UNREACHABLE, HomeserverUnavailable
from ..matrix.puppets import Puppets
from ..translate import context as ctx
from ..translate.agents import LiveDirectory
from ..translate.bus import iso
from ..translate.events import EPOCH, MESSAGE_TYPES
from .speak import PostError

DEFAULT_LIMIT, MAX_LIMIT = 20, 100
MAX_PAGES = 3  # reads of the homeserver for the history, the first included
# The events the homeserver gives: messages only, with the members who sent them.
_FILTER = json.dumps({"types": sorted(MESSAGE_TYPES), "lazy_load_members": True})


@dataclass(frozen=True, slots=True)
class _Page:
    events: list[dict[str, Any]]  # newest first
    names: dict[str, str]  # Matrix id -> display name
    token: str | None  # to read further back


class ContextReader:
    def __init__(
        self,
        pool: Pool,
        puppets: Puppets,
        directory: LiveDirectory,
        crypto: Crypto | None = None,
    ) -> None:
        # On: messages of encrypted rooms are given decrypted, where the bridge holds
        # their key; the others stay `[encrypted]`.
        self.crypto = crypto
        self.pool = pool
        self.puppets = puppets
        self.directory = directory

    async def read(
        self, agent_ref: str, channel_ref: str, message_ref: str, limit: int
    ) -> dict[str, Any]:
        """The message and up to `limit` messages before it, oldest first."""
        async with self.pool.acquire() as conn:
            agent = await agents.by_ref(conn, agent_ref)
            if agent is None or self.directory.current.agents.get(agent.matrix_id) is None:
                raise PostError(404, f"unknown agent {agent_ref}")
            channel = await channels.by_ref(conn, channel_ref)
            if channel is None:
                raise PostError(404, f"unknown channel {channel_ref}")
            if not await members.agent_present(conn, channel.id, agent.id):
                # The index is no way around Matrix's own visibility.
                raise PostError(403, "agent is not a member of this channel")
            target = await messages.find(conn, channel.id, message_ref)
            if target is None:
                raise PostError(404, f"unknown message {message_ref}")
        intent = self.puppets.intent(agent.matrix_id)
        event, history, names = await self._read_homeserver(
            intent, channel.room_id, target.matrix_event_id, limit
        )
        views = [ctx.view(await self._opened(e)) for e in [*history, event]]
        async with self.pool.acquire() as conn:
            rows = await messages.indexed(conn, channel.id, [v.event_id for v in views])
        shown = [self._message(v, rows.get(v.event_id), names) for v in views]
        return {
            "agent_id": agent.external_id,
            "channel_id": str(channel.id),
            "matrix_room_id": channel.room_id,
            "microdao_id": channel.microdao,
            "message": shown[-1],
            "history": shown[:-1],
        }

    async def _read_homeserver(
        self, intent: Any, room_id: str, event_id: str, limit: int
    ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, str]]:
        """The event, the `limit` messages before it (oldest first; edits are folded
        into their originals by the homeserver and skipped here), and senders' names."""
        room = Path.v3.rooms[room_id]
        # Half of the context's limit is before the event; some slack for edits.
        want = limit + limit // 2 + 5
        answer = await _get(intent, room.context[event_id], {"limit": str(2 * want)})
        event = answer.get("event")
        if not isinstance(event, dict) or not _shaped(event):
            raise HomeserverUnavailable("context without the event")
        page = _page(answer.get("events_before"), answer.get("state"), answer.get("start"))
        found, names = _messages(page.events, limit), dict(page.names)
        for _ in range(MAX_PAGES - 1):
            if len(found) >= limit or page.token is None or len(page.events) < want:
                break
            query = {"from": page.token, "dir": "b", "limit": str(want)}
            answer = await _get(intent, room.messages, query)
            page = _page(answer.get("chunk"), answer.get("state"), answer.get("end"))
            names |= page.names
            found += _messages(page.events, limit - len(found))
        return event, found[::-1], names

    async def _opened(self, event: dict[str, Any]) -> dict[str, Any]:
        if self.crypto is None or event.get("type") != "m.room.encrypted":
            return event
        decrypted = await self.crypto.decrypt(event, counted=False)
        # The homeserver's unsigned part (the edit it folded in) stays.
        return event if decrypted is None else {**event, **decrypted}

    def _message(
        self, v: ctx.MessageView, row: messages.Indexed | None, names: Mapping[str, str]
    ) -> dict[str, Any]:
        if row is not None and row.sender_id is not None:
            sender_id, sender_type = row.sender_id, row.sender_type
        else:
            agent = self.directory.current.agents.get(v.sender)
            sender_type = "agent" if agent is not None else "human"
            sender_id = agent.external_id if agent is not None else f"matrix:{v.sender}"
        return {
            "message_id": str(row.id) if row is not None else None,
            "matrix_event_id": v.event_id,
            "sender_id": sender_id,
            "sender_matrix_id": v.sender,
            "sender_type": sender_type,
            "sender_name": names.get(v.sender) or v.sender[1:].split(":", 1)[0],
            "created_at": iso(EPOCH + timedelta(milliseconds=v.ts_ms)),
            "text": v.text,
            "html": v.html,
            "truncated": v.truncated,
            "reply_to": v.reply_to,
            "thread_root": v.thread_root,
            "edited": v.edited,
            "deleted": v.deleted,
        }


async def _get(intent: Any, path: Any, query: dict[str, str]) -> dict[str, Any]:
    """A read as the puppet. The homeserver's refusals carry their own status; its
    absence (or a 5xx) is a 503."""
    try:
        answer = await intent.api.request(
            Method.GET, path, query_params={**query, "filter": _FILTER}, retry_count=0
        )
    except MatrixRequestError as e:
        if e.http_status == 403:
            raise PostError(
                403, f"the homeserver refuses the agent this room ({e.errcode})"
            ) from None
        if e.http_status == 404:
            raise PostError(404, "the homeserver does not know this message") from None
        if e.http_status >= 500:
            raise HomeserverUnavailable(f"HTTP {e.http_status}") from e
        raise
    except UNREACHABLE as e:
        raise HomeserverUnavailable(str(e) or type(e).__name__) from e
    if not isinstance(answer, dict):
        raise HomeserverUnavailable("the homeserver's answer is not an object")
    return answer


def _names(state: Any) -> dict[str, str]:
    names: dict[str, str] = {}
    for e in state if isinstance(state, list) else []:
        if isinstance(e, dict) and e.get("type") == "m.room.member":
            name = (e.get("content") or {}).get("displayname")
            if isinstance(e.get("state_key"), str) and isinstance(name, str) and name:
                names[e["state_key"]] = name
    return names


def _page(events: Any, state: Any, token: Any) -> _Page:
    chunk = [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []
    return _Page(chunk, _names(state), token if isinstance(token, str) else None)


def _messages(events: Sequence[dict[str, Any]], at_most: int) -> list[dict[str, Any]]:
    """Up to `at_most` messages of a page (newest first), edits and others left out."""
    return [e for e in events if ctx.is_message(e) and _shaped(e)][: max(at_most, 0)]


def _shaped(event: Mapping[str, Any]) -> bool:
    return (
        isinstance(event.get("event_id"), str)
        and isinstance(event.get("sender"), str)
        and isinstance(event.get("origin_server_ts"), int)
    )
