"""The admin API's OpenAPI 3.1 document, served at /_daarion/v1/openapi.json.

Generated, so it cannot drift from the code: `OPERATIONS` is the admin API's route
table (web/admin_api.py routes exactly these, each to its handler, checking the body
against the model named here), and the schemas come from the models of web/models.py.
Tests validate the answers of the database tests against these schemas.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import CoreSchema

from .. import ids
from . import models
from .models import Body

PREFIX = "/_daarion/v1"
MAX_BODY = 64 * 1024
DEFAULT_LIMIT, MAX_LIMIT = 50, 200

MICRODAO_ID = ids.MICRODAO_ID.pattern
USER_EXTERNAL_ID = ids.USER_EXTERNAL_ID.pattern
AGENT_ID = ids.AGENT_ID.pattern
MATRIX_USER_ID = ids.USER_ID.pattern
SLUG = ids.SLUG.pattern

_ERROR_DESCRIPTIONS = {
    400: "Bad input; `field` names the field, parameter or query argument at fault",
    401: "No Authorization header (or an empty Bearer token)",
    403: "Wrong token, or an Authorization scheme other than Bearer",
    404: "Unknown microDAO, channel, agent or user",
    409: "Conflict with what exists (see `error`)",
    413: f"Body over {MAX_BODY // 1024} KiB",
    502: "The homeserver refused the request",
    503: "The homeserver or the database is unavailable; retry later",
}
# What every route that needs the token may answer.
_GUARDED_ERRORS = (401, 403, 503)


@dataclass(frozen=True, slots=True)
class PathParam:
    name: str
    description: str
    # When set, a value of another shape answers 400 naming the parameter.
    pattern: re.Pattern[str] | None = None
    max_length: int | None = None
    shape: str = ""

    def problem(self, value: str) -> str | None:
        """What is wrong with `value`, or None."""
        if self.pattern is None:
            return None
        too_long = self.max_length is not None and len(value) > self.max_length
        if too_long or not self.pattern.fullmatch(value):
            return f"{self.name} must be {self.shape}"
        return None

    def document(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string"}
        if self.pattern is not None:
            schema["pattern"] = self.pattern.pattern
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        return {
            "name": self.name,
            "in": "path",
            "required": True,
            "description": self.description,
            "schema": schema,
        }


PATH_PARAMS = {
    p.name: p
    for p in (
        PathParam("microdao", "The microDAO's platform id (`microdao:7`) or uuid"),
        PathParam("channel", "The channel's uuid or Matrix room id (URL-encoded)"),
        PathParam(
            "matrix_id",
            "A Matrix user id",
            ids.USER_ID,
            max_length=255,
            shape="a Matrix user id (@name:server)",
        ),
    )
}

# The query of listMessages; the handler checks it (web/admin_api.py).
MESSAGES_QUERY = (
    {
        "name": "limit",
        "in": "query",
        "schema": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_LIMIT,
            "default": DEFAULT_LIMIT,
        },
    },
    {
        "name": "cursor",
        "in": "query",
        "description": "`next_cursor` of the previous page",
        "schema": {"type": "string"},
    },
)


@dataclass(frozen=True, slots=True)
class Operation:
    """One route of the admin API, as the document tells it."""

    method: str
    path: str  # under PREFIX
    operation_id: str
    summary: str
    # status: (the answer's type, or None for an answer without a schema; description)
    answers: dict[int, tuple[Any, str]]
    body: type[Body] | None = None
    errors: tuple[int, ...] = ()  # besides those of every guarded route
    query: tuple[dict[str, Any], ...] = ()
    public: bool = False  # no token needed

    def path_params(self) -> list[PathParam]:
        return [PATH_PARAMS[name] for name in re.findall(r"\{(\w+)\}", self.path)]


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/openapi.json",
        "openapi",
        "This document (no token needed)",
        {200: (None, "The OpenAPI document")},
        public=True,
    ),
    Operation(
        "POST",
        "/microdaos",
        "createMicrodao",
        "Create a microDAO, optionally with its Matrix space",
        {201: (models.Microdao, "Created")},
        body=models.NewMicrodao,
        errors=(400, 409, 413, 502),
    ),
    Operation(
        "GET",
        "/microdaos/{microdao}",
        "getMicrodao",
        "A microDAO",
        {200: (models.Microdao, "The microDAO")},
        errors=(404,),
    ),
    Operation(
        "GET",
        "/microdaos/{microdao}/channels",
        "listChannels",
        "The microDAO's channels, oldest first",
        {200: (models.ChannelList, "Its channels")},
        errors=(404,),
    ),
    Operation(
        "POST",
        "/microdaos/{microdao}/channels",
        "createChannel",
        "The bot creates a room (name, alias, join rule from visibility, power 100 for the "
        "microDAO's owner, in the microDAO's space) and invites the owner; the channel row "
        "exists when this answers",
        {201: (models.CreatedChannel, "Created")},
        body=models.NewChannel,
        errors=(400, 404, 409, 413, 502),
    ),
    Operation(
        "POST",
        "/channels/{channel}/invites",
        "invite",
        "The bot invites a person, or an agent (whose puppet joins at once)",
        {
            201: (models.Invite, "Invited (an agent: joined)"),
            200: (models.Invite, "Already invited or in the channel"),
        },
        body=models.NewInvite,
        errors=(400, 404, 409, 413, 502),
    ),
    Operation(
        "GET",
        "/channels/{channel}/messages",
        "listMessages",
        "The channel's messages, newest first, a page at a time",
        {200: (models.MessagePage, "A page")},
        errors=(400, 404),
        query=MESSAGES_QUERY,
    ),
    Operation(
        "PUT",
        "/users/{matrix_id}/link",
        "linkUser",
        "Set the person's platform id (users.external_id), creating the row when the "
        "bridge never saw them",
        {
            200: (models.User, "Linked"),
            201: (models.User, "Linked; the users row was created"),
        },
        body=models.Link,
        errors=(400, 409, 413),
    ),
    Operation(
        "GET",
        "/agents",
        "listAgents",
        "Agents, with their sessions that are not closed",
        {200: (models.AgentList, "The agents")},
    ),
)

# -- the document --------------------------------------------------------------------------

_REF = "#/components/schemas/{model}"


def _ref(model: type) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


class _Untitled(GenerateJsonSchema):
    """pydantic's schemas without the titles it makes up from names."""

    def field_title_should_be_set(self, schema: CoreSchema) -> bool:
        return False


