"""Two bridges on one database behind a load balancer each see every other transaction
id. A skipped id that the other bridge committed is no sign of dropped events; one that
no bridge committed is. Real PostgreSQL; the catch-up's round itself is recorded, not
run (the homeserver is unreachable here)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from mautrix.appservice.state_store.asyncpg import PgASStateStore
from mautrix.util.async_db import Database

from daarion_bridge.ingest.catchup import CatchUp
from daarion_bridge.ingest.ingestor import Ingestor
from daarion_bridge.ingest.invites import Invites
from daarion_bridge.matrix.bot import Bot
from daarion_bridge.matrix.puppets import Puppets
from daarion_bridge.translate.agents import LiveDirectory
from tests.db.conftest import make_config

GRACE = 0.05  # seconds: the catch-up's delay, which is also the grace for skipped ids


class Bridge:
    """One bridge's ingest path and catch-up; `rounds` records the catch-up rounds it
    would run."""

    def __init__(self, pool: asyncpg.Pool, bot: Bot) -> None:
        config = make_config()
        directory = LiveDirectory(config.roster)
        invites = Invites(pool, bot, Puppets(bot.intent, pool), config, directory)
        self.rounds: list[str] = []
        self.ingestor = Ingestor(pool, invites, directory, config, on_homeserver_reset=self._sign)
        self.catch_up = CatchUp(pool, bot, self.ingestor, 600, delay_seconds=GRACE)
        self.catch_up.schedule = self.rounds.append  # type: ignore[method-assign]

    def _sign(self, sign: str, skipped: list[str]) -> None:
        self.catch_up.homeserver_sign(sign, skipped)

    async def push(self, txn_id: str) -> None:
        await self.ingestor.handle_transaction(txn_id, [])


@pytest.fixture
async def pair(pool: asyncpg.Pool, state_db: Database) -> AsyncIterator[tuple[Bridge, Bridge]]:
    async with aiohttp.ClientSession() as http:
        bot = Bot.connect(make_config(), http, PgASStateStore(state_db))
        a, b = Bridge(pool, bot), Bridge(pool, bot)
        try:
            yield a, b
        finally:
            await a.catch_up.stop()
            await b.catch_up.stop()


async def test_alternating_transactions_are_no_sign(pair: tuple[Bridge, Bridge]) -> None:
    a, b = pair
    for n in range(1, 9):
        await (a if n % 2 else b).push(str(n))
    await asyncio.sleep(GRACE * 6)
    assert (a.rounds, b.rounds) == ([], [])


async def test_an_id_no_bridge_committed_is_a_sign(
    pair: tuple[Bridge, Bridge], caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = pair
    caplog.set_level(logging.INFO, "daarion.catchup")
    await a.push("10")
    await a.push("12")  # 11 never reached this database
    await asyncio.sleep(GRACE * 6)
    assert a.rounds == ["signs of dropped events"]
    assert "transaction ids skipped from 10 to 12 (1 of them never reached this database)" in (
        caplog.text
    )


async def test_ids_that_go_back_are_a_sign_at_once(pair: tuple[Bridge, Bridge]) -> None:
    a, _ = pair
    await a.push("20")
    await a.push("3")
    assert a.rounds == ["signs of dropped events"]
