"""An agent's post retried by its runtime (hardening issue, item 13): the same `txn_id`
gets the same event back, sent and counted once, and a failure after the send still
answers success. A real PostgreSQL; a stand-in homeserver that keeps transaction ids as
Synapse does (only the bridge's side is under test)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from mautrix.appservice import AppServiceAPI
from yarl import URL

from daarion_bridge.agents.speak import Post, RateLimiter, Speaker
from daarion_bridge.agents.sync import SyncReport, write_roster
from daarion_bridge.matrix.puppets import Puppets
from daarion_bridge.translate.agents import LiveDirectory
from tests.db.test_announce import ROOM, ROSTER, SOFIA, Feed, channel_with_sofia


class Homeserver:
    """Sends: the same transaction path gets the same event. Reading an event back fails
    while `broken` (the failure after the send)."""

    def __init__(self) -> None:
        self.events: dict[str, str] = {}  # transaction path -> event id
        self.sends = 0
        self.broken = True
        self.ids = itertools.count(1)

    async def send(self, request: web.Request) -> web.Response:
        assert request.query.get("user_id") == SOFIA
        self.sends += 1
        if request.path not in self.events:
            self.events[request.path] = f"$sent{next(self.ids)}"
        return web.json_response({"event_id": self.events[request.path]})

    async def get_event(self, request: web.Request) -> web.Response:
        if self.broken:
            return web.json_response({"errcode": "M_UNKNOWN", "error": "busy"}, status=500)
        raise AssertionError("not reached in these tests")


@pytest.fixture
async def homeserver() -> AsyncIterator[tuple[Homeserver, TestServer]]:
    hs = Homeserver()
    app = web.Application()
    app.router.add_put("/_matrix/client/v3/rooms/{room}/send/{type}/{txn}", hs.send)
    app.router.add_get("/_matrix/client/v3/rooms/{room}/event/{event}", hs.get_event)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield hs, server
    finally:
        await server.close()


@pytest.fixture
async def speaker(
    pool: asyncpg.Pool, homeserver: tuple[Homeserver, TestServer]
) -> AsyncIterator[Speaker]:
    feed = Feed(pool)
    async with pool.acquire() as conn, conn.transaction():
        await write_roster(conn, ROSTER, {}, SyncReport())
    await channel_with_sofia(pool, feed)
    indexed: list[str] = []

    async def index_event(txn_id: str, event: dict[str, Any]) -> None:
        indexed.append(txn_id)

    async with aiohttp.ClientSession() as http:
        api = AppServiceAPI(
            base_url=URL(str(homeserver[1].make_url("/"))),
            bot_mxid="@daarion:localhost",
            token="as-token",
            log=logging.getLogger("test"),
            state_store=None,
            client_session=http,
        )
        puppets = Puppets(api.bot_intent(), pool)
        yield Speaker(pool, puppets, LiveDirectory(ROSTER), RateLimiter(2), index_event)


async def test_a_retry_with_the_same_txn_id_is_the_same_post_counted_once(
    speaker: Speaker, homeserver: tuple[Homeserver, TestServer]
) -> None:
    hs, _ = homeserver
    # Reading the event back fails: the message is in the room, so this is a success.
    first = await speaker.post("agent:sofia", ROOM, Post("hello", txn_id="run-1"))
    assert first == (None, "$sent1")
    again = await speaker.post("agent:sofia", ROOM, Post("hello", txn_id="run-1"))
    assert again == first
    assert hs.sends == 1 and len(hs.events) == 1
    # The limit is 2 an hour: the retry was not counted, so one more post may go.
    assert (await speaker.post("agent:sofia", ROOM, Post("next", txn_id="run-2")))[1] == "$sent2"
    with pytest.raises(Exception, match="rate limit"):
        await speaker.post("agent:sofia", ROOM, Post("third", txn_id="run-3"))


async def test_the_homeserver_txn_id_names_the_agent(
    speaker: Speaker, homeserver: tuple[Homeserver, TestServer]
) -> None:
    """The homeserver keeps transaction ids per path and appservice, not per user: the
    bridge puts the agent's id in the path, so one agent's id never returns another's
    event, and a post without txn_id is always new."""
    hs, _ = homeserver
    await speaker.post("agent:sofia", ROOM, Post("a", txn_id="same"))
    await speaker.post("agent:sofia", ROOM, Post("b"))
    (path_a, path_b) = hs.events
    assert "same" in path_a and path_a != path_b
    assert path_a.rsplit("/", 1)[1].startswith("daarion-")
