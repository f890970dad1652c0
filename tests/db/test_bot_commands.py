"""Bot commands on a real PostgreSQL: which indexed messages are commands to run (new rows
of people only), and the runner's decisions and database work (link/unlink, agents,
status, refusals, failures, bounds), with a stand-in for the homeserver that records the
bot's answers. The homeserver side (invite, real answers) is in tests/e2e."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from mautrix.types import EventType

from daarion_bridge.commands import run as bot_commands
from daarion_bridge.commands.run import CommandRunner
from daarion_bridge.config import Config, NatsConfig
from daarion_bridge.ingest.ingestor import Ingestor
from daarion_bridge.translate.agents import LiveDirectory
from daarion_bridge.translate.events import NewMessage
from tests.db.conftest import make_config
from tests.db.test_agents import (
    ALICE,
    BOB,
    BOT,
    DAO,
    ROOM,
    SOFIA,
    Feed,
    apply,
    make_roster,
    member,
    raw_roster,
    setup,
    text,
)

OTHER = "microdao:other"
DEFAULT = "microdao:test"  # make_config's bridge.default_microdao
ROOM2 = "!room2:localhost"
CANARY = "canary-0f9e8d7c"


def roster_with_other() -> Any:
    raw = raw_roster()
    raw["microdaos"].append({"external_id": OTHER, "name": "Other", "owner": BOB})
    return make_roster(raw)


@pytest.fixture
async def feed(pool: asyncpg.Pool) -> Feed:
    """The roster (microDAOs core and other, three agents) and ROOM, a channel of core
    with Alice, Bob and the bot."""
    roster = roster_with_other()
    await apply(pool, roster)
    f = Feed(pool, roster, isolate=False)
    await f.send([], [setup()])
    return f


# --- which messages are commands --------------------------------------------------------


async def test_a_new_command_row_is_handed_over_once(pool: asyncpg.Pool, feed: Feed) -> None:
    events = [text("hello"), text("!daarion status"), text("!daarion help", BOB)]
    outcome = await feed.send(events, txn_id="c1")
    assert [(c.event_id, c.sender, c.command) for c in outcome.commands] == [
        (events[1]["event_id"], ALICE, "status"),
        (events[2]["event_id"], BOB, "help"),
    ]
    # Indexed like any message.
    rows = await pool.fetchval(
        "SELECT count(*) FROM messages WHERE matrix_event_id = ANY($1::text[])",
        [e["event_id"] for e in events],
    )
    assert rows == 3
    # A replay of the transaction, or the same events under a new id: nothing to run.
    assert (await feed.send(events, txn_id="c1")).commands == []
    assert (await feed.send(events, txn_id="c1-again")).commands == []


async def test_isolated_path_hands_over_commands_too(pool: asyncpg.Pool) -> None:
    roster = roster_with_other()
    await apply(pool, roster)
    slow = Feed(pool, roster, isolate=True)
    await slow.send([], [setup()])
    ev = text("!daarion agents")
    outcome = await slow.send([ev])
    assert [c.event_id for c in outcome.commands] == [ev["event_id"]]


async def test_no_commands_from_the_bot_agents_or_rooms_that_are_not_channels(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    await feed.send([member(SOFIA, "join")])
    outcome = await feed.send(
        [
            text("!daarion help", BOT),
            text("!daarion help", SOFIA),
            text("!daarion help", ALICE, room=ROOM2),
            text("!daarion help", msgtype="m.notice"),
        ]
    )
    assert outcome.commands == []


async def test_an_agent_the_config_dropped_still_gives_no_command(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    """The translate step knows today's agents; the writer also knows removed ones (by
    their rows), whose puppets must not run commands either."""
    await feed.send([member(SOFIA, "join")])
    forgetful = Feed(pool, make_roster(raw_roster(agents=[])), isolate=False)
    outcome = await forgetful.send([text("!daarion help", SOFIA)])
    assert outcome.commands == []


async def test_a_command_wakes_no_agent(pool: asyncpg.Pool, feed: Feed) -> None:
    await feed.send([member(SOFIA, "join")])
    before = await pool.fetchval("SELECT last_activity_at FROM agent_sessions")
    await feed.send([text("!daarion invite Sofia")])
    assert await pool.fetchval("SELECT last_activity_at FROM agent_sessions") == before
    await feed.send([text("Sofia, hello")])
    assert await pool.fetchval("SELECT last_activity_at FROM agent_sessions") > before


# --- the runner ---------------------------------------------------------------------------


class FakeApi:
    def __init__(self) -> None:
        self.fail: BaseException | None = None

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail is not None:
            raise self.fail
        return {"user_id": BOT}


class FakeIntent:
    def __init__(self) -> None:
        self.api = FakeApi()
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def send_message_event(
        self, room_id: str, event_type: Any, content: dict[str, Any], ensure_joined: bool = True
    ) -> str:
        # mautrix needs an EventType (a plain string fails in its power level check).
        assert isinstance(event_type, EventType) and event_type == EventType.ROOM_MESSAGE
        assert ensure_joined is False  # the bot never joins a room to answer
        self.sent.append((room_id, content))
        return f"$answer{len(self.sent)}"


class FakeBot:
    def __init__(self) -> None:
        self.intent = FakeIntent()


NOW = datetime.now(UTC)
_n = iter(range(1, 1_000_000))


def command(body: str, sender: str = ALICE, room: str = ROOM, age: float = 1) -> NewMessage:
    return NewMessage(
        room,
        f"$cmd{next(_n)}",
        sender,
        NOW - timedelta(seconds=age),
        f"!daarion {body}",
        body,
    )


def runner_for(pool: asyncpg.Pool, config: Config | None = None) -> tuple[CommandRunner, FakeBot]:
    config = config or make_config(permissions={ALICE: "admin", "localhost": "user"})
    bot = FakeBot()
    runner = CommandRunner(
        pool,
        bot,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]  (no puppets: invite is tested end to end)
        config,
        LiveDirectory(roster_with_other()),
        clock=lambda: NOW,
    )
    return runner, bot


async def ask(runner: CommandRunner, bot: FakeBot, msg: NewMessage) -> str | None:
    """Run one command; the bot's answer (a reply to it), or None when it said nothing."""
    before = len(bot.intent.sent)
    runner.submit([msg])
    await runner.wait_idle()
    answers = bot.intent.sent[before:]
    assert len(answers) <= 1, answers
    if not answers:
        return None
    room, content = answers[0]
    assert room == msg.room_id
    assert content["msgtype"] == "m.notice"
    assert content["m.relates_to"] == {"m.in_reply_to": {"event_id": msg.event_id}}
    return content["body"]


