"""The id shapes: what each accepts and refuses, and that their users share them."""

from __future__ import annotations

import re

import pytest

from daarion_bridge import ids
from daarion_bridge.web import openapi

CASES = [
    (ids.MICRODAO_ID, ["microdao:daarion", "microdao:a-1"], ["microdao:", "microdao:A", "dao:x"]),
    (ids.AGENT_ID, ["agent:sofia", "agent:x-2"], ["agent:", "agent:Sofia", "microdao:x"]),
    (ids.USER_EXTERNAL_ID, ["user:ivan"], ["user:", "user:Ivan", "agent:x"]),
    (ids.SLUG, ["general", "dev-ops-2"], ["", "-x", "x-", "a--b", "Big"]),
    (ids.DOMAIN, ["localhost", "example.org:8448"], ["", "a b", "x:y"]),
    (ids.LOCALPART, ["alice", "agent-sofia", "a.b_c=d/e+f-g"], ["", "Alice", "a b", "a:b"]),
    (
        ids.USER_ID,
        ["@alice:localhost", "@a-b:example.org:8448"],
        ["alice:localhost", "@Alice:localhost", "@alice", "@alice:local host"],
    ),
    (ids.ANY_USER_ID, ["@Alice:localhost", "@a+b:x.org"], ["@alice", "@a b:x", "alice:x"]),
    (ids.MXC, ["mxc://example.org/AbC_1-2"], ["http://x/y", "mxc://x/", "mxc://x/a/b"]),
    (
        ids.ROOM_OR_ALIAS,
        ["#dao:localhost", "!abc:localhost", "!hashonlyv12"],
        ["dao:localhost", "#dao", "!a b"],
    ),
]


@pytest.mark.parametrize(("shape", "good", "bad"), CASES, ids=lambda c: getattr(c, "pattern", ""))
def test_shape(shape: re.Pattern[str], good: list[str], bad: list[str]) -> None:
    assert [g for g in good if not shape.fullmatch(g)] == []
    assert [b for b in bad if shape.fullmatch(b)] == []


def test_the_openapi_document_carries_the_same_shapes() -> None:
    assert openapi.MICRODAO_ID == ids.MICRODAO_ID.pattern
    assert openapi.AGENT_ID == ids.AGENT_ID.pattern
    assert openapi.MATRIX_USER_ID == ids.USER_ID.pattern
    assert openapi.USER_EXTERNAL_ID == ids.USER_EXTERNAL_ID.pattern
    assert openapi.SLUG == ids.SLUG.pattern


def test_slugify_makes_slugs() -> None:
    from daarion_bridge.translate.rooms import slugify

    for name in ["General", "Dev & Ops!", "Кухня 2", "  --x--  "]:
        slug = slugify(name)
        assert ids.SLUG.fullmatch(slug), (name, slug)
