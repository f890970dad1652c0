"""The admin API on a real listener and a real PostgreSQL, with no homeserver (nothing
listens on its port): the token, input checks, listings, platform ids, the OpenAPI
document against the routes, and every answer against the document's schemas. Rooms
and invites on a real Synapse are in tests/e2e/test_admin_api.py."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID

import aiohttp
import asyncpg
import jsonschema
import pytest
from aiohttp.test_utils import TestServer
from mautrix.appservice.state_store.asyncpg import PgASStateStore
from mautrix.util.async_db import Database
from yarl import URL

from daarion_bridge.admin.service import Admin, decode_cursor, encode_cursor
from daarion_bridge.agents.sync import SyncReport, make_bot_the_system_agent, write_roster
from daarion_bridge.config import Config, parse_config
from daarion_bridge.db import messages, sessions
from daarion_bridge.ingest.channel_setup import ChannelSetup
from daarion_bridge.ingest.ingestor import Ingestor
from daarion_bridge.ingest.invites import Invites
from daarion_bridge.matrix.bot import Bot
from daarion_bridge.matrix.puppets import Puppets
from daarion_bridge.translate.agents import LiveDirectory
from daarion_bridge.translate.rooms import snapshot_from_state
from daarion_bridge.web import openapi
from daarion_bridge.web.admin_api import AdminApi
from daarion_bridge.web.appservice import AppserviceApi

from .conftest import HS_TOKEN

TOKEN = "admin-secret-token-0123456789"
P = openapi.PREFIX
D = "localhost"
BOT = f"@daarion:{D}"
ALICE, BOB, CAROL = (f"@{n}:{D}" for n in ("alice", "bob", "carol"))
SOFIA, PRIME = f"@agent-sofia:{D}", f"@agent-prime:{D}"
CORE, OTHER = "microdao:core", "microdao:other"
_ids = itertools.count(1)
_ts = itertools.count(int(time.time() * 1000) - 3_600_000, 1000)


def config() -> Config:
    raw = {
        # Nothing listens on port 1: the homeserver is unreachable in these tests.
        "homeserver": {"address": "http://127.0.0.1:1", "domain": D},
        "appservice": {
            "address": "http://127.0.0.1:2",
            "as_token": "as-token-0123456789",
            "hs_token": HS_TOKEN,
        },
        "api": {"admin_token": TOKEN},
        "microdaos": [
            {"external_id": CORE, "name": "Core", "owner": ALICE, "members": {BOB: "member"}},
            {"external_id": OTHER, "name": "Other", "owner": BOB},
        ],
        "blueprints": [{"code": "guide", "model": "m"}],
        "agents": [
            {"external_id": "agent:sofia", "name": "Sofia", "kind": "assistant",
             "blueprint": "guide", "microdao": CORE, "owner": ALICE},
            {"external_id": "agent:prime", "name": "Prime", "kind": "system",
             "blueprint": "guide"},
        ],
    }  # fmt: skip
    return parse_config(Path("test-config.yaml"), raw, environ={})


@dataclass
class Stack:
    http: aiohttp.ClientSession
    base: URL
    pool: asyncpg.Pool
    ingestor: Ingestor
    config: Config

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> tuple[int, Any]:
        """`path` under the prefix, already URL-encoded where it must be."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if body is not None:
            data = json.dumps(body).encode()
        url = URL(str(self.base).rstrip("/") + P + path, encoded=True)
        async with self.http.request(method, url, data=data, headers=sent) as resp:
            return resp.status, await resp.json()

    async def room(self, room_id: str, microdao: str = CORE, name: str = "Room") -> UUID:
        """A channel as an accepted invite of the bot makes it."""
        state = [
            {"type": "m.room.create", "state_key": "", "sender": ALICE,
             "content": {"room_version": "12"}},
            {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "public"}},
            {"type": "m.room.name", "state_key": "", "content": {"name": name}},
            *({"type": "m.room.member", "state_key": m, "content": {"membership": "join"}}
              for m in (ALICE, BOT)),
        ]  # fmt: skip
        setup = ChannelSetup(snapshot_from_state(room_id, state), microdao, ALICE, BOT)
        outcome = await self.ingestor.write_setups(f"setup-{room_id}", [setup])
        return outcome.new_channels[0].id

    async def send(self, *events: dict[str, Any]) -> None:
        await self.ingestor.handle_transaction(f"t{next(_ids)}", list(events))