async def channel_of(pool: asyncpg.Pool, room: str = ROOM) -> tuple[str, str]:
    row = await pool.fetchrow(
        "SELECT d.external_id, c.slug FROM channels c JOIN microdaos d ON d.id = c.microdao_id "
        "WHERE c.matrix_room_id = $1",
        room,
    )
    return row["external_id"], row["slug"]


async def test_link_and_unlink_move_the_channel(pool: asyncpg.Pool, feed: Feed) -> None:
    runner, bot = runner_for(pool)
    assert await channel_of(pool) == (DAO, "room")
    answer = await ask(runner, bot, command(f"link {OTHER}"))
    assert answer == f"This room is now a channel of {OTHER}, was {DAO}; slug room."
    assert await channel_of(pool) == (OTHER, "room")
    answer = await ask(runner, bot, command("link other"))
    assert answer == f"This room is already a channel of {OTHER}; nothing changed."
    # unlink: back to bridge.default_microdao, created on first use with the bridge's bot
    # as owner: never the person who happened to run the command (issue 16, item 4).
    assert await pool.fetchval("SELECT 1 FROM microdaos WHERE external_id = $1", DEFAULT) is None
    answer = await ask(runner, bot, command("unlink"))
    assert answer == f"This room is now a channel of {DEFAULT}, was {OTHER}; slug room."
    assert await channel_of(pool) == (DEFAULT, "room")
    owner = await pool.fetchval(
        "SELECT u.matrix_id FROM microdaos d JOIN users u ON u.id = d.owner_user_id "
        "WHERE d.external_id = $1",
        DEFAULT,
    )
    assert owner == BOT
    role = await pool.fetchval(
        "SELECT m.role FROM microdao_members m JOIN users u ON u.id = m.user_id "
        "JOIN microdaos d ON d.id = m.microdao_id WHERE d.external_id = $1 AND u.matrix_id = $2",
        DEFAULT,
        ALICE,
    )
    assert role is None


