"""The admin HTTP API under /_daarion/v1: JSON in and out, `Authorization: Bearer
<api.admin_token>` (none 401; a wrong token or another scheme 403). Bad input answers
400 naming the field, unknown ids 404. The routes, their bodies and their answers are
web/openapi.py's `OPERATIONS`, served as a document at /_daarion/v1/openapi.json.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from mautrix.errors import MatrixRequestError

from ..admin.service import Admin, AdminError, Invited, NewChannel, NewMicrodao
from ..db.channels import ChannelInfo
from ..db.microdaos import Microdao
from ..db.users import User
from ..translate.bus import iso
from ..translate.rooms import slugify
from . import models, openapi
from .http import (
    Handler,
    HttpError,
    Surface,
    add_route,
    bearer_token,
    problem_shape,
    query_limit,
    read_json,
    token_matches,
)
from .openapi import DEFAULT_LIMIT, MAX_BODY, MAX_LIMIT, PREFIX, Operation

# A handler gets the request and its body, checked against the operation's model (None
# for an operation without a body).
OperationHandler = Callable[[web.Request, Any], Awaitable[web.Response]]


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


# -- answers -------------------------------------------------------------------------------


def microdao_json(dao: Microdao) -> models.Microdao:
    return {
        "id": str(dao.id),
        "external_id": dao.external_id,
        "name": dao.name,
        "owner": dao.owner_matrix_id,
        "owner_id": dao.owner_external_id,
        "space_room_id": dao.space_room_id,
        "created_at": iso(dao.created_at),
    }


def channel_json(c: ChannelInfo) -> models.Channel:
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


def user_json(u: User) -> models.User:
    return {
        "id": str(u.id),
        "external_id": u.external_id,
        "matrix_id": u.matrix_id,
        "handle": u.handle,
        "created_at": iso(u.created_at),
    }


def invite_json(i: Invited) -> models.Invite:
    return {
        "channel_id": str(i.channel.id),
        "matrix_room_id": i.channel.room_id,
        "user_id": i.user_id,
        "agent_id": i.agent.external_id if i.agent is not None else None,
        "membership": i.membership,
        "changed": i.changed,
    }


class AdminApi:
    def __init__(self, admin_token: str, admin: Admin, body_timeout: float | None = None) -> None:
        self._token = admin_token.encode()
        self.admin = admin
        self.body_timeout = body_timeout

    def add_routes(self, app: web.Application) -> None:
        handlers: dict[str, OperationHandler] = {
            "openapi": self.openapi,
            "createMicrodao": self.create_microdao,
            "getMicrodao": self.get_microdao,
            "listChannels": self.list_channels,
            "createChannel": self.create_channel,
            "invite": self.invite,
            "listMessages": self.list_messages,
            "linkUser": self.link_user,
            "listAgents": self.list_agents,
        }
        for op in openapi.OPERATIONS:
            add_route(
                app,
                SURFACE,
                op.method,
                PREFIX + op.path,
                self._endpoint(op, handlers.pop(op.operation_id)),
                guard=None if op.public else self._auth,
            )
        if handlers:
            raise RuntimeError(f"handlers of no documented operation: {sorted(handlers)}")

    def _endpoint(self, op: Operation, handler: OperationHandler) -> Handler:
        """The handler behind its operation's checks: path parameters, then the body."""

        async def endpoint(request: web.Request) -> web.Response:
            for param in op.path_params():
                if (problem := param.problem(request.match_info[param.name])) is not None:
                    raise bad(param.name, problem)
            body = None
            if op.body is not None:
                raw = await read_json(request, timeout=self.body_timeout, max_size=MAX_BODY)
                body = models.parse(op.body, raw)
            return await handler(request, body)

        return endpoint

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

    # routes

    async def openapi(self, request: web.Request, _: None) -> web.Response:
        return web.json_response(openapi.DOCUMENT)

    async def create_microdao(self, request: web.Request, new: models.NewMicrodao) -> web.Response:
        dao = await self.admin.create_microdao(
            NewMicrodao(new.external_id, new.name, new.owner, new.create_space)
        )
        return web.json_response(microdao_json(dao), status=201)

    async def get_microdao(self, request: web.Request, _: None) -> web.Response:
        dao = await self.admin.microdao(request.match_info["microdao"])
        return web.json_response(microdao_json(dao))

    async def list_channels(self, request: web.Request, _: None) -> web.Response:
        dao, found = await self.admin.channels_of(request.match_info["microdao"])
        body: models.ChannelList = {
            "microdao_id": dao.external_id,
            "channels": [channel_json(c) for c in found],
        }
        return web.json_response(body)

    async def create_channel(self, request: web.Request, new: models.NewChannel) -> web.Response:
        channel = NewChannel(new.name, new.slug or slugify(new.name), new.visibility, new.topic)
        created = await self.admin.create_channel(request.match_info["microdao"], channel)
        body: models.CreatedChannel = {
            **channel_json(created.channel),
            "alias": created.alias,
            "topic": created.topic,
            "space_room_id": created.space_room_id,
            "in_space": created.in_space,
            "owner_invited": created.owner_invited,
        }
        return web.json_response(body, status=201)

    async def invite(self, request: web.Request, new: models.NewInvite) -> web.Response:
        invited = await self.admin.invite(request.match_info["channel"], new.user_id)
        return web.json_response(invite_json(invited), status=201 if invited.changed else 200)

    async def list_messages(self, request: web.Request, _: None) -> web.Response:
        limit = query_limit(request, DEFAULT_LIMIT, MAX_LIMIT)
        page = await self.admin.messages(
            request.match_info["channel"], limit, request.query.get("cursor")
        )
        body: models.MessagePage = {
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

    async def link_user(self, request: web.Request, link: models.Link) -> web.Response:
        user, created = await self.admin.link_user(
            request.match_info["matrix_id"], link.external_id
        )
        return web.json_response(user_json(user), status=201 if created else 200)

    async def list_agents(self, request: web.Request, _: None) -> web.Response:
        found = await self.admin.agents()
        body: models.AgentList = {
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