def event(room: str, sender: str, etype: str, content: Any, ts: int | None = None, **extra: Any):
    return {
        "type": etype,
        "room_id": room,
        "event_id": f"$e{next(_ids)}",
        "sender": sender,
        "origin_server_ts": next(_ts) if ts is None else ts,
        "content": content,
        **extra,
    }


def text(room: str, sender: str, body: str, ts: int | None = None) -> dict[str, Any]:
    return event(room, sender, "m.room.message", {"msgtype": "m.text", "body": body}, ts)


@pytest.fixture
async def stack(pool: asyncpg.Pool, state_db: Database) -> AsyncIterator[Stack]:
    cfg = config()
    async with pool.acquire() as conn, conn.transaction():
        await write_roster(conn, cfg.roster, {}, SyncReport())
    async with aiohttp.ClientSession() as http:
        bot = Bot.connect(cfg, http, PgASStateStore(state_db))
        directory = LiveDirectory(cfg.roster)
        puppets = Puppets(bot.intent, pool)
        ingestor = Ingestor(pool, Invites(pool, bot, puppets, cfg, directory), directory, cfg)

        async def user_exists(user_id: str) -> bool:
            return user_id == cfg.bot_mxid

        web_api = AppserviceApi(cfg, ingestor, lambda: None, lambda: True, user_exists)
        assert cfg.api.admin_token is not None
        admin = Admin(pool, bot, puppets, directory, cfg, ingestor)
        AdminApi(cfg.api.admin_token, admin, cfg.appservice.body_timeout).add_routes(web_api.app)
        server = TestServer(web_api.app, host="127.0.0.1")
        await server.start_server()
        try:
            yield Stack(http, server.make_url("/"), pool, ingestor, cfg)
        finally:
            await server.close()


# -- the document and the answers ---------------------------------------------------------------


def conforms(body: Any, path: str, method: str, status: int) -> Any:
    """Fail unless the answer matches the document's schema for this route and status."""
    operation = openapi.DOCUMENT["paths"][P + path][method.lower()]
    answer = operation["responses"][str(status)]
    if "$ref" in answer:
        answer = openapi.DOCUMENT["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    schema = answer["content"]["application/json"]["schema"]
    root = {**schema, "components": openapi.DOCUMENT["components"]}
    jsonschema.validate(body, root, cls=jsonschema.Draft202012Validator)
    return body


async def test_a_slow_body_gets_408() -> None:
    """The admin API reads a body within appservice.body_timeout, as the others do."""
    app = aiohttp.web.Application()
    AdminApi(TOKEN, None, body_timeout=0.5).add_routes(app)  # type: ignore[arg-type]
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    body = b'{"external_id": "microdao:slow", "name": "Slow", "owner": "@a:localhost"}'
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            f"POST {P}/microdaos HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=15)
        writer.close()
    finally:
        await server.close()
    assert status_line.split()[1] == b"408", status_line


def test_every_route_is_documented_and_every_documented_path_is_a_route() -> None:
    app = aiohttp.web.Application()
    AdminApi(TOKEN, None).add_routes(app)  # type: ignore[arg-type]
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.resource.canonical.startswith(P) and r.method != "HEAD"
    }
    documented = {
        (method, path)
        for path, item in openapi.DOCUMENT["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch")
    }
    assert routes == documented
    assert len(routes) == 9


def test_document_references_resolve_and_schemas_are_valid() -> None:
    text_form = json.dumps(openapi.DOCUMENT)
    refs = set(re.findall(r'"\$ref": "#/([^"]+)"', text_form))
    assert refs, "the document uses references"
    for ref in refs:
        node: Any = openapi.DOCUMENT
        for part in ref.split("/"):
            node = node[part]  # KeyError: a dangling reference
    for name, schema in openapi.DOCUMENT["components"]["schemas"].items():
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as e:
            raise AssertionError(f"schema {name}: {e.message}") from None
    assert openapi.DOCUMENT["openapi"].startswith("3.1")