async def test_link_keeps_slugs_unique_in_the_microdao(pool: asyncpg.Pool, feed: Feed) -> None:
    # Another room with the same name (so the same slug) in microDAO other.
    other_room = "!room:other.org"
    await feed.send([], [dataclasses.replace(setup(other_room), microdao_external_id=OTHER)])
    assert await channel_of(pool, other_room) == (OTHER, "room")
    runner, bot = runner_for(pool)
    answer = await ask(runner, bot, command(f"link {OTHER}"))
    assert answer is not None and "slug room-2 (its slug room was taken there)" in answer
    assert await channel_of(pool) == (OTHER, "room-2")
    assert await channel_of(pool, other_room) == (OTHER, "room")


async def test_link_refusals_change_nothing(pool: asyncpg.Pool, feed: Feed) -> None:
    runner, bot = runner_for(pool)
    assert await ask(runner, bot, command("link microdao:nowhere")) == (
        "No microDAO microdao:nowhere: declare it in the bridge's config first."
    )
    assert await ask(runner, bot, command("link Not-A-Dao")) == (
        "'Not-A-Dao' is not a microDAO id (microdao:<name>)."
    )
    # Bob is a user, not an admin.
    assert await ask(runner, bot, command(f"link {OTHER}", BOB)) == (
        "!daarion link needs the admin level; you have user."
    )
    assert await channel_of(pool) == (DAO, "room")


async def test_unlink_without_a_default_refuses(pool: asyncpg.Pool, feed: Feed) -> None:
    config = make_config(permissions={ALICE: "admin"}, default_microdao=None)
    runner, bot = runner_for(pool, config)
    answer = await ask(runner, bot, command("unlink"))
    assert answer is not None and answer.startswith("Nothing to unlink to")
    assert await channel_of(pool) == (DAO, "room")


