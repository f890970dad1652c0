"""send_message waits out the homeserver's 429 as long as it asks, with one transaction
id for every attempt (a plain stand-in homeserver: only the retry logic is under test)."""

from __future__ import annotations

import logging
import time

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from mautrix.appservice import AppServiceAPI
from mautrix.errors import MatrixRequestError
from yarl import URL

from daarion_bridge.matrix.puppets import send_message


async def serve(answers: list[tuple[int, dict]], seen: list[tuple[str, str, float]]):
    async def put(request: web.Request) -> web.Response:
        seen.append((request.path, request.query.get("user_id", ""), time.monotonic()))
        status, body = answers.pop(0)
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_put("/_matrix/client/v3/rooms/{room}/send/{type}/{txn}", put)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def send(server: TestServer, **kwargs) -> str:
    async with aiohttp.ClientSession() as http:
        api = AppServiceAPI(
            base_url=URL(str(server.make_url("/"))),
            bot_mxid="@bot:localhost",
            token="as-token",
            log=logging.getLogger("test"),
            state_store=None,
            client_session=http,
        )
        intent = api.bot_intent().user("@agent-sofia:localhost")
        return await send_message(intent, "!room:localhost", {"body": "hi"}, **kwargs)


async def test_429_is_retried_after_the_delay_the_homeserver_asks_for() -> None:
    seen: list[tuple[str, str, float]] = []
    limited = {"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 400}
    server = await serve([(429, limited), (200, {"event_id": "$sent"})], seen)
    try:
        assert await send(server) == "$sent"
    finally:
        await server.close()
    (first, who, t0), (second, _, t1) = seen
    assert first == second, "the same transaction id on the retry"
    assert who == "@agent-sofia:localhost"
    assert t1 - t0 >= 0.38


async def test_other_errors_and_exhausted_retries_raise() -> None:
    seen: list[tuple[str, str, float]] = []
    limited = {"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 1}
    server = await serve(
        [(429, limited), (429, limited), (403, {"errcode": "M_FORBIDDEN", "error": "no"})], seen
    )
    try:
        with pytest.raises(MatrixRequestError) as info:
            await send(server, attempts=2)
        assert info.value.errcode == "M_LIMIT_EXCEEDED"
        with pytest.raises(MatrixRequestError) as info:
            await send(server)
        assert info.value.errcode == "M_FORBIDDEN"
    finally:
        await server.close()


def test_an_agent_post_notifies_exactly_whom_it_names() -> None:
    """Without m.mentions, clients guess mentions from the text: an agent's output (an
    LLM's) would ping people by display name or @room."""
    from daarion_bridge.agents.speak import Post

    assert Post("@room Alice, done").content()["m.mentions"] == {"user_ids": []}
    named = Post("done", reply_to="$q", mentions=("@alice:localhost",)).content()
    assert named["m.mentions"] == {"user_ids": ["@alice:localhost"]}
    assert named["m.relates_to"] == {"m.in_reply_to": {"event_id": "$q"}}


def test_an_agent_post_in_a_thread_relates_as_element_sends_it() -> None:
    """Issue 17, item 3: a reply in a thread carries m.thread with the real reply."""
    from daarion_bridge.agents.speak import Post

    reply = Post("done", reply_to="$q", thread_root="$root").content()
    assert reply["m.relates_to"] == {
        "rel_type": "m.thread",
        "event_id": "$root",
        "is_falling_back": False,
        "m.in_reply_to": {"event_id": "$q"},
    }
    in_thread = Post("done", thread_root="$root").content()
    assert in_thread["m.relates_to"] == {
        "rel_type": "m.thread",
        "event_id": "$root",
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": "$root"},
    }
