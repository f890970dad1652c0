"""A test module's own index, bridge and NATS server, and the one fixture factory that
makes them module fixtures."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from daarion_bridge.devtools.bridge import BridgeProcess, file_logging
from daarion_bridge.devtools.database import create_database
from daarion_bridge.devtools.nats import LocalNats

from .stack import E2E


@dataclass
class OwnIndex:
    """A test module's own database, bridge log and config (derived from the session's),
    so its rows never reach other modules' index."""

    config: Path
    database_url: str
    log_file: Path


async def own_index(
    e2e: E2E, pg_server_url: str, name: str, edit: Callable[[Any], None]
) -> OwnIndex:
    database_url = await create_database(pg_server_url, f"e2e_{name}")
    log_file = e2e.workdir / f"bridge-{name}.log"

    def with_own_index(cfg: Any) -> None:
        cfg["database"]["url"] = database_url
        cfg["logging"] = file_logging(log_file)
        edit(cfg)

    return OwnIndex(e2e.derived_config(f"config-{name}", with_own_index), database_url, log_file)


@contextlib.asynccontextmanager
async def index_pool(index: OwnIndex, max_size: int = 4) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(index.database_url, min_size=1, max_size=max_size)
    try:
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def running_bridge(e2e: E2E, name: str, index: OwnIndex) -> AsyncIterator[BridgeProcess]:
    """The bridge on the registration's port with the module's config (stop the session's
    bridge first: only one can listen there)."""
    proc = e2e.new_bridge(f"bridge-{name}", index.config, log_file=index.log_file)
    await proc.start()
    try:
        yield proc
    finally:
        await proc.stop()


@contextlib.asynccontextmanager
async def running_nats(e2e: E2E, name: str) -> AsyncIterator[LocalNats]:
    server = LocalNats(e2e.workdir / f"nats-{name}")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# -- the fixture factory ----------------------------------------------------------------------


@dataclass(frozen=True)
class OwnFixtures:
    """Module-scoped fixtures; a module assigns the ones it uses to module-level names
    (pytest registers a fixture under the name it is found by)."""

    nats: Any  # a NATS server of the module's own
    db: Any  # a pool on the module's own index
    bridge: Any  # the bridge on the module's own index, on the registration's port


def _taking(*params: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a fixture function the parameters pytest should fill in by name."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        func.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(p, kind) for p in params]
        )
        return func

    return decorate


def own_fixtures(name: str, index: str = "stack") -> OwnFixtures:
    """The fixtures test modules with an index of their own share. ``index`` names the
    module's fixture that makes it (an :class:`OwnIndex`, or anything with its
    ``database_url``, ``config`` and ``log_file``); ``name`` tells its files apart::

        own = own_fixtures("admin")
        db, bridge = own.db, own.bridge
    """

    @_taking("e2e")
    async def nats(e2e: E2E) -> AsyncIterator[LocalNats]:
        async with running_nats(e2e, name) as server:
            yield server

    @_taking(index)
    async def db(**fixtures: Any) -> AsyncIterator[asyncpg.Pool]:
        async with index_pool(fixtures[index]) as pool:
            yield pool

    @_taking("e2e", index)
    async def bridge(e2e: E2E, **fixtures: Any) -> AsyncIterator[BridgeProcess]:
        async with running_bridge(e2e, name, fixtures[index]) as proc:
            yield proc

    module = pytest.fixture(scope="module")
    return OwnFixtures(module(nats), module(db), module(bridge))