async def test_link_announces_the_channel_update_when_nats_is_on(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    config = make_config(permissions={ALICE: "admin"})
    config = dataclasses.replace(config, nats=NatsConfig("nats://127.0.0.1:1", "S", "", 60, 60))
    runner, bot = runner_for(pool, config)
    msg = command(f"link {OTHER}")
    await ask(runner, bot, msg)
    rows = await pool.fetch(
        "SELECT subject, msg_id, payload::text AS payload FROM bridge_outbox "
        "WHERE subject = 'messaging.channel.updated'"
    )
    assert len(rows) == 1
    assert rows[0]["msg_id"] == f"messaging.channel.updated:{msg.event_id}"
    payload = json.loads(rows[0]["payload"])
    assert payload["microdao_id"] == OTHER
    assert payload["previous_microdao_id"] == DAO
    assert payload["slug"] == "room"
    assert payload["matrix_room_id"] == ROOM


async def test_agents_lists_presence_and_sessions(pool: asyncpg.Pool, feed: Feed) -> None:
    await feed.send([member(SOFIA, "join")])
    runner, bot = runner_for(pool)
    answer = await ask(runner, bot, command("agents", BOB))
    assert answer is not None
    lines = answer.splitlines()
    assert lines[0] == "Agents:"
    assert "  Sofia (agent:sofia): in this room, session active" in lines
    assert "  Prime (agent:prime): not in this room, no open session here" in lines
    assert "  Helper (agent:helper): not in this room, no open session here" in lines
    await pool.execute("UPDATE agent_sessions SET status = 'idle'")
    assert "Sofia (agent:sofia): in this room, session idle" in (
        await ask(runner, bot, command("agents", BOB)) or ""
    )


async def test_status(pool: asyncpg.Pool, feed: Feed) -> None:
    runner, bot = runner_for(pool)
    answer = await ask(runner, bot, command("status", BOB))
    assert answer is not None
    assert "Homeserver: reachable" in answer
    assert "Database: reachable" in answer
    assert "NATS: off" in answer
    assert "Outbox backlog: 0 event(s)" in answer
    bot.intent.api.fail = aiohttp.ServerDisconnectedError()
    answer = await ask(runner, bot, command("status", BOB))
    assert answer is not None and "Homeserver: NOT reachable (ServerDisconnectedError)" in answer
    assert "Database: reachable" in answer


async def test_refusals_and_unknown_commands(pool: asyncpg.Pool, feed: Feed) -> None:
    runner, bot = runner_for(pool)
    assert await ask(runner, bot, command("frobnicate")) == (
        "Unknown command 'frobnicate'. Say !daarion help for the list."
    )
    stranger = "@eve:elsewhere.org"
    answer = await ask(runner, bot, command("help", stranger))
    assert answer is not None and "may not use" in answer
    help_user = await ask(runner, bot, command("help", BOB))
    help_admin = await ask(runner, bot, command("help", ALICE))
    assert help_user and help_admin
    assert "link" not in help_user and "!daarion link <microdao>" in help_admin


async def test_stale_commands_are_answered_not_run(pool: asyncpg.Pool, feed: Feed) -> None:
    runner, bot = runner_for(pool)
    answer = await ask(runner, bot, command(f"link {OTHER}", age=600))
    assert answer is not None and answer.startswith("Not run: this command was sent 10 min ago")
    assert await channel_of(pool) == (DAO, "room")


async def test_no_answer_where_the_bot_is_not(pool: asyncpg.Pool, feed: Feed) -> None:
    runner, bot = runner_for(pool)
    assert await ask(runner, bot, command("help", room=ROOM2)) is None  # not a channel
    await feed.send([member(BOT, "leave")])
    assert await ask(runner, bot, command("help")) is None


async def test_a_failing_command_is_logged_and_answered(
    pool: asyncpg.Pool, feed: Feed, caplog: pytest.LogCaptureFixture
) -> None:
    runner, bot = runner_for(pool)
    bot.intent.api.fail = RuntimeError("boom")
    with caplog.at_level(logging.INFO, logger="daarion.commands"):
        answer = await ask(runner, bot, command("status"))
    assert answer == bot_commands.FAILED
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "boom" in str(errors[0].exc_info[1])


async def test_a_failing_answer_is_logged_not_swallowed(
    pool: asyncpg.Pool, feed: Feed, caplog: pytest.LogCaptureFixture
) -> None:
    runner, bot = runner_for(pool)

    async def broken(*args: Any, **kwargs: Any) -> str:
        raise ConnectionResetError("homeserver went away")

    bot.intent.send_message_event = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="daarion.commands"):
        runner.submit([command("help")])
        await runner.wait_idle()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and isinstance(errors[0].exc_info[1], ConnectionResetError)


async def test_pending_commands_are_bounded(
    pool: asyncpg.Pool, feed: Feed, caplog: pytest.LogCaptureFixture
) -> None:
    runner, bot = runner_for(pool)
    n = bot_commands.MAX_PENDING + 5
    with caplog.at_level(logging.WARNING, logger="daarion.commands"):
        runner.submit([command("help", BOB) for _ in range(n)])
        assert len(runner._tasks) == bot_commands.MAX_PENDING
        await runner.wait_idle()
    assert len(bot.intent.sent) == bot_commands.MAX_PENDING
    dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 5


async def test_commands_in_one_room_run_in_order(pool: asyncpg.Pool, feed: Feed) -> None:
    runner, bot = runner_for(pool)
    msgs = [command(f"link {OTHER}"), command("unlink"), command(f"link {DAO}")]
    runner.submit(msgs)
    await runner.wait_idle()
    replies = [c["m.relates_to"]["m.in_reply_to"]["event_id"] for _, c in bot.intent.sent]
    assert replies == [m.event_id for m in msgs]
    assert await channel_of(pool) == (DAO, "room")


