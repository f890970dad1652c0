"""The homeserver watch: a stretch without answers, then an answer, is reported once, with
how long it lasted; a homeserver that always answers is never reported. Against a real
HTTP server on loopback that stops answering on request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from daarion_bridge.matrix.reach import homeserver_problem, watch_homeserver


class Homeserver:
    """Answers /_matrix/client/versions, or 502 as a reverse proxy does while the
    homeserver behind it restarts."""

    def __init__(self) -> None:
        self.down = False
        self.probes = 0

    async def versions(self, request: web.Request) -> web.Response:
        self.probes += 1
        if self.down:
            return web.Response(status=502)
        return web.json_response({"versions": ["v1.11"]})


@pytest.fixture
async def homeserver() -> AsyncIterator[tuple[Homeserver, str]]:
    hs = Homeserver()
    app = web.Application()
    app.router.add_get("/_matrix/client/versions", hs.versions)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield hs, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def probes(hs: Homeserver, n: int) -> None:
    """Until the watch has probed `n` more times."""
    target = hs.probes + n
    while hs.probes < target:
        await asyncio.sleep(0.005)


async def test_away_then_back_is_reported_once_with_its_length(
    homeserver: tuple[Homeserver, str], caplog: pytest.LogCaptureFixture
) -> None:
    hs, address = homeserver
    reports: list[float] = []
    async with aiohttp.ClientSession() as http:
        watch = asyncio.create_task(watch_homeserver(http, address, reports.append, 0.01))
        try:
            await probes(hs, 3)
            assert reports == []
            hs.down = True
            await probes(hs, 5)
            assert reports == []  # not while it is away
            hs.down = False
            await probes(hs, 5)
        finally:
            watch.cancel()
    assert len(reports) == 1
    assert reports[0] > 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"The homeserver at {address} does not answer (HTTP 502)"]


async def test_a_homeserver_that_always_answers_is_never_reported(
    homeserver: tuple[Homeserver, str],
) -> None:
    hs, address = homeserver
    reports: list[float] = []
    async with aiohttp.ClientSession() as http:
        watch = asyncio.create_task(watch_homeserver(http, address, reports.append, 0.01))
        try:
            await probes(hs, 10)
        finally:
            watch.cancel()
    assert reports == []


async def test_a_closed_port_is_a_problem_named_in_words() -> None:
    async with aiohttp.ClientSession() as http:
        # Nothing listens on port 1.
        problem = await homeserver_problem(http, "http://127.0.0.1:1", timeout=2)
    assert problem is not None and "127.0.0.1:1" in problem
