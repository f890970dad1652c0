"""The processes under test: PostgreSQL, Synapse (only to create channels) and the bridge.

Reuses the harness of the dev mode and the end-to-end tests (``daarion_bridge.devtools``:
config writing, ``-g``, the bridge process, people acting over the client API, scratch
databases) and ``LocalSynapse``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
from yarl import URL

from daarion_bridge.db.embedded import EmbeddedPostgres
from daarion_bridge.devtools.bridge import (
    BridgeProcess,
    derive_config,
    file_logging,
    load_yaml,
    run_cli,
    write_bridge_config,
)
from daarion_bridge.devtools.database import create_database
from daarion_bridge.devtools.people import Person, open_channel
from daarion_bridge.devtools.synapse import LocalSynapse, distinct_ports

SERVER_NAME = "localhost"
BOT = f"@daarion:{SERVER_NAME}"
MICRODAO = "microdao:bench"
OWNER = "bench-owner"
OWNER_ID = f"@{OWNER}:{SERVER_NAME}"
BLUEPRINT = "bench_assistant"
AGENT_NAMES = (
    "Sofia Helion Atlas Nova Orion Mira Kai Luma Vega Juno Iris Taras Olena Bohdan Zoryana"
    " Marko Dana Ostap Lesia Yarema"
).split()
ROOMS_WITH_AGENTS = 0.6  # share of the rooms the owner invites agents into (1 to 3 each)


def agent_name(i: int) -> str:
    """Agents' display names: people's names, some sharing a first word (Sofia, Sofia 2)."""
    base = AGENT_NAMES[i % len(AGENT_NAMES)]
    return base if i < len(AGENT_NAMES) else f"{base} {i // len(AGENT_NAMES) + 1}"


def bench_roster(agents: int) -> dict[str, Any]:
    """The config's microDAO, blueprint and agents: the owner owns them all, so the
    puppets accept the owner's invites into any room."""
    return {
        "microdaos": [{"external_id": MICRODAO, "name": "Bench", "owner": OWNER_ID}],
        "blueprints": [{"code": BLUEPRINT, "model": "gpt-4.1", "description": "benchmark"}],
        "agents": [
            {
                "external_id": f"agent:bench-{i}",
                "name": agent_name(i),
                "kind": "assistant",
                "blueprint": BLUEPRINT,
                "microdao": MICRODAO,
                "owner": OWNER_ID,
            }
            for i in range(agents)
        ],
    }


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Postgres:
    """The embedded server in the work dir, or the server of ``--database-url``."""

    def __init__(self, workdir: Path, url: str | None, conf_lines: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.given_url = url
        self.conf_lines = list(conf_lines)  # postgresql.conf lines for the embedded server
        self.embedded: EmbeddedPostgres | None = None
        self.server_url = ""
        self.created: list[str] = []

    async def start(self) -> str:
        if self.given_url:
            self.server_url = self.given_url
            return self.server_url
        self.embedded = EmbeddedPostgres(self.workdir / "postgres")
        self.server_url = await self.embedded.start()
        if self.conf_lines:  # the data dir exists only now: set, then start again
            await self.embedded.stop()
            with (self.workdir / "postgres" / "postgresql.conf").open("a") as conf:
                conf.write("\n# bench.ingest --pg-setting\n" + "\n".join(self.conf_lines) + "\n")
            self.server_url = await self.embedded.start()
        return self.server_url

    async def new_database(self, prefix: str) -> str:
        url = await create_database(self.server_url, prefix)
        self.created.append(url)
        return url

    async def settings(self) -> dict[str, str]:
        conn = await asyncpg.connect(self.server_url)
        try:
            names = (
                "server_version",
                "shared_buffers",
                "work_mem",
                "synchronous_commit",
                "fsync",
                "wal_level",
                "max_wal_size",
                "checkpoint_timeout",
            )
            return {n: await conn.fetchval(f"SHOW {n}") for n in names}
        finally:
            await conn.close()

    async def stop(self, keep: bool) -> None:
        if self.embedded is not None:
            await self.embedded.stop()
        elif not keep and self.created:
            conn = await asyncpg.connect(self.server_url)
            try:
                for url in self.created:
                    name = URL(url).path.lstrip("/")
                    with contextlib.suppress(asyncpg.PostgresError):
                        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()


@dataclass
class Stack:
    """Synapse + the bridge process on a fresh database; channels made the bridge's way."""

    workdir: Path
    database_url: str
    synapse: LocalSynapse | None = None
    bridge: BridgeProcess | None = None
    hs_token: str = ""
    as_port: int = 0
    metrics_port: int = 0
    rooms: list[str] = field(default_factory=list)
    owner_id: str = ""
    nats_url: str = ""  # with NATS on, every change also goes through the outbox
    agents: int = 0  # agents declared in the config
    # room id -> (Matrix id, name) of the agents that joined it
    agents_in_rooms: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    owner: Person | None = None  # @bench-owner over the client API, while Synapse runs
    _people: list[Person] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.as_port}"

    async def start(self) -> None:
        synapse_port, self.as_port, self.metrics_port = distinct_ports(3)
        log_file = self.workdir / "bridge.log"
        config = write_bridge_config(
            self.workdir / "config.yaml",
            homeserver_url=f"http://127.0.0.1:{synapse_port}",
            appservice_port=self.as_port,
            database_url=self.database_url,
            default_microdao=MICRODAO,
            log_file=log_file,
        )

        def production_like(cfg: Any) -> None:
            cfg["logging"] = file_logging(log_file, "INFO")  # the e2e harness logs DEBUG
            cfg["metrics"]["enabled"] = True  # to read the server-side transaction time
            cfg["metrics"]["listen"] = f"127.0.0.1:{self.metrics_port}"
            if self.nats_url:
                cfg["nats"] = {"url": self.nats_url, "stream": "BENCH"}
            if self.agents:
                cfg.update(bench_roster(self.agents))

        derive_config(config, config, production_like)
        registration = self.workdir / "registration.yaml"
        gen = await run_cli("-g", "-c", str(config), "-r", str(registration))
        if gen.returncode != 0:
            raise RuntimeError(f"`daarion_bridge -g` failed: {gen.stderr[-2000:]}")
        self.hs_token = str(load_yaml(config)["appservice"]["hs_token"])
        self.synapse = LocalSynapse(
            self.workdir / "synapse",
            server_name=SERVER_NAME,
            port=synapse_port,
            registrations=[registration],
        )
        await self.synapse.start()
        say(f"Synapse up in {self.synapse.start_seconds:.1f} s")
        self.bridge = BridgeProcess(
            config,
            registration,
            self.as_port,
            output=self.workdir / "bridge.out",
            log_file=log_file,
        )
        await self.bridge.start(timeout=60)
        say(f"bridge up in {self.bridge.start_seconds[-1]:.1f} s (pid {self.bridge_pid})")

    @property
    def config(self) -> Path:
        assert self.bridge is not None
        return self.bridge.config

    @property
    def bridge_pid(self) -> int:
        assert self.bridge is not None and self.bridge.proc is not None
        return self.bridge.proc.pid

    async def create_channels(self, n: int, parallel: int = 8, seed: int = 1) -> list[str]:
        """n rooms created over the client API, the bot invited; returns once every room
        has its channels row (written by the bridge from Synapse's pushes). With agents
        in the config, some of them are then invited into some rooms."""
        assert self.synapse is not None
        user_id, token = await self.synapse.register_user(OWNER)
        owner = self.owner = Person(self.synapse.base_url, user_id, token)
        self._people.append(owner)
        self.owner_id = user_id
        sem = asyncio.Semaphore(parallel)
        done = 0
        t0 = time.monotonic()
        pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=parallel)
        try:

            async def one(i: int) -> str:
                nonlocal done
                async with sem:
                    room_id, _ = await open_channel(pool, owner, BOT, f"bench {i:05d}", timeout=120)
                done += 1
                if done % 25 == 0 or done == n:
                    say(f"channels: {done}/{n} ({time.monotonic() - t0:.0f} s)")
                return room_id

            self.rooms = list(await asyncio.gather(*(one(i) for i in range(n))))
            if self.agents:
                await self._invite_agents(owner, pool, sem, seed)
        finally:
            await pool.close()
        return self.rooms

    async def _invite_agents(
        self, owner: Person, pool: asyncpg.Pool, sem: asyncio.Semaphore, seed: int
    ) -> None:
        """The owner invites 1 to 3 agents (a few busy ones, a long tail) into some rooms;
        returns once each puppet has joined and the bridge has its member row."""
        agents = {
            r["matrix_id"]: r["name"]
            for r in await pool.fetch("SELECT matrix_id, name FROM agents ORDER BY external_id")
        }
        rng = random.Random(seed)
        mxids = sorted(agents)
        weights = [1 / (i + 1) for i in range(len(mxids))]
        for room in self.rooms:
            if rng.random() < ROOMS_WITH_AGENTS:
                picked: set[str] = set()
                for _ in range(rng.randint(1, 3)):
                    picked.add(rng.choices(mxids, weights=weights)[0])
                self.agents_in_rooms[room] = [(m, agents[m]) for m in sorted(picked)]

        async def invite(room: str, agent: str) -> None:
            async with sem:
                await owner.invite(room, agent)

        pairs = [(room, m) for room, found in self.agents_in_rooms.items() for m, _ in found]
        t0 = time.monotonic()
        await asyncio.gather(*(invite(room, m) for room, m in pairs))
        joined = 0
        while joined < len(pairs):
            if time.monotonic() - t0 > 120:
                raise RuntimeError(f"only {joined} of {len(pairs)} agent joins were indexed")
            await asyncio.sleep(0.5)
            joined = await pool.fetchval(
                "SELECT count(*) FROM channel_members m JOIN channels c ON c.id = m.channel_id "
                "WHERE m.member_agent_id IS NOT NULL AND m.left_at IS NULL "
                "AND c.matrix_room_id = ANY($1::text[])",
                self.rooms,
            )
        say(
            f"agents: {len(pairs)} joins in {len(self.agents_in_rooms)} rooms "
            f"({time.monotonic() - t0:.0f} s)"
        )

    async def stop_synapse(self) -> None:
        """Stop Synapse so none of its own pushes can overlap the measured transactions;
        then wait until the bridge has finished whatever Synapse had in flight."""
        for person in self._people:
            await person.close()
        if self.synapse is not None:
            await self.synapse.stop()
        await self.settled()

    async def settled(self) -> None:
        """Returns once ``bridge_transactions`` stops changing: the bridge has taken in
        what Synapse had for it."""
        conn = await asyncpg.connect(self.database_url)
        try:
            last = None
            while True:
                now = await conn.fetchval("SELECT count(*) FROM bridge_transactions")
                if now == last:
                    break
                last = now
                await asyncio.sleep(1.0)
        finally:
            await conn.close()

    async def measure_restart(self, roster: dict[str, Any]) -> dict[str, float]:
        """Restart the bridge on the filled database with `roster` (blueprints, microDAOs
        and agents) added to its config, and Synapse up again for its start-up checks:
        wall time from spawn to /ready 200, and the bridge's own figure (from opening the
        database to ready, without the interpreter's start)."""
        assert self.synapse is not None and self.bridge is not None

        def with_roster(cfg: Any) -> None:
            for key, entries in roster.items():  # after the benchmark's own
                cfg[key] = [*(cfg.get(key) or []), *entries]

        derive_config(self.bridge.config, self.bridge.config, with_roster)
        await self.synapse.start()
        log_file = self.workdir / "bridge.log"
        offset = log_file.stat().st_size if log_file.exists() else 0
        await self.bridge.restart(timeout=120)
        wall = self.bridge.start_seconds[-1]
        text = log_file.read_text(encoding="utf-8", errors="replace")[offset:]
        match = re.search(r"Bridge ready in ([0-9.]+) s", text)
        await self.stop_synapse()
        return {
            "spawn_to_ready_s": round(wall, 2),
            "bridge_ready_s": float(match.group(1)) if match else -1.0,
        }

    async def metrics(self) -> dict[str, float]:
        """The bridge's Prometheus counters that say where a transaction's time went."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            text = await resp.text()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("daarion_bridge_") and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    async def stop(self) -> None:
        for person in self._people:
            await person.close()
        if self.bridge is not None:
            await self.bridge.stop()
        if self.synapse is not None:
            await self.synapse.stop()


def rss(pid: int) -> dict[str, int]:
    """Resident set size now, and its peak (VmHWM) over the process's life, in bytes: of
    the bridge and its publisher process (NATS on), added up."""
    out = {"rss": 0, "peak": 0}
    bridge = psutil.Process(pid)
    for proc in [bridge, *bridge.children()]:
        with contextlib.suppress(psutil.Error, OSError):
            out["rss"] += proc.memory_info().rss
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out["peak"] += int(line.split()[1]) * 1024
    return out


class CpuMeter:
    """CPU seconds of the bridge (with its publisher process, when NATS is on) and of the
    PostgreSQL server (postmaster and all its children: backends, WAL writer,
    checkpointer, autovacuum) over a phase."""

    def __init__(self, bridge_pid: int, postmaster_pid: int | None) -> None:
        self.bridge = psutil.Process(bridge_pid)
        self.postmaster = psutil.Process(postmaster_pid) if postmaster_pid else None
        self.t0 = 0.0
        self.driver0 = 0.0
        self.bridge0 = 0.0
        self.pg0: float | None = None
        self.busy0 = 0.0

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        t = proc.cpu_times()
        return t.user + t.system

    def _pg(self) -> float | None:
        """Postmaster and live children, plus children that exited (reaped by the
        postmaster, so in its children_* times): asyncpg's pool replaces a connection
        after 50,000 queries, so backends do come and go during a phase."""
        if self.postmaster is None:
            return None
        t = self.postmaster.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for proc in self.postmaster.children():
            with contextlib.suppress(psutil.Error):
                total += self._cpu(proc)
        return total

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()  # guest time is already in user; iowait is idle
        return sum(
            getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal")
        )

    def _bridge(self) -> float:
        total = self._cpu(self.bridge)
        for proc in self.bridge.children():
            with contextlib.suppress(psutil.Error):
                total += self._cpu(proc)
        return total

    def start(self) -> None:
        self.busy0 = self._busy()
        self.t0 = time.perf_counter()
        self.driver0 = time.process_time()
        self.bridge0 = self._bridge()
        self.pg0 = self._pg()

    def stop(self) -> dict[str, float | None]:
        wall = time.perf_counter() - self.t0
        pg1 = self._pg()
        pg = pg1 - self.pg0 if pg1 is not None and self.pg0 is not None else None
        bridge = self._bridge() - self.bridge0
        driver = time.process_time() - self.driver0
        busy = self._busy() - self.busy0
        return {
            "wall_s": wall,
            "bridge_cpu_s": bridge,
            "postgres_cpu_s": pg,
            "driver_cpu_s": driver,
            # everything else on the machine (other jobs, the kernel's share): interference
            "other_cpu_s": busy - bridge - driver - (pg or 0.0),
            "machine_cpu_capacity_s": wall * (psutil.cpu_count() or 1),
        }


async def postmaster_pid(database_url: str) -> int | None:
    """The server's postmaster, when it runs on this machine and psutil may see it."""
    conn = await asyncpg.connect(database_url)
    try:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        parent = psutil.Process(backend).parent()  # while the backend still lives
    except psutil.Error:
        return None
    finally:
        await conn.close()
    return parent.pid if parent is not None else None


