"""The agent runtime's endpoints. POST /internal/agents/{agent_id}/post-to-channel: it
speaks. GET /internal/agents/{agent_id}/context: it reads the message it was asked and the
conversation before it (200 AgentContext; 400 bad query; 403 not a member; 404 unknown
agent, channel or message; 503 homeserver unavailable).

Authenticated with `X-Internal-Service-Token` (api.service_token). Answers JSON:
200 {"message_id", "matrix_event_id"} once the row is indexed; 400 bad body;
401/403 token; 404 unknown agent or channel; 403 agent not allowed in the channel;
429 {"retry_after_ms"} over the agent's hourly limit; 503 homeserver unavailable.
Errors are `{"error"}` (and `retry_after_ms` on a 429).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..agents.context import DEFAULT_LIMIT, MAX_LIMIT, ContextReader
from ..agents.speak import Post, PostError, Speaker
from .http import HttpError, Surface, add_route, query_limit, read_json, token_matches
from .models import AgentPost, parse

TOKEN_HEADER = "X-Internal-Service-Token"


def _shape(error: HttpError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error.message}
    if error.retry_after_ms is not None:
        body["retry_after_ms"] = error.retry_after_ms
    return body


def _known(error: Exception) -> HttpError | None:
    """The speaker's refusals."""
    if isinstance(error, PostError):
        return HttpError(error.status, str(error), retry_after_ms=error.retry_after_ms)
    return None


SURFACE = Surface(_shape, known=_known)


class AgentsApi:
    def __init__(
        self, service_token: str, speaker: Speaker, reader: ContextReader, body_timeout: float
    ) -> None:
        self._token = service_token.encode()
        self.speaker = speaker
        self.reader = reader
        self.body_timeout = body_timeout

    def add_routes(self, app: web.Application) -> None:
        path = "/internal/agents/{agent_id}/post-to-channel"
        add_route(app, SURFACE, "POST", path, self.post, guard=self._auth)
        path = "/internal/agents/{agent_id}/context"
        add_route(app, SURFACE, "GET", path, self.context, guard=self._auth)

    def _auth(self, request: web.Request) -> None:
        """401 without a token, 403 with a wrong one."""
        token = request.headers.get(TOKEN_HEADER)
        if not token:
            raise HttpError(401, f"missing {TOKEN_HEADER}")
        if not token_matches(token, self._token):
            raise HttpError(403, f"wrong {TOKEN_HEADER}")

    async def post(self, request: web.Request) -> web.Response:
        body = parse(AgentPost, await read_json(request, timeout=self.body_timeout))
        message_id, event_id = await self.speaker.post(
            request.match_info["agent_id"],
            body.channel_id,
            Post(
                body.text,
                html=body.html,
                reply_to=body.reply_to,
                thread_root=body.thread_root,
                mentions=tuple(body.mentions or ()),
                txn_id=body.txn_id,
            ),
        )
        return web.json_response(
            {"message_id": str(message_id) if message_id else None, "matrix_event_id": event_id}
        )

    async def context(self, request: web.Request) -> web.Response:
        query = request.query
        for name in ("channel_id", "message_id"):
            if not query.get(name):
                raise HttpError(400, f"{name} is required", field=name)
        limit = query_limit(request, DEFAULT_LIMIT, MAX_LIMIT)
        body = await self.reader.read(
            request.match_info["agent_id"], query["channel_id"], query["message_id"], limit
        )
        return web.json_response(body)