async def test_openapi_is_served_without_a_token(stack: Stack) -> None:
    status, body = await stack.call("GET", "/openapi.json", token=None)
    assert status == 200
    assert body == json.loads(json.dumps(openapi.DOCUMENT))


# -- the token -----------------------------------------------------------------------------------

GUARDED = [
    ("POST", "/microdaos"),
    ("GET", "/microdaos/microdao:core"),
    ("GET", "/microdaos/microdao:core/channels"),
    ("POST", "/microdaos/microdao:core/channels"),
    ("POST", "/channels/00000000-0000-0000-0000-000000000000/invites"),
    ("GET", "/channels/00000000-0000-0000-0000-000000000000/messages"),
    ("PUT", "/users/@alice:localhost/link"),
    ("GET", "/agents"),
]


@pytest.mark.parametrize(("method", "path"), GUARDED)
async def test_every_route_needs_the_token(stack: Stack, method: str, path: str) -> None:
    body = {"external_id": "microdao:tok", "name": "x", "owner": ALICE}
    cases: list[tuple[dict[str, str], int]] = [
        ({}, 401),
        ({"Authorization": "Bearer "}, 401),
        ({"Authorization": "Bearer wrong-token"}, 403),
        ({"Authorization": f"Bearer {TOKEN}x"}, 403),
        ({"Authorization": f"Bearer {TOKEN[:-1]}"}, 403),
        ({"Authorization": f"Basic {TOKEN}"}, 403),
        ({"Authorization": TOKEN}, 403),
        ({"X-Internal-Service-Token": TOKEN}, 401),
    ]
    for headers, want in cases:
        status, answer = await stack.call(method, path, body, token=None, headers=headers)
        assert (status, "error" in answer) == (want, True), (headers, answer)
    # The token in the query string is not a credential here.
    status, _ = await stack.call(method, f"{path}?access_token={TOKEN}", body, token=None)
    assert status == 401
    # Nothing was done by the refused calls.
    assert await stack.pool.fetchval("SELECT count(*) FROM microdaos") == 2


async def test_right_token_any_case_scheme(stack: Stack) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        status, body = await stack.call(
            "GET", "/agents", token=None, headers={"Authorization": f"{scheme} {TOKEN}"}
        )
        assert status == 200, body


async def test_unknown_route_is_404_json(stack: Stack) -> None:
    status, body = await stack.call("GET", "/nothing")
    assert status == 404 and "error" in body
    status, body = await stack.call("DELETE", "/agents")
    assert status == 405


# -- microDAOs --------------------------------------------------------------------------------


async def test_create_microdao(stack: Stack) -> None:
    new = {"external_id": "microdao:7", "name": "  Seven  ", "owner": CAROL}
    status, body = await stack.call("POST", "/microdaos", new)
    assert status == 201, body
    conforms(body, "/microdaos", "POST", 201)
    row = await stack.pool.fetchrow("SELECT * FROM microdaos WHERE external_id = 'microdao:7'")
    assert row is not None and body["id"] == str(row["id"])
    assert (row["name"], body["name"], body["owner"]) == ("Seven", "Seven", CAROL)
    assert body["owner_id"] == f"matrix:{CAROL}"
    assert body["space_room_id"] is None
    owner = await stack.pool.fetchrow(
        "SELECT u.matrix_id, m.role FROM microdao_members m JOIN users u ON u.id = m.user_id "
        "WHERE m.microdao_id = $1",
        row["id"],
    )
    assert (owner["matrix_id"], owner["role"]) == (CAROL, "owner")
    assert row["owner_user_id"] == await stack.pool.fetchval(
        "SELECT id FROM users WHERE matrix_id = $1", CAROL
    )

    for ref in ("microdao:7", body["id"]):
        status, got = await stack.call("GET", f"/microdaos/{ref}")
        assert status == 200 and got == body
        conforms(got, "/microdaos/{microdao}", "GET", 200)

    status, again = await stack.call("POST", "/microdaos", new | {"name": "Other"})
    assert (status, again["field"]) == (409, "external_id")
    conforms(again, "/microdaos", "POST", 409)
    assert await stack.pool.fetchval("SELECT name FROM microdaos WHERE id = $1", row["id"]) == (
        "Seven"
    )


