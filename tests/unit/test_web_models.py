"""The request models (web/models.py) and the OpenAPI document made from them: a refusal
names the field and its problem, and the document's schemas accept what the models
accept. The answers on a real listener are in tests/db/test_admin_api.py."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from pydantic import AfterValidator

from daarion_bridge.web import models, openapi
from daarion_bridge.web.http import HttpError
from daarion_bridge.web.models import AgentPost, Body, NewChannel, NewInvite, NewMicrodao, parse

ALICE = "@alice:localhost"
REQUESTS: list[type[Body]] = [NewMicrodao, NewChannel, NewInvite, models.Link, AgentPost]


def refusal(model: type[Body], body: Any) -> tuple[str | None, str]:
    with pytest.raises(HttpError) as caught:
        parse(model, body)
    assert caught.value.status == 400
    return caught.value.field, caught.value.message


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ([1], None, "body must be a JSON object"),
        ({"name": "n", "owner": ALICE}, "external_id", "external_id is required"),
        ({"external_id": None, "name": "n", "owner": ALICE}, "external_id",
         "external_id is required"),
        ({"external_id": 7, "name": "n", "owner": ALICE}, "external_id",
         "external_id must be a string"),
        ({"external_id": "dao:7", "name": "n", "owner": ALICE}, "external_id",
         "external_id must be microdao:[a-z0-9-]+"),
        ({"external_id": "microdao:" + "a" * 200, "name": "n", "owner": ALICE}, "external_id",
         "external_id is longer than 128 characters"),
        ({"external_id": "microdao:x", "name": "  ", "owner": ALICE}, "name",
         "name must not be empty"),
        ({"external_id": "microdao:x", "name": "a\x00", "owner": ALICE}, "name",
         "name holds NUL or a lone surrogate"),
        ({"external_id": "microdao:x", "name": "a\ud800", "owner": ALICE}, "name",
         "name holds NUL or a lone surrogate"),
        ({"external_id": "microdao:x", "name": "n", "owner": "alice"}, "owner",
         "owner must be a Matrix user id"),
        ({"external_id": "microdao:x", "name": "n", "owner": ALICE, "create_space": 1},
         "create_space", "create_space must be true or false"),
        ({"external_id": "microdao:x", "name": "n", "owner": ALICE, "create_space": None},
         "create_space", "create_space must be true or false"),
        # Unknown fields first, whatever else is wrong; then the fields in their order.
        ({"owner": 5, "space": "!s", "external_id": 5}, "space", "unknown field space"),
        ({"owner": 5, "name": 5}, "external_id", "external_id is required"),
    ],
)  # fmt: skip
def test_a_refusal_names_the_field_and_its_problem(body: Any, field: str, message: str) -> None:
    assert refusal(NewMicrodao, body) == (field, message)


def test_strings_are_trimmed_and_null_is_left_out() -> None:
    new = parse(NewChannel, {"name": "  General ", "visibility": " public ", "slug": None})
    assert (new.name, new.visibility, new.slug, new.topic) == ("General", "public", None, None)
    assert refusal(NewChannel, {"name": "G", "visibility": "secret"}) == (
        "visibility",
        "visibility must be public, microdao or private",
    )
    assert refusal(NewInvite, {"user_id": "user:1"}) == (
        "user_id",
        "user_id must be a Matrix user id or an agent id (agent:x)",
    )
    # The agent's text is kept as written, but must say something.
    post = parse(AgentPost, {"channel_id": "c", "text": " hi "})
    assert post.text == " hi "
    assert refusal(AgentPost, {"channel_id": "c", "text": "  "}) == (
        "text",
        "text must be a non-empty string",
    )
    assert refusal(AgentPost, {"channel_id": "c", "text": "t", "reply_to": "e1"}) == (
        "reply_to",
        "reply_to must be a Matrix event id ($...)",
    )
    assert refusal(AgentPost, {"channel_id": "c", "text": "t", "thread_root": "r"}) == (
        "thread_root",
        "thread_root must be a Matrix event id ($...)",
    )
    assert parse(AgentPost, {"channel_id": "c", "text": "t", "thread_root": "$r"}).thread_root


def test_an_agent_post_names_whom_it_notifies() -> None:
    post = parse(AgentPost, {"channel_id": "c", "text": "hi", "mentions": [ALICE]})
    assert post.mentions == [ALICE]
    mentions_refused = ("mentions", "mentions must be a list of at most 50 Matrix user ids")
    for bad in (["alice"], ALICE, [ALICE] * 51):
        body = {"channel_id": "c", "text": "hi", "mentions": bad}
        assert refusal(AgentPost, body) == mentions_refused, bad


def _shaped(schema: dict[str, Any]) -> bool:
    """Whether a property's schema constrains the shape beyond type and length."""
    options = schema.get("anyOf", [schema])
    return any("pattern" in o or "enum" in o for o in [schema, *options])