def _schemas(types: Iterable[type]) -> dict[str, Any]:
    """Each type's JSON schema by its name, and those of the types they hold."""
    found: dict[str, Any] = {}
    for model in types:
        schema = TypeAdapter(model).json_schema(ref_template=_REF, schema_generator=_Untitled)
        found |= schema.pop("$defs", {})
        found[model.__name__] = schema
    for schema in found.values():
        schema.pop("title", None)
    return found


def _operation(op: Operation) -> dict[str, Any]:
    document: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
    if op.public:
        document["security"] = []
    if op.query:
        document["parameters"] = list(op.query)
    if op.body is not None:
        json = {"application/json": {"schema": _ref(op.body)}}
        document["requestBody"] = {"required": True, "content": json}
    responses: dict[str, Any] = {}
    for status, (model, description) in op.answers.items():
        responses[str(status)] = {"description": description}
        if model is not None:
            responses[str(status)]["content"] = {"application/json": {"schema": _ref(model)}}
    errors = set(op.errors) | (set() if op.public else set(_GUARDED_ERRORS))
    for status in sorted(errors):
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    document["responses"] = responses
    return document


def _paths(operations: Iterable[Operation]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for op in operations:
        item = paths.setdefault(PREFIX + op.path, {})
        if params := op.path_params():
            item["parameters"] = [p.document() for p in params]
        item[op.method.lower()] = _operation(op)
    return paths


def _document(operations: tuple[Operation, ...]) -> dict[str, Any]:
    bodies = [op.body for op in operations if op.body is not None]
    answers = [m for op in operations for m, _ in op.answers.values() if m is not None]
    models_used = dict.fromkeys([models.Error, *bodies, *answers])  # once each, in order
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "daarion_bridge admin API",
            "version": "1",
            "description": "Administration of the DAARION bridge. JSON in and out; every "
            "route but this document needs `Authorization: Bearer <api.admin_token>`.",
        },
        "paths": _paths(operations),
        "security": [{"adminToken": []}],
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(models_used),
            "responses": {
                f"E{status}": {
                    "description": description,
                    "content": {"application/json": {"schema": _ref(models.Error)}},
                }
                for status, description in _ERROR_DESCRIPTIONS.items()
            },
        },
    }


DOCUMENT: dict[str, Any] = _document(OPERATIONS)
