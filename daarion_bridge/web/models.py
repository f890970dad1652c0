"""The shapes of what the admin API and the agents' post endpoint take and answer.

Request bodies are pydantic models: `parse` validates a body against one and refuses it
with a 400 that names the field and its problem. Answers are TypedDicts: the handlers
build them as plain dicts (checked by the type checker, not at run time). Both are what
web/openapi.py generates the admin API's document from.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, NotRequired, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    with_config,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from typing_extensions import TypedDict

from .. import ids
from ..translate.preview import has_unstorable
from ..translate.rooms import SLUG_MAX
from .http import HttpError

MAX_TEXT = 10_000  # the platform's cap on a message
MAX_MENTIONS = 50  # users one agent post may notify
MAX_TXN_ID = 64  # characters of a runtime's transaction id
VISIBILITIES = ("public", "microdao", "private")


# -- requests ------------------------------------------------------------------------------


def _storable(value: Any) -> Any:
    """JSON null is a field left out."""
    if value is None:
        raise PydanticCustomError("required", "required")
    if isinstance(value, str) and has_unstorable(value):
        raise PydanticCustomError("unstorable", "holds NUL or a lone surrogate")
    return value


def _trimmed(value: Any) -> Any:
    return _storable(value.strip() if isinstance(value, str) else value)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank", "blank")
    return value


def _person_or_agent(value: str) -> str:
    if not (ids.USER_ID.fullmatch(value) or ids.AGENT_ID.fullmatch(value)):
        raise PydanticCustomError("person_or_agent", "neither a Matrix user id nor an agent id")
    return value


# Each check runs after the ones to its left; a BeforeValidator (last) runs first. An
# optional field is `Annotated[...] | None`: null is taken before these checks run.
Stored = BeforeValidator(_storable)  # as sent, but neither null nor unstorable
Trimmed = BeforeValidator(_trimmed)  # stripped first: "  x " is "x", "   " is empty

# What each kind of problem says; `{field}` is the field at fault.
_PROBLEMS = {
    "required": "{field} is required",
    "missing": "{field} is required",
    "extra_forbidden": "unknown field {field}",
    "unstorable": "{field} holds NUL or a lone surrogate",
    "string_type": "{field} must be a string",
    "string_too_short": "{field} must not be empty",
    "string_too_long": "{field} is longer than {max_length} characters",
    "bool_type": "{field} must be true or false",
}


class Body(BaseModel):
    """A JSON object body: only the fields declared, strictly typed (no "1" for 1)."""

    model_config = ConfigDict(extra="forbid", strict=True, regex_engine="python-re")
    # What a field must be, said when its value has the wrong shape (pattern, choice,
    # a check of its own): "{field} must be {shape}".
    shapes: ClassVar[dict[str, str]] = {}

    @classmethod
    def refusal(cls, error: ValidationError) -> HttpError:
        """The 400 of the first problem: unknown fields first, then the fields in order."""
        problems = error.errors()
        first = min(problems, key=lambda p: p["type"] != "extra_forbidden")
        field = str(first["loc"][0])
        return HttpError(400, cls._explain(field, first), field=field)

    @classmethod
    def _explain(cls, field: str, problem: ErrorDetails) -> str:
        template = _PROBLEMS.get(problem["type"])
        if template is not None:
            return template.format(field=field, **problem.get("ctx", {}))
        if field in cls.shapes:
            return f"{field} must be {cls.shapes[field]}"
        return f"{field}: {problem['msg']}"


R = TypeVar("R", bound=Body)


def parse(model: type[R], body: Any) -> R:
    """`body` (parsed JSON) as a `model`; HttpError 400 naming the field otherwise."""
    if not isinstance(body, dict):
        raise HttpError(400, "body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise model.refusal(e) from None


def _text(max_length: int, pattern: str | None = None) -> StringConstraints:
    return StringConstraints(min_length=1, max_length=max_length, pattern=pattern)


class NewMicrodao(Body):
    shapes = {"external_id": "microdao:[a-z0-9-]+", "owner": "a Matrix user id"}

    external_id: Annotated[str, _text(128, ids.MICRODAO_ID.pattern), Trimmed]
    name: Annotated[str, _text(255), Trimmed]
    owner: Annotated[str, _text(255, ids.USER_ID.pattern), Trimmed]
    create_space: StrictBool = Field(
        False,
        description="The bot creates a Matrix space for the microDAO: its rooms become the "
        "microDAO's channels; the owner is invited with power 100",
    )


class NewChannel(Body):
    shapes = {
        "slug": "lower-case letters and digits in words joined by -",
        "visibility": "public, microdao or private",
    }

    name: Annotated[str, _text(255), Trimmed]
    slug: Annotated[str, _text(SLUG_MAX, ids.SLUG.pattern), Trimmed] | None = Field(
        None, description="Unique in the microDAO; made from the name when left out"
    )
    visibility: Annotated[
        Literal["public", "microdao", "private"],
        Trimmed,
        Field(
            description="Join rule of the room: `public`; `microdao` is restricted to "
            "members of the microDAO's space (invite only when it has none, and then "
            "indexed as `private`, as the index follows the room's join rule); `private` "
            "is invite only"
        ),
    ]
    topic: Annotated[str, _text(1000), Trimmed] | None = None


class NewInvite(Body):
    shapes = {"user_id": "a Matrix user id or an agent id (agent:x)"}

    user_id: Annotated[
        str,
        _text(255),
        AfterValidator(_person_or_agent),
        Trimmed,
        Field(
            description="A Matrix user id, or an agent's platform id (`agent:sofia`) or Matrix id",
            json_schema_extra={
                "anyOf": [{"pattern": ids.USER_ID.pattern}, {"pattern": ids.AGENT_ID.pattern}]
            },
        ),
    ]


class Link(Body):
    shapes = {"external_id": "user:[a-z0-9-]+"}

    external_id: Annotated[str, _text(128, ids.USER_EXTERNAL_ID.pattern), Trimmed]


MentionedUser = Annotated[str, StringConstraints(max_length=255, pattern=ids.ANY_USER_ID.pattern)]


class AgentPost(Body):
    """POST /internal/agents/{agent_id}/post-to-channel. Not trimmed: the text is sent
    as the agent wrote it."""

    shapes = {
        "text": "a non-empty string",
        "reply_to": "a Matrix event id ($...)",
        "thread_root": "a Matrix event id ($...)",
        "txn_id": f"1 to {MAX_TXN_ID} letters, digits, '.', '_', '~' or '-'",
        "mentions": f"a list of at most {MAX_MENTIONS} Matrix user ids",
    }

    text: Annotated[str, StringConstraints(max_length=MAX_TEXT), AfterValidator(_not_blank), Stored]
    html: Annotated[str, StringConstraints(max_length=4 * MAX_TEXT), Stored] | None = None
    reply_to: Annotated[str, StringConstraints(pattern=r"^\$"), Stored] | None = None
    thread_root: (
        Annotated[str, StringConstraints(max_length=255, pattern=r"^\$"), Stored] | None
    ) = Field(
        default=None,
        description="The thread to answer in (its root event); by default the thread of "
        "`reply_to`, if that message is in one",
    )
    mentions: (
        Annotated[
            list[
                Annotated[str, StringConstraints(max_length=255, pattern=ids.ANY_USER_ID.pattern)]
            ],
            Field(max_length=MAX_MENTIONS),
        ]
        | None
    ) = None
    channel_id: Annotated[str, StringConstraints(min_length=1), Stored] = Field(
        description="The channel's uuid or Matrix room id"
    )
    txn_id: (
        Annotated[str, StringConstraints(pattern=rf"^[A-Za-z0-9._~-]{{1,{MAX_TXN_ID}}}$"), Stored]
        | None
    ) = Field(
        default=None,
        description="The runtime's id for this post: a retry with the same one gets the "
        "same event back, neither sent nor counted again",
    )


# -- answers -------------------------------------------------------------------------------

Uuid = Annotated[str, WithJsonSchema({"type": "string", "format": "uuid"})]
Time = Annotated[
    str | None,
    WithJsonSchema({"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]}),
]


def _one_of(*values: str) -> Any:
    """A string the database holds as one of these (declared, not checked at run time)."""
    return Field(json_schema_extra={"enum": list(values)})


def _matching(pattern: re.Pattern[str]) -> Any:
    """A string of this shape (declared, not checked at run time)."""
    return Field(json_schema_extra={"pattern": pattern.pattern})


def _described(text: str) -> Any:
    return Field(description=text)


class Error(TypedDict):
    error: Annotated[str, _described("What went wrong, for people")]
    field: NotRequired[Annotated[str, _described("The input at fault (400, 404, 409)")]]
    errcode: NotRequired[Annotated[str, _described("Matrix-style code of unknown routes")]]


@with_config(ConfigDict(extra="forbid"))
class Microdao(TypedDict):
    id: Uuid
    external_id: Annotated[str, _matching(ids.MICRODAO_ID)]
    name: str
    owner: Annotated[str | None, _described("The owner's Matrix id")]
    owner_id: Annotated[str, _described("The owner's users.external_id")]
    space_room_id: str | None
    created_at: Time


@with_config(ConfigDict(extra="forbid"))
class Channel(TypedDict):
    id: Uuid
    slug: str
    name: str
    visibility: Annotated[str, _one_of(*VISIBILITIES)]
    matrix_room_id: str
    microdao_id: Annotated[str, _matching(ids.MICRODAO_ID)]
    created_at: Time
    created_by: Annotated[str | None, _described("Platform id of the creator")]


@with_config(ConfigDict(extra="forbid"))
class CreatedChannel(Channel):
    alias: Annotated[str, _described("`#<slug>-<microDAO>:<domain>`")]
    topic: str | None
    space_room_id: str | None
    in_space: Annotated[
        bool,
        _described(
            "The space lists the room (m.space.child); false when the bot has no power in "
            "the space (the room still names it as m.space.parent)"
        ),
    ]
    owner_invited: bool


@with_config(ConfigDict(extra="forbid"))
class ChannelList(TypedDict):
    microdao_id: Annotated[str, _matching(ids.MICRODAO_ID)]
    channels: list[Channel]


@with_config(ConfigDict(extra="forbid"))
class Invite(TypedDict):
    channel_id: Uuid
    matrix_room_id: str
    user_id: Annotated[str, _described("Matrix id")]
    agent_id: Annotated[str | None, _described("Platform id, for an agent")]
    membership: Annotated[
        str,
        _one_of("invite", "join"),
        _described("People are invited; an agent joins at once (indexed before the answer)"),
    ]
    changed: Annotated[
        bool, _described("False when already invited or in the channel (answer 200)")
    ]


@with_config(ConfigDict(extra="forbid"))
class User(TypedDict):
    id: Uuid
    external_id: str
    matrix_id: str | None
    handle: str | None
    created_at: Time


@with_config(ConfigDict(extra="forbid"))
class Message(TypedDict):
    id: Uuid
    matrix_event_id: str
    sender_type: Annotated[str, _one_of("human", "agent")]
    sender_id: Annotated[str | None, _described("Platform id of the sender")]
    sender_matrix_id: str | None
    content_preview: str
    created_at: Time


@with_config(ConfigDict(extra="forbid"))
class MessagePage(TypedDict):
    channel_id: Uuid
    messages: list[Message]
    next_cursor: Annotated[
        str | None,
        _described("Pass as `cursor` for the next (older) page; null on the last"),
    ]


@with_config(ConfigDict(extra="forbid"))
class Session(TypedDict):
    id: Uuid
    channel_id: Uuid
    matrix_room_id: str
    status: Annotated[str, _one_of("active", "idle")]
    started_at: Time
    last_activity_at: Time


@with_config(ConfigDict(extra="forbid"))
class Agent(TypedDict):
    id: Uuid
    external_id: Annotated[str, _matching(ids.INDEXED_AGENT_ID)]
    name: str
    kind: Annotated[str, _one_of("system", "assistant", "node", "quest")]
    matrix_id: str | None
    blueprint: str
    microdao_id: str | None
    owner: Annotated[str | None, _described("The owner's Matrix id")]
    configured: Annotated[
        bool,
        _described(
            "In the bridge's config now (the bridge's bot, system:daarion, always); "
            "false for agents kept for history"
        ),
    ]
    created_at: Time
    sessions: Annotated[list[Session], _described("Its sessions that are not closed")]


@with_config(ConfigDict(extra="forbid"))
class AgentList(TypedDict):
    agents: list[Agent]


@with_config(ConfigDict(extra="forbid"))
class ContextMessage(TypedDict):
    """A message as a runtime reads it, from the homeserver as the agent's puppet."""

    message_id: Annotated[Uuid | None, _described("Its row; null if not indexed (yet)")]
    matrix_event_id: str
    sender_id: Annotated[str, _described("Platform id of the sender")]
    sender_matrix_id: Annotated[str, _described("Matrix id: whom to name in `mentions`")]
    sender_type: Annotated[str, _one_of("human", "agent")]
    sender_name: Annotated[str, _described("Display name in the room, else the localpart")]
    created_at: Time
    text: Annotated[
        str | None,
        _described(
            f"The full current text: edits applied, reply fallback removed, at most "
            f"{MAX_TEXT} characters; media as their label and name; null when deleted"
        ),
    ]
    html: Annotated[str | None, _described("The formatted body, if any")]
    truncated: Annotated[bool, _described(f"The text was cut at {MAX_TEXT} characters")]
    reply_to: Annotated[str | None, _described("The event it replies to")]
    thread_root: Annotated[str | None, _described("The root of its thread; null outside")]
    edited: bool
    deleted: Annotated[bool, _described("Redacted: no text")]


@with_config(ConfigDict(extra="forbid"))
class AgentContext(TypedDict):
    agent_id: Annotated[str, _matching(ids.AGENT_ID)]
    channel_id: Uuid
    matrix_room_id: str
    microdao_id: Annotated[str, _matching(ids.MICRODAO_ID)]
    message: ContextMessage
    history: Annotated[
        list[ContextMessage],
        _described("The messages before it, oldest first, ending just before it"),
    ]
