"""POST /internal/agents/{agent_id}/post-to-channel: the agent runtime speaks.

Authenticated with `X-Internal-Service-Token` (api.service_token). Answers JSON:
200 {"message_id", "matrix_event_id"} once the row is indexed; 400 bad body;
401/403 token; 404 unknown agent or channel; 403 agent not allowed in the channel;
429 {"retry_after_ms"} over the agent's hourly limit; 503 homeserver unavailable.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from aiohttp import web

from ..agents.speak import Post, PostError, Speaker
from ..db.errors import is_transient
from ..matrix.bot import HomeserverUnavailable
from ..translate.preview import has_unstorable

log = logging.getLogger("daarion.web.agents")

MAX_TEXT = 10_000  # the platform's cap on a message
TOKEN_HEADER = "X-Internal-Service-Token"


def problem(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def check_token(request: web.Request, header: str, expected: bytes) -> web.Response | None:
    """401 without a token, 403 with a wrong one; compared in constant time."""
    token = request.headers.get(header)
    if not token:
        return problem(401, f"missing {header}")
    if not hmac.compare_digest(token.encode(), expected):
        return problem(403, f"wrong {header}")
    return None


def parse_post(body: Any) -> Post:
    if not isinstance(body, dict):
        raise PostError(400, "body must be a JSON object")
    unknown = sorted(set(body) - {"channel_id", "text", "html", "reply_to"})
    if unknown:
        raise PostError(400, f"unknown field {unknown[0]}")
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise PostError(400, "text must be a non-empty string")
    if len(text) > MAX_TEXT:
        raise PostError(400, f"text longer than {MAX_TEXT} characters")
    html = body.get("html")
    if html is not None and (not isinstance(html, str) or len(html) > 4 * MAX_TEXT):
        raise PostError(400, "html must be a string of at most 40000 characters")
    reply_to = body.get("reply_to")
    if reply_to is not None and (not isinstance(reply_to, str) or not reply_to.startswith("$")):
        raise PostError(400, "reply_to must be a Matrix event id ($...)")
    for name, value in (("text", text), ("html", html), ("reply_to", reply_to)):
        if isinstance(value, str) and has_unstorable(value):
            raise PostError(400, f"{name} holds NUL or a lone surrogate")
    return Post(text, html, reply_to)


class AgentsApi:
    def __init__(self, service_token: str, speaker: Speaker, body_timeout: float) -> None:
        self._token = service_token.encode()
        self.speaker = speaker
        self.body_timeout = body_timeout

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/internal/agents/{agent_id}/post-to-channel", self.post)

    async def post(self, request: web.Request) -> web.Response:
        if (denied := check_token(request, TOKEN_HEADER, self._token)) is not None:
            return denied
        try:
            try:
                async with asyncio.timeout(self.body_timeout):
                    raw = await request.read()
                body = json.loads(raw)
            except TimeoutError:
                raise PostError(408, "request body not received in time") from None
            except web.HTTPRequestEntityTooLarge:
                raise PostError(413, "request body too large") from None
            except (ValueError, UnicodeDecodeError, RecursionError):
                raise PostError(400, "body is not JSON") from None
            post = parse_post(body)
            channel = body.get("channel_id")
            if not isinstance(channel, str) or not channel:
                raise PostError(400, "channel_id must be a channel uuid or Matrix room id")
            message_id, event_id = await self.speaker.post(
                request.match_info["agent_id"], channel, post
            )
        except PostError as e:
            extra = {} if e.retry_after_ms is None else {"retry_after_ms": e.retry_after_ms}
            return problem(e.status, str(e), **extra)
        except HomeserverUnavailable:
            return problem(503, "homeserver unavailable, retry later")
        except Exception as e:
            if is_transient(e):
                return problem(503, "database unavailable, retry later")
            log.exception("Agent post failed")
            return problem(500, "internal error")
        return web.json_response(
            {"message_id": str(message_id) if message_id else None, "matrix_event_id": event_id}
        )