async def test_create_microdao_with_space_and_no_homeserver_writes_nothing(stack: Stack) -> None:
    new = {"external_id": "microdao:spaced", "name": "S", "owner": CAROL, "create_space": True}
    status, body = await stack.call("POST", "/microdaos", new)
    assert status == 503, body
    conforms(body, "/microdaos", "POST", 503)
    assert (
        await stack.pool.fetchval(
            "SELECT count(*) FROM microdaos WHERE external_id = 'microdao:spaced'"
        )
        == 0
    )


MICRODAO_BAD = [
    ({"name": "n", "owner": ALICE}, "external_id"),
    ({"external_id": "microdao:", "name": "n", "owner": ALICE}, "external_id"),
    ({"external_id": "microdao:Big", "name": "n", "owner": ALICE}, "external_id"),
    ({"external_id": "dao:7", "name": "n", "owner": ALICE}, "external_id"),
    ({"external_id": 7, "name": "n", "owner": ALICE}, "external_id"),
    ({"external_id": "microdao:" + "a" * 200, "name": "n", "owner": ALICE}, "external_id"),
    ({"external_id": "microdao:x", "owner": ALICE}, "name"),
    ({"external_id": "microdao:x", "name": "   ", "owner": ALICE}, "name"),
    ({"external_id": "microdao:x", "name": "a\x00b", "owner": ALICE}, "name"),
    ({"external_id": "microdao:x", "name": ["n"], "owner": ALICE}, "name"),
    ({"external_id": "microdao:x", "name": "n" * 256, "owner": ALICE}, "name"),
    ({"external_id": "microdao:x", "name": "n"}, "owner"),
    ({"external_id": "microdao:x", "name": "n", "owner": "alice"}, "owner"),
    ({"external_id": "microdao:x", "name": "n", "owner": "@alice"}, "owner"),
    ({"external_id": "microdao:x", "name": "n", "owner": ALICE, "create_space": "yes"},
     "create_space"),
    ({"external_id": "microdao:x", "name": "n", "owner": ALICE, "space": "!s"}, "space"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "field"), MICRODAO_BAD)
async def test_create_microdao_bad_input_names_the_field(
    stack: Stack, body: dict[str, Any], field: str
) -> None:
    status, answer = await stack.call("POST", "/microdaos", body)
    assert (status, answer.get("field")) == (400, field), answer
    conforms(answer, "/microdaos", "POST", 400)
    assert await stack.pool.fetchval("SELECT count(*) FROM microdaos") == 2


@pytest.mark.parametrize("data", [b"", b"{", b"[1]", b'"x"', b"null", b"\xff\xfe", b"[" * 5000])
async def test_body_not_an_object_is_400(stack: Stack, data: bytes) -> None:
    status, answer = await stack.call("POST", "/microdaos", data=data)
    assert status == 400 and "error" in answer, answer


async def test_body_over_64k_is_413(stack: Stack) -> None:
    body = {"external_id": "microdao:big", "name": "n" * 70_000, "owner": ALICE}
    status, answer = await stack.call("POST", "/microdaos", body)
    assert status == 413, answer


async def test_unknown_microdao_is_404(stack: Stack) -> None:
    for path in ("/microdaos/microdao:nope", "/microdaos/00000000-0000-0000-0000-000000000000"):
        status, body = await stack.call("GET", path)
        assert (status, body["field"]) == (404, "microdao")
        status, body = await stack.call("GET", path + "/channels")
        assert (status, body["field"]) == (404, "microdao")
    good = {"name": "General", "visibility": "public"}
    status, body = await stack.call("POST", "/microdaos/microdao:nope/channels", good)
    assert (status, body["field"]) == (404, "microdao")


# -- channels ---------------------------------------------------------------------------------


