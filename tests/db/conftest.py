from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from mautrix.appservice.state_store.asyncpg import PgASStateStore
from mautrix.util.async_db import Database
from yarl import URL

from daarion_bridge.config import Config, parse_config
from daarion_bridge.db.database import open_database
from daarion_bridge.ingest.ingestor import Ingestor
from daarion_bridge.ingest.invites import Invites
from daarion_bridge.matrix.bot import Bot
from daarion_bridge.matrix.puppets import Puppets
from daarion_bridge.translate.agents import LiveDirectory
from daarion_bridge.web.appservice import AppserviceApi


@pytest.fixture
async def databases(database_url: str) -> AsyncIterator[tuple[Database, Database]]:
    """A fresh database migrated by the bridge's own start-up path."""
    db, state_db = await open_database(database_url)
    try:
        yield db, state_db
    finally:
        await db.stop()


@pytest.fixture
def pool(databases: tuple[Database, Database]) -> asyncpg.Pool:
    return databases[0].pool


@pytest.fixture
def state_db(databases: tuple[Database, Database]) -> Database:
    return databases[1]


HS_TOKEN = "hs-secret-token-0123456789"
ROOM = "!room:localhost"


def make_config(**bridge: Any) -> Config:
    raw = {
        # Nothing listens on port 1: the homeserver is unreachable in these tests.
        "homeserver": {"address": "http://127.0.0.1:1", "domain": "localhost"},
        "appservice": {
            "address": "http://127.0.0.1:2",
            "as_token": "as-token-0123456789",
            "hs_token": HS_TOKEN,
            "body_timeout": 1,  # seconds: the slow-client test waits this long
        },
        "bridge": {"default_microdao": "microdao:test", **bridge},
    }
    return parse_config(Path("test-config.yaml"), raw, environ={})


class Api:
    def __init__(self, client: aiohttp.ClientSession, base: URL) -> None:
        self.client = client
        self.base = base
        self.database_failures = 0

    async def put_txn(
        self, txn_id: str, body: Any, token: str | None = HS_TOKEN
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        async with self.client.put(
            self.base / f"_matrix/app/v1/transactions/{txn_id}", data=data, headers=headers
        ) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def api(pool: asyncpg.Pool, state_db: Database) -> AsyncIterator[Api]:
    config = make_config()
    async with aiohttp.ClientSession() as http:
        bot = Bot.connect(config, http, PgASStateStore(state_db))
        holder: dict[str, Api] = {}

        def failed() -> None:
            holder["api"].database_failures += 1

        directory = LiveDirectory(config.roster)
        invites = Invites(pool, bot, Puppets(bot.intent, pool), config, directory)
        ingestor = Ingestor(pool, invites, directory, config)

        async def user_exists(user_id: str) -> bool:
            return user_id == config.bot_mxid

        web_api = AppserviceApi(config, ingestor, failed, lambda: True, user_exists)
        server = TestServer(web_api.app, host="127.0.0.1")
        await server.start_server()
        try:
            holder["api"] = Api(http, server.make_url("/"))
            yield holder["api"]
        finally:
            await server.close()
