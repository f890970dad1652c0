"""The admin API's OpenAPI 3.1 document, served at /_daarion/v1/openapi.json.

Kept honest by tests: every route under /_daarion/v1 is here and every path here is a
route, and the answers of the database tests validate against these schemas.
"""

from __future__ import annotations

from typing import Any

from .. import ids

PREFIX = "/_daarion/v1"

MICRODAO_ID = ids.MICRODAO_ID.pattern
USER_EXTERNAL_ID = ids.USER_EXTERNAL_ID.pattern
AGENT_ID = ids.AGENT_ID.pattern
MATRIX_USER_ID = ids.USER_ID.pattern
SLUG = ids.SLUG.pattern


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"oneOf": [schema, {"type": "null"}]}


_STR = {"type": "string"}
_TIME = {"type": "string", "format": "date-time"}
_UUID = {"type": "string", "format": "uuid"}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": False,
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR_DESCRIPTIONS = {
    400: "Bad input; `field` names the field, parameter or query argument at fault",
    401: "No Authorization header (or an empty Bearer token)",
    403: "Wrong token, or an Authorization scheme other than Bearer",
    404: "Unknown microDAO, channel, agent or user",
    409: "Conflict with what exists (see `error`)",
    413: "Body over 64 KiB",
    502: "The homeserver refused the request",
    503: "The homeserver or the database is unavailable; retry later",
}


def _errors(*statuses: int) -> dict[str, Any]:
    """References to the error answers: these, and those of every route (401, 403, 503)."""
    chosen = sorted({*statuses, 401, 403, 503})
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in chosen}