async def test_list_channels_of_a_microdao(stack: Stack) -> None:
    first = await stack.room("!one:localhost", CORE, "One")
    second = await stack.room("!two:localhost", CORE, "Two")
    await stack.room("!three:localhost", OTHER, "Three")
    core_id = await stack.pool.fetchval("SELECT id FROM microdaos WHERE external_id = $1", CORE)
    for ref in (CORE, str(core_id)):
        status, body = await stack.call("GET", f"/microdaos/{ref}/channels")
        assert status == 200
        conforms(body, "/microdaos/{microdao}/channels", "GET", 200)
        assert body["microdao_id"] == CORE
        assert [c["id"] for c in body["channels"]] == [str(first), str(second)]
        one = body["channels"][0]
        assert (one["name"], one["slug"], one["visibility"]) == ("One", "one", "public")
        assert (one["matrix_room_id"], one["microdao_id"]) == ("!one:localhost", CORE)
        assert one["created_by"] == f"matrix:{ALICE}"
    status, body = await stack.call("GET", "/microdaos/microdao:7/channels")
    assert status == 404


CHANNEL_BAD = [
    ({"visibility": "public"}, "name"),
    ({"name": "", "visibility": "public"}, "name"),
    ({"name": 5, "visibility": "public"}, "name"),
    ({"name": "G"}, "visibility"),
    ({"name": "G", "visibility": "secret"}, "visibility"),
    ({"name": "G", "visibility": "public", "slug": "Has Space"}, "slug"),
    ({"name": "G", "visibility": "public", "slug": "-lead"}, "slug"),
    ({"name": "G", "visibility": "public", "slug": "a--b"}, "slug"),
    ({"name": "G", "visibility": "public", "slug": "x" * 65}, "slug"),
    ({"name": "G", "visibility": "public", "topic": 1}, "topic"),
    ({"name": "G", "visibility": "public", "topic": "t" * 1001}, "topic"),
    ({"name": "G", "visibility": "public", "owner": ALICE}, "owner"),
]


@pytest.mark.parametrize(("body", "field"), CHANNEL_BAD)
async def test_create_channel_bad_input_names_the_field(
    stack: Stack, body: dict[str, Any], field: str
) -> None:
    status, answer = await stack.call("POST", f"/microdaos/{CORE}/channels", body)
    assert (status, answer.get("field")) == (400, field), answer
    conforms(answer, "/microdaos/{microdao}/channels", "POST", 400)


async def test_create_channel_slug_taken_is_409_before_the_homeserver(stack: Stack) -> None:
    await stack.room("!general:localhost", CORE, "General")
    body = {"name": "Another", "slug": "general", "visibility": "public"}
    status, answer = await stack.call("POST", f"/microdaos/{CORE}/channels", body)
    assert (status, answer["field"]) == (409, "slug"), answer
    # The slug derived from the name is checked the same way.
    status, answer = await stack.call(
        "POST", f"/microdaos/{CORE}/channels", {"name": "General", "visibility": "microdao"}
    )
    assert (status, answer["field"]) == (409, "slug"), answer
    # Another microDAO may use it (then the unreachable homeserver answers).
    status, answer = await stack.call("POST", f"/microdaos/{OTHER}/channels", body)
    assert status == 503, answer
    conforms(answer, "/microdaos/{microdao}/channels", "POST", 503)
    assert await stack.pool.fetchval("SELECT count(*) FROM channels") == 1


# -- invites ----------------------------------------------------------------------------------