@pytest.mark.parametrize("model", REQUESTS)
def test_every_shaped_field_says_what_it_must_be(model: type[Body]) -> None:
    """A problem no generic words fit (a pattern, a choice, a check of the field's own)
    says "{field} must be {shape}": never pydantic's own text."""
    properties = model.model_json_schema()["properties"]
    for name, info in model.model_fields.items():
        own_check = any(isinstance(m, AfterValidator) for m in info.metadata)
        if own_check or _shaped(properties[name]):
            assert name in model.shapes, f"{model.__name__}.{name} has no shape in words"


VALID: list[tuple[type[Body], dict[str, Any]]] = [
    (NewMicrodao, {"external_id": "microdao:7", "name": "Seven", "owner": ALICE}),
    (NewMicrodao, {"external_id": "microdao:7", "name": "S", "owner": ALICE, "create_space": True}),
    (NewChannel, {"name": "G", "visibility": "microdao", "slug": "g-1", "topic": "t"}),
    (NewChannel, {"name": "G", "visibility": "private", "slug": None}),
    (NewInvite, {"user_id": ALICE}),
    (NewInvite, {"user_id": "agent:sofia"}),
    (models.Link, {"external_id": "user:93"}),
]
INVALID: list[tuple[type[Body], Any]] = [
    (NewMicrodao, {"external_id": "microdao:Big", "name": "n", "owner": ALICE}),
    (NewMicrodao, {"external_id": "microdao:x", "name": "", "owner": ALICE}),
    (NewMicrodao, {"external_id": "microdao:x", "name": "n" * 256, "owner": ALICE}),
    (NewMicrodao, {"external_id": "microdao:x", "name": "n", "owner": "@Alice:x"}),
    (NewMicrodao, {"external_id": "microdao:x", "name": "n", "owner": ALICE, "x": 1}),
    (NewMicrodao, {"external_id": "microdao:x", "name": "n", "owner": ALICE, "create_space": 1}),
    (NewChannel, {"name": "G", "visibility": "secret"}),
    (NewChannel, {"name": "G", "visibility": "public", "slug": "a--b"}),
    (NewChannel, {"name": "G", "visibility": "public", "slug": "x" * 65}),
    (NewChannel, {"name": "G", "visibility": "public", "topic": 1}),
    (NewChannel, {"visibility": "public"}),
    (NewInvite, {"user_id": "user:1"}),
    (NewInvite, {}),
    (models.Link, {"external_id": "agent:1"}),
    (models.Link, {"external_id": None}),
    (models.Link, [1]),
]


def _document_accepts(model: type[Body], body: Any) -> bool:
    root = {"$ref": f"#/components/schemas/{model.__name__}"} | {
        "components": openapi.DOCUMENT["components"]
    }
    return bool(jsonschema.Draft202012Validator(root).is_valid(body))


@pytest.mark.parametrize(("model", "body"), VALID + INVALID)
def test_the_document_accepts_what_the_model_accepts(model: type[Body], body: Any) -> None:
    try:
        parse(model, body)
        accepted = True
    except HttpError:
        accepted = False
    assert accepted == ((model, body) in VALID)
    assert _document_accepts(model, body) == accepted, body


def test_every_body_the_routes_read_is_in_the_document() -> None:
    documented = openapi.DOCUMENT["components"]["schemas"]
    for op in openapi.OPERATIONS:
        if op.body is not None:
            item = openapi.DOCUMENT["paths"][openapi.PREFIX + op.path][op.method.lower()]
            schema = item["requestBody"]["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{op.body.__name__}"}
            assert op.body.__name__ in documented