async def test_stop_cancels_what_is_running(pool: asyncpg.Pool, feed: Feed) -> None:
    runner, bot = runner_for(pool)
    started = asyncio.Event()

    async def hang(*args: Any, **kwargs: Any) -> Any:
        started.set()
        await asyncio.sleep(3600)

    bot.intent.api.request = hang  # type: ignore[method-assign]
    runner.submit([command("status")])
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(runner.stop(), 5)
    assert not runner._tasks


async def test_command_text_is_not_logged_at_info(
    pool: asyncpg.Pool, feed: Feed, caplog: pytest.LogCaptureFixture
) -> None:
    runner, bot = runner_for(pool)
    with caplog.at_level(logging.DEBUG):
        for body in (f"invite {CANARY}", f"link {CANARY}", f"{CANARY}", f"help {CANARY}"):
            await ask(runner, bot, command(body))
            await ask(runner, bot, command(body, "@eve:elsewhere.org"))
    assert any(CANARY in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    leaked = [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]
    assert leaked and not [m for m in leaked if CANARY in m], leaked


async def test_the_transaction_does_not_wait_for_its_commands(
    pool: asyncpg.Pool, feed: Feed
) -> None:
    runner, bot = runner_for(pool)
    release = asyncio.Event()

    async def slow_homeserver(*args: Any, **kwargs: Any) -> Any:
        await release.wait()
        return {}

    bot.intent.api.request = slow_homeserver  # type: ignore[method-assign]
    config = make_config(permissions={ALICE: "admin"})
    ingestor = Ingestor(pool, None, LiveDirectory(roster_with_other()), config)  # type: ignore[arg-type]
    ingestor.on_commands = runner.submit
    ev = text("!daarion status")
    ev["origin_server_ts"] = int(time.time() * 1000)
    outcome = await asyncio.wait_for(ingestor.handle_transaction("ingest-1", [ev]), 5)
    assert [c.event_id for c in outcome.commands] == [ev["event_id"]]
    assert len(runner._tasks) == 1 and bot.intent.sent == [], "committed before the command ran"
    release.set()
    await runner.wait_idle()
    assert len(bot.intent.sent) == 1
    # The homeserver sends the transaction again: nothing runs twice.
    await ingestor.handle_transaction("ingest-1", [ev])
    await ingestor.handle_transaction("ingest-2", [ev])
    await runner.wait_idle()
    assert len(bot.intent.sent) == 1


async def test_commands_and_the_bots_answers_call_no_agent_on_nats(pool: asyncpg.Pool) -> None:
    """In a direct room (Alice alone with Sofia, and the bot) any message of Alice's
    calls Sofia; her commands and the bot's answers do not."""
    from tests.db import test_announce as an

    async with pool.acquire() as conn, conn.transaction():
        await an.write_roster(conn, an.ROSTER, {}, an.SyncReport())
    feed = an.Feed(pool)
    snapshot = an.snapshot_from_state(an.ROOM, an.state([an.ALICE, an.BOT, an.SOFIA]))
    await feed.send([], [an.ChannelSetup(snapshot, "microdao:core", an.ALICE, an.BOT)])
    await an.take(pool)

    await feed.send([an.text("hello there")])
    invokes = [p for s, p in await an.take(pool) if s == "router.invoke.agent"]
    assert [(p["agent_id"], p["entrypoint"]) for p in invokes] == [("agent:sofia", "direct")]

    notice = {"msgtype": "m.notice"}
    await feed.send(
        [
            an.text("!daarion invite Sofia"),
            an.text("!daarion agents"),
            an.text("Agents:\n  Sofia (agent:sofia): in this room", an.BOT, **notice),
        ]
    )
    subjects = [s for s, _ in await an.take(pool)]
    assert subjects == ["messaging.message.created"] * 3
    # Alice leaves: the bot is alone with Sofia, and its notices call no one either.
    await feed.send([an.member(an.ALICE, "leave")])
    await an.take(pool)
    await feed.send([an.text("Not run: this command was sent 9 min ago", an.BOT, **notice)])
    assert [s for s, _ in await an.take(pool)] == ["messaging.message.created"]