async def test_invite_input_and_unknown_ids(stack: Stack) -> None:
    channel = await stack.room("!inv:localhost")
    path = f"/channels/{channel}/invites"
    for body, field in (
        ({}, "user_id"),
        ({"user_id": "alice"}, "user_id"),
        ({"user_id": "user:93"}, "user_id"),
        ({"user_id": ALICE, "role": "admin"}, "role"),
    ):
        status, answer = await stack.call("POST", path, body)
        assert (status, answer.get("field")) == (400, field), (body, answer)
        conforms(answer, "/channels/{channel}/invites", "POST", 400)
    status, answer = await stack.call("POST", path, {"user_id": "agent:nobody"})
    assert (status, answer["field"]) == (404, "user_id"), answer
    # An agent the config dropped (its row kept for history) is not a person to invite.
    await stack.pool.execute(
        "INSERT INTO agents (external_id, name, kind, matrix_id, blueprint_id) "
        "SELECT 'agent:gone', 'Gone', 'node', '@agent-gone:localhost', id FROM agent_blueprints"
    )
    for gone in ("agent:gone", "@agent-gone:localhost"):
        status, answer = await stack.call("POST", path, {"user_id": gone})
        assert (status, answer["field"]) == (404, "user_id"), answer
    for ref in ("00000000-0000-0000-0000-000000000000", quote("!none:localhost", safe="")):
        status, answer = await stack.call("POST", f"/channels/{ref}/invites", {"user_id": ALICE})
        assert (status, answer["field"]) == (404, "channel"), answer
    # A real channel and person: the homeserver is down.
    status, answer = await stack.call("POST", path, {"user_id": BOB})
    assert status == 503, answer
    status, answer = await stack.call("POST", path, {"user_id": "agent:sofia"})
    assert status == 503, answer


# -- people -----------------------------------------------------------------------------------


async def test_link_user(stack: Stack) -> None:
    path = "/users/{matrix_id}/link"
    dave = f"@dave:{D}"
    status, body = await stack.call("PUT", f"/users/{dave}/link", {"external_id": "user:93"})
    assert status == 201, body
    conforms(body, path, "PUT", 201)
    assert (body["external_id"], body["matrix_id"], body["handle"]) == ("user:93", dave, "@dave")
    row = await stack.pool.fetchrow("SELECT * FROM users WHERE matrix_id = $1", dave)
    assert (str(row["id"]), row["external_id"]) == (body["id"], "user:93")

    # Again: nothing changes; a new id replaces the old on the same row.
    status, again = await stack.call("PUT", f"/users/{dave}/link", {"external_id": "user:93"})
    assert (status, again) == (200, body)
    status, moved = await stack.call("PUT", f"/users/{dave}/link", {"external_id": "user:94"})
    assert status == 200 and (moved["id"], moved["external_id"]) == (body["id"], "user:94")

    # A person the bridge knows (a bridge-made row): that row gets the id, history kept.
    alice_id = await stack.pool.fetchval("SELECT id FROM users WHERE matrix_id = $1", ALICE)
    assert alice_id is not None
    status, linked = await stack.call(
        "PUT", f"/users/{quote(ALICE, safe='')}/link", {"external_id": "user:1"}
    )
    assert status == 200 and linked["id"] == str(alice_id), linked
    assert await stack.pool.fetchval("SELECT count(*) FROM users WHERE matrix_id = $1", ALICE) == 1
    assert (
        await stack.pool.fetchval(
            "SELECT owner_user_id FROM microdaos WHERE external_id = $1", CORE
        )
        == alice_id
    )

    # Taken by another user.
    status, taken = await stack.call("PUT", f"/users/{ALICE}/link", {"external_id": "user:94"})
    assert (status, taken["field"]) == (409, "external_id"), taken
    conforms(taken, path, "PUT", 409)
    assert await stack.pool.fetchval("SELECT external_id FROM users WHERE id = $1", alice_id) == (
        "user:1"
    )


@pytest.mark.parametrize(
    ("who", "body", "field"),
    [
        ("alice", {"external_id": "user:1"}, "matrix_id"),
        ("@Alice:localhost", {"external_id": "user:1"}, "matrix_id"),
        ("@alice:localhost", {"external_id": "user:"}, "external_id"),
        ("@alice:localhost", {"external_id": "agent:1"}, "external_id"),
        ("@alice:localhost", {"external_id": "user:Big"}, "external_id"),
        ("@alice:localhost", {}, "external_id"),
        ("@alice:localhost", {"external_id": "user:1", "x": 1}, "x"),
    ],
)
async def test_link_user_bad_input(stack: Stack, who: str, body: Any, field: str) -> None:
    status, answer = await stack.call("PUT", f"/users/{quote(who, safe='@:')}/link", body)
    assert (status, answer.get("field")) == (400, field), answer


