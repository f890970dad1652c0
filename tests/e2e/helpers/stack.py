"""A Synapse with a bridge config and registration of its own: the session's stack, and
the one a test module that disturbs Synapse starts for itself."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from daarion_bridge.devtools.bridge import (
    BridgeProcess,
    derive_config,
    run_cli,
    write_bridge_config,
)
from daarion_bridge.devtools.people import Person
from daarion_bridge.devtools.synapse import LocalSynapse, distinct_ports

from .transactions import hs_token_of

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


@contextlib.asynccontextmanager
async def e2e_stack(
    workdir: Path,
    database_url: str,
    default_microdao: str | None = MICRODAO,
    *,
    encryption_flags: bool = True,
) -> AsyncIterator[E2E]:
    """A Synapse with a bridge config and registration of its own (made by the bridge's
    ``-g``), on fresh ports, in ``workdir`` (which must exist). The session has one; a
    test module whose faults would disturb other modules (restarting Synapse, say) starts
    another. `encryption_flags`: False starts Synapse without the experimental flags the
    bridge's encryption needs."""
    synapse_port, as_port = distinct_ports(2)
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
        encryption_flags=encryption_flags,
    )
    await synapse.start()
    print(f"\n[e2e] Synapse started in {synapse.start_seconds:.2f} s at {synapse.base_url}")
    try:
        yield E2E(workdir, synapse, config, registration, as_port, database_url, log_file)
    finally:
        await synapse.stop()