async def db_stats(conn: asyncpg.Connection) -> dict[str, int]:
    """This database's counters, and the server's WAL and checkpoints: at size, full-page
    images after a checkpoint are much of what an insert costs."""
    row = await conn.fetchrow(
        "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted, tup_fetched, "
        "tup_returned, blks_read, blks_hit FROM pg_stat_database WHERE datname = "
        "current_database()"
    )
    checkpoints = (
        "SELECT num_timed + num_requested FROM pg_stat_checkpointer"
        if conn.get_server_version().major >= 17
        else "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
    )
    wal = await conn.fetchrow(
        "SELECT wal_records, wal_fpi, wal_bytes::bigint AS wal_bytes, "
        f"({checkpoints}) AS checkpoints FROM pg_stat_wal"
    )
    return {**dict(row), **dict(wal)}


async def wait_stats_flushed(conn: asyncpg.Connection) -> None:
    # An idle backend publishes its pending counters after PGSTAT_IDLE_INTERVAL (10 s).
    await asyncio.sleep(11)
    await conn.execute("SELECT pg_stat_clear_snapshot()")


def make_workdir(keep: bool) -> Path:
    path = Path(tempfile.mkdtemp(prefix="daarion-bench-"))
    os.chmod(path, 0o755)  # the embedded server runs as another user when we are root
    if not keep:
        import atexit

        atexit.register(shutil.rmtree, path, True)
    return path