# -- messages ---------------------------------------------------------------------------------


async def test_messages_newest_first_paged_by_cursor(stack: Stack) -> None:
    room = "!msgs:localhost"
    channel = await stack.room(room)
    await stack.room("!elsewhere:localhost")
    base = int(time.time() * 1000) - 60_000
    # 23 messages in 9 distinct instants: ties must page without gaps or repeats.
    events = [
        text(room, (ALICE, BOB)[i % 2], f"m{i}", ts=base + (i // 3) * 1000) for i in range(23)
    ]
    events.append(text("!elsewhere:localhost", ALICE, "not here"))
    await stack.send(*events)
    await stack.send(event(room, SOFIA, "m.room.member", {"membership": "join"}, state_key=SOFIA))
    await stack.send(
        event(
            room,
            SOFIA,
            "m.room.message",
            {"msgtype": "m.notice", "body": "agent says"},
            ts=base + 10_000,
        )
    )

    path = "/channels/{channel}/messages"
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        query = "?limit=7" + (f"&cursor={cursor}" if cursor else "")
        status, body = await stack.call("GET", f"/channels/{channel}/messages{query}")
        assert status == 200, body
        conforms(body, path, "GET", 200)
        assert body["channel_id"] == str(channel)
        assert len(body["messages"]) <= 7
        seen += body["messages"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert len(body["messages"]) == 7
    assert pages == 4  # 24 messages, 7 a page
    assert len(seen) == 24 and len({m["id"] for m in seen}) == 24
    rows = await stack.pool.fetch(
        "SELECT id FROM messages WHERE channel_id = $1 ORDER BY created_at DESC, id DESC", channel
    )
    assert [m["id"] for m in seen] == [str(r["id"]) for r in rows]
    newest = seen[0]
    assert (newest["content_preview"], newest["sender_type"]) == ("agent says", "agent")
    assert (newest["sender_id"], newest["sender_matrix_id"]) == ("agent:sofia", SOFIA)
    # The first instant's three come last (among themselves in id order).
    assert {m["content_preview"] for m in seen[-3:]} == {"m0", "m1", "m2"}
    m0 = next(m for m in seen if m["content_preview"] == "m0")
    assert (m0["sender_type"], m0["sender_id"]) == ("human", f"matrix:{ALICE}")
    assert m0["sender_matrix_id"] == ALICE
    assert "not here" not in {m["content_preview"] for m in seen}

    # By Matrix room id too; the default page is 50, the whole channel here.
    status, body = await stack.call("GET", f"/channels/{quote(room, safe='')}/messages")
    assert status == 200 and [m["id"] for m in body["messages"]] == [m["id"] for m in seen]
    assert body["next_cursor"] is None


async def test_messages_default_page_is_50_and_at_most_200(stack: Stack) -> None:
    room = "!many:localhost"
    channel = await stack.room(room)
    await stack.send(*(text(room, ALICE, f"n{i}") for i in range(60)))
    status, body = await stack.call("GET", f"/channels/{channel}/messages")
    assert status == 200 and len(body["messages"]) == 50 and body["next_cursor"]
    assert body["messages"][0]["content_preview"] == "n59"
    status, rest = await stack.call(
        "GET", f"/channels/{channel}/messages?cursor={body['next_cursor']}"
    )
    assert [m["content_preview"] for m in rest["messages"]] == [f"n{i}" for i in range(9, -1, -1)]
    assert rest["next_cursor"] is None
    status, body = await stack.call("GET", f"/channels/{channel}/messages?limit=200")
    assert status == 200 and len(body["messages"]) == 60


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=%C2%B2", "limit"),
        ("limit=", "limit"),
        ("limit=" + "9" * 5000, "limit"),  # past int()'s digit limit
        ("limit=" + "0" * 4999 + "7", "limit"),
        ("cursor=nonsense", "cursor"),
        ("cursor=", "cursor"),
        ("cursor=" + "A" * 300, "cursor"),
    ],
)
async def test_messages_bad_query(stack: Stack, query: str, field: str) -> None:
    channel = await stack.room("!q:localhost")
    status, body = await stack.call("GET", f"/channels/{channel}/messages?{query}")
    assert (status, body.get("field")) == (400, field), body
    conforms(body, "/channels/{channel}/messages", "GET", 400)


async def test_messages_unknown_channel(stack: Stack) -> None:
    for ref in ("00000000-0000-0000-0000-000000000000", quote("!x:localhost", safe=""), "junk"):
        status, body = await stack.call("GET", f"/channels/{ref}/messages")
        assert (status, body["field"]) == (404, "channel"), body


def test_cursor_round_trip_and_refusals() -> None:
    at = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
    row = UUID("12345678-1234-5678-1234-567812345678")
    assert decode_cursor(encode_cursor(at, row)) == (at, row)
    for bad in ("", "x", encode_cursor(at, row)[:-3], "bm9wZQ", "MS5hYmM"):
        with pytest.raises(ValueError):
            decode_cursor(bad)


async def test_history_page_uses_the_channel_time_index(stack: Stack) -> None:
    channel = await stack.room("!plan:localhost")
    before = (datetime(2026, 1, 1, tzinfo=UTC), channel)
    async with stack.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        for sql, args in (
            (messages._FIRST_PAGE, (channel, 51)),
            (messages._NEXT_PAGE, (channel, *before, 51)),
        ):
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args))
            assert "messages_channel_id_created_at_idx" in plan, plan