def _path_param(name: str, description: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


MICRODAO_PARAM = _path_param("microdao", "The microDAO's platform id (`microdao:7`) or uuid")
CHANNEL_PARAM = _path_param("channel", "The channel's uuid or Matrix room id (URL-encoded)")

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "What went wrong, for people"},
            "field": {"type": "string", "description": "The input at fault (400, 404, 409)"},
            "errcode": {"type": "string", "description": "Matrix-style code of unknown routes"},
        },
    },
    "NewMicrodao": _object(
        ["external_id", "name", "owner"],
        {
            "external_id": {"type": "string", "pattern": MICRODAO_ID, "maxLength": 128},
            "name": {"type": "string", "minLength": 1, "maxLength": 255},
            "owner": {"type": "string", "pattern": MATRIX_USER_ID, "maxLength": 255},
            "create_space": {
                "type": "boolean",
                "default": False,
                "description": "The bot creates a Matrix space for the microDAO: its rooms "
                "become the microDAO's channels; the owner is invited with power 100",
            },
        },
    ),
    "Microdao": _object(
        ["id", "external_id", "name", "owner", "owner_id", "space_room_id", "created_at"],
        {
            "id": _UUID,
            "external_id": {"type": "string", "pattern": MICRODAO_ID},
            "name": _STR,
            "owner": _nullable(_STR) | {"description": "The owner's Matrix id"},
            "owner_id": {"type": "string", "description": "The owner's users.external_id"},
            "space_room_id": _nullable(_STR),
            "created_at": _nullable(_TIME),
        },
    ),
    "NewChannel": _object(
        ["name", "visibility"],
        {
            "name": {"type": "string", "minLength": 1, "maxLength": 255},
            "slug": {
                "type": "string",
                "pattern": SLUG,
                "maxLength": 64,
                "description": "Unique in the microDAO; made from the name when left out",
            },
            "visibility": {
                "enum": ["public", "microdao", "private"],
                "description": "Join rule of the room: `public`; `microdao` is restricted to "
                "members of the microDAO's space (invite only when it has none, and then "
                "indexed as `private`, as the index follows the room's join rule); "
                "`private` is invite only",
            },
            "topic": {"type": "string", "maxLength": 1000},
        },
    ),
    "Channel": _object(
        [
            "id",
            "slug",
            "name",
            "visibility",
            "matrix_room_id",
            "microdao_id",
            "created_at",
            "created_by",
        ],
        {
            "id": _UUID,
            "slug": _STR,
            "name": _STR,
            "visibility": {"enum": ["public", "microdao", "private"]},
            "matrix_room_id": _STR,
            "microdao_id": {"type": "string", "pattern": MICRODAO_ID},
            "created_at": _nullable(_TIME),
            "created_by": _nullable(_STR) | {"description": "Platform id of the creator"},
        },
    ),
    "CreatedChannel": {
        "allOf": [_ref("Channel")],
        "type": "object",
        "required": ["alias", "topic", "space_room_id", "in_space", "owner_invited"],
        "properties": {
            "alias": {"type": "string", "description": "`#<slug>-<microDAO>:<domain>`"},
            "topic": _nullable(_STR),
            "space_room_id": _nullable(_STR),
            "in_space": {
                "type": "boolean",
                "description": "The space lists the room (m.space.child); false when the bot "
                "has no power in the space (the room still names it as m.space.parent)",
            },
            "owner_invited": {"type": "boolean"},
        },
        "unevaluatedProperties": False,
    },
    "ChannelList": _object(
        ["microdao_id", "channels"],
        {
            "microdao_id": {"type": "string", "pattern": MICRODAO_ID},
            "channels": {"type": "array", "items": _ref("Channel")},
        },
    ),
    "NewInvite": _object(
        ["user_id"],
        {
            "user_id": {
                "type": "string",
                "description": "A Matrix user id, or an agent's platform id (`agent:sofia`) "
                "or Matrix id",
                "anyOf": [{"pattern": MATRIX_USER_ID}, {"pattern": AGENT_ID}],
            }
        },
    ),
    "Invite": _object(
        ["channel_id", "matrix_room_id", "user_id", "agent_id", "membership", "changed"],
        {
            "channel_id": _UUID,
            "matrix_room_id": _STR,
            "user_id": {"type": "string", "description": "Matrix id"},
            "agent_id": _nullable(_STR) | {"description": "Platform id, for an agent"},
            "membership": {
                "enum": ["invite", "join"],
                "description": "People are invited; an agent joins at once (indexed before "
                "the answer)",
            },
            "changed": {
                "type": "boolean",
                "description": "False when already invited or in the channel (answer 200)",
            },
        },
    ),
    "Link": _object(
        ["external_id"], {"external_id": {"type": "string", "pattern": USER_EXTERNAL_ID}}
    ),
    "User": _object(
        ["id", "external_id", "matrix_id", "handle", "created_at"],
        {
            "id": _UUID,
            "external_id": _STR,
            "matrix_id": _nullable(_STR),
            "handle": _nullable(_STR),
            "created_at": _nullable(_TIME),
        },
    ),
    "Message": _object(
        [
            "id",
            "matrix_event_id",
            "sender_type",
            "sender_id",
            "sender_matrix_id",
            "content_preview",
            "created_at",
        ],
        {
            "id": _UUID,
            "matrix_event_id": _STR,
            "sender_type": {"enum": ["human", "agent"]},
            "sender_id": _nullable(_STR) | {"description": "Platform id of the sender"},
            "sender_matrix_id": _nullable(_STR),
            "content_preview": _STR,
            "created_at": _nullable(_TIME),
        },
    ),
    "MessagePage": _object(
        ["channel_id", "messages", "next_cursor"],
        {
            "channel_id": _UUID,
            "messages": {"type": "array", "items": _ref("Message")},
            "next_cursor": _nullable(_STR)
            | {"description": "Pass as `cursor` for the next (older) page; null on the last"},
        },
    ),
    "Session": _object(
        ["id", "channel_id", "matrix_room_id", "status", "started_at", "last_activity_at"],
        {
            "id": _UUID,
            "channel_id": _UUID,
            "matrix_room_id": _STR,
            "status": {"enum": ["active", "idle"]},
            "started_at": _nullable(_TIME),
            "last_activity_at": _nullable(_TIME),
        },
    ),
    "Agent": _object(
        [
            "id",
            "external_id",
            "name",
            "kind",
            "matrix_id",
            "blueprint",
            "microdao_id",
            "owner",
            "configured",
            "created_at",
            "sessions",
        ],
        {
            "id": _UUID,
            "external_id": {"type": "string", "pattern": AGENT_ID},
            "name": _STR,
            "kind": {"enum": ["system", "assistant", "node", "quest"]},
            "matrix_id": _nullable(_STR),
            "blueprint": _STR,
            "microdao_id": _nullable(_STR),
            "owner": _nullable(_STR) | {"description": "The owner's Matrix id"},
            "configured": {
                "type": "boolean",
                "description": "In the bridge's config now; false for agents kept for history",
            },
            "created_at": _nullable(_TIME),
            "sessions": {
                "type": "array",
                "items": _ref("Session"),
                "description": "Its sessions that are not closed",
            },
        },
    ),
    "AgentList": _object(["agents"], {"agents": {"type": "array", "items": _ref("Agent")}}),
}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


