"""Agents in the config, at start: a mistake in microdaos, blueprints or agents stops the
bridge with exit code 2 and one line on stderr naming the entry, before anything is
written; -g reserves an agent's own localpart; a microDAO's space may be given by room id."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from tests.conftest import create_database
from tests.e2e.helpers import (
    CliResult,
    channel_row,
    dump_yaml,
    file_logging,
    load_yaml,
    open_channel,
    run_cli,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

D = "localhost"
BLUEPRINTS = [{"code": "cfg_bp", "model": "m"}]


def agent(external_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "external_id": external_id,
        "name": external_id.split(":")[1].title(),
        "kind": "assistant",
        "blueprint": "cfg_bp",
        **extra,
    }


@pytest.fixture(scope="module")
async def fresh_db(pg_server_url) -> str:
    return await create_database(pg_server_url, "e2e_agents_cfg")


@pytest.fixture(scope="module")
def config_with(e2e, fresh_db) -> Callable[[str, dict[str, Any]], Any]:
    """``config_with(name, lists)``: the session config on an empty database, logging to
    a file of its own, with the given microdaos/blueprints/agents lists."""

    def make(name: str, lists: dict[str, Any]):
        def edit(cfg: Any) -> None:
            cfg["database"]["url"] = fresh_db
            cfg["logging"] = file_logging(e2e.workdir / f"{name}.log")
            cfg.update(lists)

        return e2e.derived_config(name, edit)

    return make


def assert_one_line(result: CliResult, *needles: str) -> str:
    output = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 2, output
    assert "Traceback" not in result.stdout + result.stderr, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly one line on stderr\n{output}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not named in the error\n{output}"
    return lines[0]


async def test_roster_mistakes_stop_the_start_with_one_line(e2e, config_with, fresh_db):
    cases = {
        "unknown blueprint": (
            {
                "blueprints": BLUEPRINTS,
                "agents": [agent("agent:a"), agent("agent:x", blueprint="nope")],
            },
            ("agents[1] (agent:x)", "blueprint", "nope"),
        ),
        "bad kind": (
            {"blueprints": BLUEPRINTS, "agents": [agent("agent:y", kind="robot")]},
            ("agents[0] (agent:y)", "kind", "robot"),
        ),
        "duplicate external_id": (
            {"blueprints": BLUEPRINTS, "agents": [agent("agent:dup"), agent("agent:dup")]},
            ("agents[1] (agent:dup)", "duplicate", "external_id"),
        ),
        "unknown microdao": (
            {"blueprints": BLUEPRINTS, "agents": [agent("agent:m", microdao="microdao:nowhere")]},
            ("agents[0] (agent:m)", "microdao:nowhere"),
        ),
        "the bot's Matrix id": (
            {"blueprints": BLUEPRINTS, "agents": [agent("agent:bot", localpart="daarion")]},
            ("agents[0] (agent:bot)", f"@daarion:{D}"),
        ),
        "duplicate blueprint code": (
            {"blueprints": BLUEPRINTS + BLUEPRINTS, "agents": []},
            ("blueprints[1] (cfg_bp)", "duplicate"),
        ),
        "microDAO member role": (
            {
                "microdaos": [
                    {
                        "external_id": "microdao:cfg",
                        "name": "Cfg",
                        "owner": f"@o:{D}",
                        "members": {f"@m:{D}": "boss"},
                    }
                ]
            },
            ("microdaos[0] (microdao:cfg)", f"@m:{D}", "boss"),
        ),
        # A valid roster, but the loaded registration does not reserve this localpart.
        "localpart outside the registration": (
            {"blueprints": BLUEPRINTS, "agents": [agent("agent:own", localpart="own-sofia")]},
            (str(e2e.registration), "agent:own", f"@own-sofia:{D}"),
        ),
    }

    async def run(n: int, what: str) -> None:
        lists, needles = cases[what]
        config = config_with(f"config-agents-bad-{n}", lists)
        result = await run_cli("-c", str(config), "-r", str(e2e.registration))
        # A roster mistake names the config file; a registration mistake the registration.
        where = str(e2e.registration) if str(e2e.registration) in needles else str(config)
        try:
            assert_one_line(result, where, *needles)
        except AssertionError as e:
            raise AssertionError(f"{what}: {e}") from None

    await asyncio.gather(*(run(n, what) for n, what in enumerate(cases)))

    # Before anything is written: the database was never even migrated.
    conn = await asyncpg.connect(fresh_db)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    assert not tables, [t["table_name"] for t in tables]


async def test_idle_after_must_be_a_duration(e2e, config_with):
    config = config_with("config-agents-bad-idle", {})
    cfg = load_yaml(config)
    cfg["bridge"]["agent_session_idle_after"] = "soon"
    dump_yaml(cfg, config)
    result = await run_cli("-c", str(config), "-r", str(e2e.registration))
    assert_one_line(result, str(config), "bridge.agent_session_idle_after", "soon")


async def test_registration_without_the_bot_is_refused(e2e, config_with, tmp_path):
    config = config_with("config-agents-no-bot", {})
    registration = load_yaml(e2e.registration)
    bot_regex = f"^@daarion:{D}$"
    users = registration["namespaces"]["users"]
    registration["namespaces"]["users"] = [u for u in users if u["regex"] != bot_regex]
    assert len(registration["namespaces"]["users"]) == len(users) - 1, "test premise"
    partial = tmp_path / "registration-no-bot.yaml"
    dump_yaml(registration, partial)
    result = await run_cli("-c", str(config), "-r", str(partial))
    assert_one_line(result, str(partial), "the bot", f"@daarion:{D}")


async def test_generate_reserves_an_agents_own_localpart(e2e, config_with, tmp_path):
    lists = {
        "blueprints": BLUEPRINTS,
        "agents": [agent("agent:own", localpart="own-sofia"), agent("agent:plain")],
    }
    config = config_with("config-agents-own-localpart", lists)
    registration = tmp_path / "registration-own.yaml"
    result = await run_cli("-g", "-c", str(config), "-r", str(registration))
    assert result.returncode == 0, result.stderr
    users = load_yaml(registration)["namespaces"]["users"]
    assert all(u["exclusive"] for u in users)
    regexes = [u["regex"] for u in users]

    def covered(user_id: str) -> list[str]:
        return [r for r in regexes if re.match(r, user_id)]

    assert covered(f"@own-sofia:{D}"), regexes
    assert covered(f"@agent-plain:{D}") and covered(f"@daarion:{D}"), regexes
    assert len(regexes) == 3, f"one entry for the template, one for the bot, one own: {regexes}"
    for outside in (f"@own-sofia:{D}.evil.example", f"@own-sofia2:{D}", f"@xown-sofia:{D}"):
        assert not covered(outside), f"{outside} is reserved: {regexes}"


@pytest.fixture
async def space_bridge_db(pg_server_url) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    url = await create_database(pg_server_url, "e2e_agents_space")
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        yield url, pool
    finally:
        await pool.close()


async def test_space_given_by_room_id(e2e, people, space_bridge_db):
    """`space: "!id"`, the id as Element shows it. In room version 12 (Synapse's default)
    a room id is `!` and a hash, without `:server`."""
    url, db = space_bridge_db
    owner = await people("ag.cfgspace")
    space_id = await owner.create_room(
        name="E2E space by id", preset="public_chat", creation_content={"type": "m.space"}
    )
    log_file = e2e.workdir / "bridge-agents-space-id.log"

    def edit(cfg: Any) -> None:
        cfg["database"]["url"] = url
        cfg["logging"] = file_logging(log_file)
        cfg["microdaos"] = [
            {
                "external_id": "microdao:by-id",
                "name": "By Id",
                "owner": owner.user_id,
                "space": space_id,
            }
        ]

    config = e2e.derived_config("config-agents-space-id", edit)
    proc = e2e.new_bridge("bridge-agents-space-id", config, log_file=log_file)
    try:
        await proc.start()
        parent = {"type": "m.space.parent", "state_key": space_id, "content": {"via": [D]}}
        room_id, channel = await open_channel(
            db, owner, e2e.bot, "E2E under a space by id", initial_state=[parent]
        )
        microdao = await db.fetchval(
            "SELECT external_id FROM microdaos WHERE id = $1", channel["microdao_id"]
        )
        assert microdao == "microdao:by-id"
        assert (await channel_row(db, room_id))["id"] == channel["id"]
    finally:
        await proc.stop()