# -- agents -----------------------------------------------------------------------------------


async def test_agents_with_open_sessions(stack: Stack) -> None:
    room, room2 = "!ag1:localhost", "!ag2:localhost"
    one = await stack.room(room)
    two = await stack.room(room2)
    for r in (room, room2):
        await stack.send(event(r, SOFIA, "m.room.member", {"membership": "join"}, state_key=SOFIA))
    await stack.send(event(room2, SOFIA, "m.room.member", {"membership": "leave"}, state_key=SOFIA))
    async with stack.pool.acquire() as conn:
        await sessions.mark_idle(conn, 0)  # every active one idles now
    await stack.send(event(room, PRIME, "m.room.member", {"membership": "join"}, state_key=PRIME))
    # An agent the config no longer holds keeps its row (history points at it).
    await stack.pool.execute(
        "INSERT INTO agents (external_id, name, kind, matrix_id, blueprint_id) "
        "SELECT 'agent:gone', 'Gone', 'node', '@agent-gone:localhost', id FROM agent_blueprints"
    )
    await make_bot_the_system_agent(stack.pool, BOT, "DAARION")  # as every start does

    status, body = await stack.call("GET", "/agents")
    assert status == 200
    conforms(body, "/agents", "GET", 200)
    agents = {a["external_id"]: a for a in body["agents"]}
    assert list(agents) == ["agent:gone", "agent:prime", "agent:sofia", "system:daarion"]
    assert agents["agent:gone"]["configured"] is False
    bot = agents["system:daarion"]
    assert (bot["kind"], bot["matrix_id"], bot["blueprint"], bot["configured"]) == (
        "system", BOT, "daarion_system", True,
    )  # fmt: skip
    assert agents["agent:gone"]["sessions"] == []
    sofia = agents["agent:sofia"]
    assert (sofia["name"], sofia["kind"], sofia["matrix_id"]) == ("Sofia", "assistant", SOFIA)
    assert (sofia["microdao_id"], sofia["owner"], sofia["blueprint"]) == (CORE, ALICE, "guide")
    assert sofia["configured"] is True
    # Left room2: that session closed and is not listed; room1's turned idle.
    assert [(s["channel_id"], s["status"]) for s in sofia["sessions"]] == [(str(one), "idle")]
    assert sofia["sessions"][0]["matrix_room_id"] == room
    prime = agents["agent:prime"]
    assert [(s["channel_id"], s["status"]) for s in prime["sessions"]] == [(str(one), "active")]
    assert prime["microdao_id"] is None and prime["owner"] is None
    assert (
        await stack.pool.fetchval(
            "SELECT count(*) FROM agent_sessions WHERE channel_id = $1 AND status = 'closed'", two
        )
        == 1
    )
