"""`daarion-bridge dead-letters list|replay` on a real database."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest
from ruamel.yaml import YAML

from daarion_bridge.config import EXAMPLE_CONFIG
from daarion_bridge.db.bookkeeping import dead_letter
from daarion_bridge.devtools.process import python_module, run_to_end
from daarion_bridge.ingest.channel_setup import ChannelSetup
from daarion_bridge.ingest.writer import write_transaction
from daarion_bridge.translate.rooms import snapshot_from_state

EXAMPLE = EXAMPLE_CONFIG
ROOM = "!room:localhost"


async def cli(config: Path, *args: str) -> str:
    """Runs the real command line; returns stdout, fails on a non-zero exit."""
    done = await run_to_end(python_module("daarion_bridge", "-c", str(config), *args))
    assert done.returncode == 0, done.stderr
    return done.stdout


ALICE = "@alice:localhost"
BOT = "@daarion:localhost"


def message(event_id: str, body: str, ts: object = 1_700_000_000_000) -> dict:
    return {
        "type": "m.room.message", "room_id": ROOM, "event_id": event_id, "sender": ALICE,
        "origin_server_ts": ts, "content": {"msgtype": "m.text", "body": body},
    }  # fmt: skip


@pytest.fixture
async def config_file(tmp_path: Path, database_url: str, pool: asyncpg.Pool) -> Path:
    raw = YAML().load(EXAMPLE.read_text())  # noqa: ASYNC240 (a small file, once)
    raw["database"]["url"] = database_url
    raw["appservice"]["as_token"], raw["appservice"]["hs_token"] = (
        "a-token-0123456789",
        "h-token-0123456789",
    )
    path = tmp_path / "config.yaml"
    with path.open("w") as fh:
        YAML().dump(raw, fh)
    state = [
        {"type": "m.room.create", "state_key": "", "sender": ALICE, "content": {}},
        {"type": "m.room.member", "state_key": ALICE, "content": {"membership": "join"}},
    ]
    setup = ChannelSetup(snapshot_from_state(ROOM, state), "microdao:core", ALICE, BOT)
    async with pool.acquire() as conn:
        await write_transaction(conn, "setup", "d", [], [setup])
        # One letter the code handles now (as after a fix), one it still cannot.
        await dead_letter(conn, "t1", message("$fixed", "back again"), "was a bug")
        await dead_letter(conn, "t2", message("$broken", "never", ts="yesterday"), "bad ts")
    return path


async def test_list_shows_each_letter_without_its_text(config_file: Path) -> None:
    lines = (await cli(config_file, "dead-letters", "list")).strip().splitlines()
    assert len(lines) == 2
    assert "$fixed" in lines[0] and "was a bug" in lines[0] and "txn t1" in lines[0]
    assert "$broken" in lines[1] and "bad ts" in lines[1]
    assert "back again" not in "".join(lines)


async def test_replay_lands_fixed_letters_once_and_keeps_the_rest(
    config_file: Path, pool: asyncpg.Pool
) -> None:
    out = await cli(config_file, "dead-letters", "replay")
    assert "replayed (applied)" in out and "still rejected" in out
    rows = await pool.fetch("SELECT matrix_event_id, content_preview FROM messages")
    assert [(r["matrix_event_id"], r["content_preview"]) for r in rows] == [
        ("$fixed", "back again")
    ]
    left = await pool.fetch("SELECT event FROM bridge_dead_letters")
    assert [json.loads(r["event"])["event_id"] for r in left] == ["$broken"]

    assert "still rejected" in await cli(config_file, "dead-letters", "replay")
    assert await pool.fetchval("SELECT count(*) FROM messages") == 1
