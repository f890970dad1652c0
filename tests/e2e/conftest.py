"""End-to-end fixtures: one real Synapse per session, the real bridge process per module.

The registration Synapse loads is produced by the bridge's own CLI (``-g``) from a config
written for the session, so ports are chosen first, then the config and registration are
written, then Synapse starts.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from daarion_bridge.devtools.synapse import LocalSynapse, free_port
from tests.conftest import create_database
from tests.e2e.helpers import (
    BridgeProcess,
    Person,
    derive_config,
    hs_token_of,
    run_cli,
    wait_for,
    write_bridge_config,
)

if importlib.util.find_spec("synapse") is None:
    # e2e tests need matrix-synapse (the `test` extra); without it they are not collected.
    collect_ignore_glob = ["test_*.py"]

SERVER_NAME = "localhost"
BOT = f"@daarion:{SERVER_NAME}"
MICRODAO = "microdao:e2e"


@dataclass
class E2E:
    workdir: Path
    synapse: LocalSynapse
    config: Path
    registration: Path
    appservice_port: int
    database_url: str
    log_file: Path
    bot: str = BOT
    microdao: str = MICRODAO

    def new_bridge(
        self,
        name: str,
        config: Path | None = None,
        port: int | None = None,
        log_file: Path | None = None,
    ) -> BridgeProcess:
        """A bridge process (not started). ``port`` and ``log_file`` must match what
        ``config`` says when it changes them."""
        return BridgeProcess(
            config or self.config,
            self.registration,
            port or self.appservice_port,
            output=self.workdir / f"{name}.out",
            log_file=log_file or self.log_file,
        )

    def derived_config(self, name: str, edit: Callable[[Any], None]) -> Path:
        return derive_config(self.config, self.workdir / f"{name}.yaml", edit)

    @property
    def hs_token(self) -> str:
        return hs_token_of(self.config)

    async def person(self, localpart: str, admin: bool = False) -> Person:
        """Register (or log in) a person on this stack's Synapse; the caller closes it."""
        user_id, token = await self.synapse.register_user(localpart, admin=admin)
        return Person(self.synapse.base_url, user_id, token)


def _distinct_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return list(ports)


@contextlib.asynccontextmanager
async def e2e_stack(
    workdir: Path, database_url: str, default_microdao: str | None = MICRODAO
) -> AsyncIterator[E2E]:
    """A Synapse with a bridge config and registration of its own (made by the bridge's
    ``-g``), on fresh ports, in ``workdir`` (which must exist). The session has one; a
    test module whose faults would disturb other modules (restarting Synapse, say) starts
    another."""
    synapse_port, as_port = _distinct_ports(2)
    log_file = workdir / "bridge.log"
    config = write_bridge_config(
        workdir / "config.yaml",
        homeserver_url=f"http://127.0.0.1:{synapse_port}",
        appservice_port=as_port,
        database_url=database_url,
        default_microdao=default_microdao,
        log_file=log_file,
    )
    registration = workdir / "registration.yaml"
    gen = await run_cli("-g", "-c", str(config), "-r", str(registration))
    if gen.returncode != 0 or not registration.exists():
        pytest.fail(
            f"`python -m daarion_bridge -g` failed (exit {gen.returncode}):\n"
            f"{gen.stdout[-2000:]}\n{gen.stderr[-4000:]}"
        )
    synapse = LocalSynapse(
        workdir / "synapse",
        server_name=SERVER_NAME,
        port=synapse_port,
        registrations=[registration],
    )
    await synapse.start()
    print(f"\n[e2e] Synapse started in {synapse.start_seconds:.2f} s at {synapse.base_url}")
    try:
        yield E2E(workdir, synapse, config, registration, as_port, database_url, log_file)
    finally:
        await synapse.stop()


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
