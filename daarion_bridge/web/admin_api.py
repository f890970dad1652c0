"""The admin HTTP API under /_daarion/v1: JSON in and out, `Authorization: Bearer
<api.admin_token>` (none 401; a wrong token or another scheme 403). Bad input answers
400 naming the field, unknown ids 404. The routes and their shapes are in
web/openapi.py, served at /_daarion/v1/openapi.json.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from mautrix.errors import MatrixRequestError

from ..admin.service import Admin, AdminError, Invited, NewChannel, NewMicrodao
from ..db.channels import ChannelInfo
from ..db.microdaos import Microdao
from ..db.users import User
from ..ids import AGENT_ID, MICRODAO_ID, SLUG, USER_EXTERNAL_ID
from ..ids import USER_ID as MATRIX_USER_ID
from ..translate.bus import iso
from ..translate.preview import has_unstorable
from ..translate.rooms import SLUG_MAX, slugify
from . import openapi
from .http import (
    Handler,
    HttpError,
    Surface,
    add_route,
    bearer_token,
    problem_shape,
    read_json,
    token_matches,
)

PREFIX = openapi.PREFIX
MAX_BODY = 64 * 1024
DEFAULT_LIMIT, MAX_LIMIT = 50, 200
VISIBILITIES = ("public", "microdao", "private")


def _known(error: Exception) -> HttpError | None:
    """The admin service's refusals, and the homeserver's."""
    if isinstance(error, AdminError):
        return HttpError(error.status, str(error), field=error.field)
    if isinstance(error, MatrixRequestError):
        return HttpError(502, f"the homeserver refused ({error.errcode})")
    return None


SURFACE = Surface(problem_shape, known=_known)


def bad(field: str, message: str) -> HttpError:
    return HttpError(400, message, field=field)


class Fields:
    """A JSON object body, read field by field; every problem names its field."""

    def __init__(self, body: Any, allowed: tuple[str, ...]) -> None:
        if not isinstance(body, dict):
            raise HttpError(400, "body must be a JSON object")
        for name in body:
            if name not in allowed:
                raise bad(name, f"unknown field {name}")
        self.body = body

    def string(
        self,
        name: str,
        *,
        max_length: int,
        required: bool = True,
        pattern: re.Pattern[str] | None = None,
        shape: str = "",
    ) -> Any:
        value = self.body.get(name)
        if value is None:
            if required:
                raise bad(name, f"{name} is required")
            return None
        if not isinstance(value, str):
            raise bad(name, f"{name} must be a string")
        value = value.strip()
        if not value:
            raise bad(name, f"{name} must not be empty")
        if len(value) > max_length:
            raise bad(name, f"{name} is longer than {max_length} characters")
        if has_unstorable(value):
            raise bad(name, f"{name} holds NUL or a lone surrogate")
        if pattern is not None and not pattern.fullmatch(value):
            raise bad(name, f"{name} must be {shape}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.body.get(name, default)
        if not isinstance(value, bool):
            raise bad(name, f"{name} must be true or false")
        return value


# -- answers -------------------------------------------------------------------------------


def microdao_json(dao: Microdao) -> dict[str, Any]:
    return {
        "id": str(dao.id),
        "external_id": dao.external_id,
        "name": dao.name,
        "owner": dao.owner_matrix_id,
        "owner_id": dao.owner_external_id,
        "space_room_id": dao.space_room_id,
        "created_at": iso(dao.created_at),
    }


def channel_json(c: ChannelInfo) -> dict[str, Any]:
    return {
        "id": str(c.id),
        "slug": c.slug,
        "name": c.name,
        "visibility": c.visibility,
        "matrix_room_id": c.matrix_room_id,
        "microdao_id": c.microdao,
        "created_at": iso(c.created_at),
        "created_by": c.created_by,
    }


def user_json(u: User) -> dict[str, Any]:
    return {
        "id": str(u.id),
        "external_id": u.external_id,
        "matrix_id": u.matrix_id,
        "handle": u.handle,
        "created_at": iso(u.created_at),
    }


def invite_json(i: Invited) -> dict[str, Any]:
    return {
        "channel_id": str(i.channel.id),
        "matrix_room_id": i.channel.room_id,
        "user_id": i.user_id,
        "agent_id": i.agent.external_id if i.agent is not None else None,
        "membership": i.membership,
        "changed": i.changed,
    }


class AdminApi:
    def __init__(self, admin_token: str, admin: Admin) -> None:
        self._token = admin_token.encode()
        self.admin = admin

    def routes(self) -> list[tuple[str, str, Handler, bool]]:
        """(method, path under the prefix, handler, whether it needs the token)."""
        return [
            ("GET", "/openapi.json", self.openapi, False),
            ("POST", "/microdaos", self.create_microdao, True),
            ("GET", "/microdaos/{microdao}", self.get_microdao, True),
            ("GET", "/microdaos/{microdao}/channels", self.list_channels, True),
            ("POST", "/microdaos/{microdao}/channels", self.create_channel, True),
            ("POST", "/channels/{channel}/invites", self.invite, True),
            ("GET", "/channels/{channel}/messages", self.list_messages, True),
            ("PUT", "/users/{matrix_id}/link", self.link_user, True),
            ("GET", "/agents", self.list_agents, True),
        ]

    def add_routes(self, app: web.Application) -> None:
        for method, path, handler, guarded in self.routes():
            guard = self._auth if guarded else None
            add_route(app, SURFACE, method, PREFIX + path, handler, guard=guard)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi.DOCUMENT)

    def _auth(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "").strip()
        if not header:
            raise HttpError(401, "missing Authorization: Bearer <api.admin_token>")
        token = bearer_token(header)
        if token is None:
            raise HttpError(403, "Authorization must be a Bearer token")
        if not token:
            raise HttpError(401, "empty Bearer token")
        if not token_matches(token, self._token):
            raise HttpError(403, "wrong admin token")

    @staticmethod
    async def _read(request: web.Request, allowed: tuple[str, ...]) -> Fields:
        return Fields(await read_json(request, timeout=None, max_size=MAX_BODY), allowed)

    # routes

    async def create_microdao(self, request: web.Request) -> web.Response:
        f = await self._read(request, ("external_id", "name", "owner", "create_space"))
        new = NewMicrodao(
            external_id=f.string(
                "external_id", max_length=128, pattern=MICRODAO_ID, shape="microdao:[a-z0-9-]+"
            ),
            name=f.string("name", max_length=255),
            owner=f.string(
                "owner", max_length=255, pattern=MATRIX_USER_ID, shape="a Matrix user id"
            ),
            create_space=f.boolean("create_space", False),
        )
        dao = await self.admin.create_microdao(new)
        return web.json_response(microdao_json(dao), status=201)

    async def get_microdao(self, request: web.Request) -> web.Response:
        dao = await self.admin.microdao(request.match_info["microdao"])
        return web.json_response(microdao_json(dao))

    async def list_channels(self, request: web.Request) -> web.Response:
        dao, found = await self.admin.channels_of(request.match_info["microdao"])
        body = {"microdao_id": dao.external_id, "channels": [channel_json(c) for c in found]}
        return web.json_response(body)

    async def create_channel(self, request: web.Request) -> web.Response:
        f = await self._read(request, ("name", "slug", "visibility", "topic"))
        name = f.string("name", max_length=255)
        slug = f.string(
            "slug",
            max_length=SLUG_MAX,
            required=False,
            pattern=SLUG,
            shape="lower-case letters and digits in words joined by -",
        )
        visibility = f.string("visibility", max_length=16)
        if visibility not in VISIBILITIES:
            raise bad("visibility", "visibility must be public, microdao or private")
        topic = f.string("topic", max_length=1000, required=False)
        new = NewChannel(name, slug or slugify(name), visibility, topic)
        created = await self.admin.create_channel(request.match_info["microdao"], new)
        body = channel_json(created.channel) | {
            "alias": created.alias,
            "topic": created.topic,
            "space_room_id": created.space_room_id,
            "in_space": created.in_space,
            "owner_invited": created.owner_invited,
        }
        return web.json_response(body, status=201)

    async def invite(self, request: web.Request) -> web.Response:
        f = await self._read(request, ("user_id",))
        who = f.string("user_id", max_length=255)
        if not (MATRIX_USER_ID.fullmatch(who) or AGENT_ID.fullmatch(who)):
            raise bad("user_id", "user_id must be a Matrix user id or an agent id (agent:x)")
        invited = await self.admin.invite(request.match_info["channel"], who)
        return web.json_response(invite_json(invited), status=201 if invited.changed else 200)

    async def list_messages(self, request: web.Request) -> web.Response:
        raw_limit = request.query.get("limit")
        limit = DEFAULT_LIMIT
        if raw_limit is not None:
            if not raw_limit.isascii() or not raw_limit.isdigit():
                raise bad("limit", f"limit must be a whole number from 1 to {MAX_LIMIT}")
            limit = int(raw_limit)
            if not 1 <= limit <= MAX_LIMIT:
                raise bad("limit", f"limit must be a whole number from 1 to {MAX_LIMIT}")
        page = await self.admin.messages(
            request.match_info["channel"], limit, request.query.get("cursor")
        )
        body = {
            "channel_id": str(page.channel.id),
            "messages": [
                {
                    "id": str(m.id),
                    "matrix_event_id": m.matrix_event_id,
                    "sender_type": m.sender_type,
                    "sender_id": m.sender_id,
                    "sender_matrix_id": m.sender_matrix_id,
                    "content_preview": m.content_preview,
                    "created_at": iso(m.created_at),
                }
                for m in page.messages
            ],
            "next_cursor": page.next_cursor,
        }
        return web.json_response(body)

    async def link_user(self, request: web.Request) -> web.Response:
        matrix_id = request.match_info["matrix_id"]
        if len(matrix_id) > 255 or not MATRIX_USER_ID.fullmatch(matrix_id):
            raise bad("matrix_id", "matrix_id must be a Matrix user id (@name:server)")
        f = await self._read(request, ("external_id",))
        external_id = f.string(
            "external_id", max_length=128, pattern=USER_EXTERNAL_ID, shape="user:[a-z0-9-]+"
        )
        user, created = await self.admin.link_user(matrix_id, external_id)
        return web.json_response(user_json(user), status=201 if created else 200)

    async def list_agents(self, request: web.Request) -> web.Response:
        found = await self.admin.agents()
        body = {
            "agents": [
                {
                    "id": str(a.agent.id),
                    "external_id": a.agent.external_id,
                    "name": a.agent.name,
                    "kind": a.agent.kind,
                    "matrix_id": a.agent.matrix_id,
                    "blueprint": a.agent.blueprint,
                    "microdao_id": a.agent.microdao,
                    "owner": a.agent.owner,
                    "configured": a.configured,
                    "created_at": iso(a.agent.created_at),
                    "sessions": [
                        {
                            "id": str(s.id),
                            "channel_id": str(s.channel_id),
                            "matrix_room_id": s.matrix_room_id,
                            "status": s.status,
                            "started_at": iso(s.started_at),
                            "last_activity_at": iso(s.last_activity_at),
                        }
                        for s in a.sessions
                    ],
                }
                for a in found
            ]
        }
        return web.json_response(body)