PATHS: dict[str, Any] = {
    f"{PREFIX}/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document (no token needed)",
            "security": [],
            "responses": {"200": {"description": "The OpenAPI document"}},
        }
    },
    f"{PREFIX}/microdaos": {
        "post": {
            "operationId": "createMicrodao",
            "summary": "Create a microDAO, optionally with its Matrix space",
            "requestBody": _body("NewMicrodao"),
            "responses": {
                "201": _json(_ref("Microdao"), "Created"),
                **_errors(400, 409, 413, 502),
            },
        }
    },
    f"{PREFIX}/microdaos/{{microdao}}": {
        "parameters": [MICRODAO_PARAM],
        "get": {
            "operationId": "getMicrodao",
            "summary": "A microDAO",
            "responses": {"200": _json(_ref("Microdao"), "The microDAO"), **_errors(404)},
        },
    },
    f"{PREFIX}/microdaos/{{microdao}}/channels": {
        "parameters": [MICRODAO_PARAM],
        "get": {
            "operationId": "listChannels",
            "summary": "The microDAO's channels, oldest first",
            "responses": {"200": _json(_ref("ChannelList"), "Its channels"), **_errors(404)},
        },
        "post": {
            "operationId": "createChannel",
            "summary": "The bot creates a room (name, alias, join rule from visibility, "
            "power 100 for the microDAO's owner, in the microDAO's space) and invites the "
            "owner; the channel row exists when this answers",
            "requestBody": _body("NewChannel"),
            "responses": {
                "201": _json(_ref("CreatedChannel"), "Created"),
                **_errors(400, 404, 409, 413, 502),
            },
        },
    },
    f"{PREFIX}/channels/{{channel}}/invites": {
        "parameters": [CHANNEL_PARAM],
        "post": {
            "operationId": "invite",
            "summary": "The bot invites a person, or an agent (whose puppet joins at once)",
            "requestBody": _body("NewInvite"),
            "responses": {
                "201": _json(_ref("Invite"), "Invited (an agent: joined)"),
                "200": _json(_ref("Invite"), "Already invited or in the channel"),
                **_errors(400, 404, 409, 413, 502),
            },
        },
    },
    f"{PREFIX}/channels/{{channel}}/messages": {
        "parameters": [CHANNEL_PARAM],
        "get": {
            "operationId": "listMessages",
            "summary": "The channel's messages, newest first, a page at a time",
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                },
                {
                    "name": "cursor",
                    "in": "query",
                    "description": "`next_cursor` of the previous page",
                    "schema": {"type": "string"},
                },
            ],
            "responses": {"200": _json(_ref("MessagePage"), "A page"), **_errors(400, 404)},
        },
    },
    f"{PREFIX}/users/{{matrix_id}}/link": {
        "parameters": [_path_param("matrix_id", "A Matrix user id", MATRIX_USER_ID)],
        "put": {
            "operationId": "linkUser",
            "summary": "Set the person's platform id (users.external_id), creating the row "
            "when the bridge never saw them",
            "requestBody": _body("Link"),
            "responses": {
                "200": _json(_ref("User"), "Linked"),
                "201": _json(_ref("User"), "Linked; the users row was created"),
                **_errors(400, 409, 413),
            },
        },
    },
    f"{PREFIX}/agents": {
        "get": {
            "operationId": "listAgents",
            "summary": "Agents, with their sessions that are not closed",
            "responses": {"200": _json(_ref("AgentList"), "The agents"), **_errors()},
        }
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "daarion_bridge admin API",
        "version": "1",
        "description": "Administration of the DAARION bridge. JSON in and out; every route "
        "but this document needs `Authorization: Bearer <api.admin_token>`.",
    },
    "paths": PATHS,
    "security": [{"adminToken": []}],
    "components": {
        "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        "schemas": SCHEMAS,
        "responses": {
            f"E{status}": _json(_ref("Error"), description)
            for status, description in _ERROR_DESCRIPTIONS.items()
        },
    },
}
