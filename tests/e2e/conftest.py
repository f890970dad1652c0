"""End-to-end fixtures: one real Synapse per session, the real bridge process per module.

The registration Synapse loads is produced by the bridge's own CLI (``-g``) from a config
written for the session, so ports are chosen first, then the config and registration are
written, then Synapse starts.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from tests.conftest import create_database
from tests.e2e.helpers import BridgeProcess, Person, wait_for
from tests.e2e.helpers.stack import BOT, E2E, MICRODAO, SERVER_NAME, e2e_stack

__all__ = ["BOT", "E2E", "MICRODAO", "SERVER_NAME", "e2e_stack"]  # imported from here too

if importlib.util.find_spec("synapse") is None:
    # e2e tests need matrix-synapse (the `test` extra); without it they are not collected.
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
async def e2e(tmp_path_factory: pytest.TempPathFactory, pg_server_url: str) -> AsyncIterator[E2E]:
    workdir = tmp_path_factory.mktemp("e2e")
    database_url = await create_database(pg_server_url, "e2e")
    async with e2e_stack(workdir, database_url) as stack:
        yield stack


@pytest.fixture(scope="session")
async def people(e2e: E2E) -> AsyncIterator[Callable[..., Awaitable[Person]]]:
    """``await people("alice")``: register (or log in) a person and act as their Element."""
    made: list[Person] = []

    async def make(localpart: str, admin: bool = False) -> Person:
        user_id, token = await e2e.synapse.register_user(localpart, admin=admin)
        person = Person(e2e.synapse.base_url, user_id, token)
        made.append(person)
        return person

    yield make
    for person in made:
        await person.close()


@pytest.fixture(scope="session")
async def db(e2e: E2E) -> AsyncIterator[asyncpg.Pool]:
    """The bridge's database (its schema exists once a bridge has started)."""
    pool = await asyncpg.create_pool(e2e.database_url, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="module")
async def bridge(e2e: E2E, request: pytest.FixtureRequest) -> AsyncIterator[BridgeProcess]:
    """The bridge with the session config, one process per test module."""
    name = "bridge-" + request.module.__name__.rsplit(".", 1)[-1]
    proc = e2e.new_bridge(name)
    t0 = time.monotonic()
    await proc.start()
    print(f"\n[e2e] {name} ready in {time.monotonic() - t0:.2f} s")
    try:
        yield proc
    finally:
        await proc.stop()


@pytest.fixture
def wait() -> Callable[..., Awaitable[Any]]:
    return wait_for


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Attach the bridge's output and log tail to failing e2e tests."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        funcargs = getattr(item, "funcargs", {})
        for value in funcargs.values():
            if isinstance(value, BridgeProcess):
                report.sections.append((f"bridge {value.output.name}", value.tail(80)))
                break
