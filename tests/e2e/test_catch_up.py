"""Catch-up: the bridge reads recently active rooms back from Synapse and indexes what
Synapse never pushed to it.

Losses are made deterministic: a proxy on the registration's URL forwards Synapse's
requests to the real bridge (listening on a port of its own) or, while it swallows,
answers every push 200 and stores nothing, so Synapse counts those events as delivered
and never pushes them again. Only a catch-up can then bring them into the index.

- at start: messages, an edit and a redaction swallowed while no bridge runs; a bridge
  started on the same database indexes them all ("Catch-up after start");
- on a homeserver restart signal: while the bridge runs, a few pushes are swallowed,
  then a transaction id lower than the last one the bridge committed arrives, as from a
  restarted Synapse; the bridge catches up ("Catch-up after signs of dropped events");
- with `bridge.catch_up_window: 0` neither happens;
- room state too: a leave, a join, a rename and a join rule change swallowed while no
  bridge runs are applied from the room's current state at the next start.

The module runs a Synapse of its own (a proxy must own the registration's URL) and each
test a database of its own, so a catch-up reads back exactly the test's one room.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from daarion_bridge.devtools.synapse import free_port
from tests.conftest import create_database
from tests.e2e.conftest import E2E, e2e_stack
from tests.e2e.helpers import (
    DELETED,
    BridgeProcess,
    CatchUpRound,
    IndexReport,
    Person,
    RecordingProxy,
    assert_report_clean,
    catch_up_rounds,
    index_report,
    member_row,
    open_channel,
    put_transaction,
    wait_for,
    wait_indexed,
)
from tests.e2e.test_faults_synapse import HomeserverFront

pytestmark = pytest.mark.e2e

LOST = 12  # messages swallowed at start
CATCH_UP_DELAY = 2.0  # the bridge waits this long after a trigger before reading history
RECOVERY_TIMEOUT = 20.0  # seconds allowed from the trigger to a complete index


class SwallowingProxy(RecordingProxy):
    """On the registration's URL: forwards to the bridge it is aimed at, or, while
    ``swallow`` is set, answers every request 200 and drops the pushed events."""

    def __init__(self, port: int) -> None:
        super().__init__(port, target_port=0)
        self.swallow = False
        self.swallowed: set[str] = set()

    def aim(self, bridge: BridgeProcess) -> None:
        self.target = f"http://127.0.0.1:{bridge.port}"

    async def _forward(self, request: web.Request) -> web.Response:
        if not self.swallow:
            return await super()._forward(request)
        if request.method == "PUT" and "/transactions/" in request.path:
            body = await request.json()
            self.swallowed.update(e.get("event_id") for e in body.get("events", []))
        return web.json_response({})

    def committed_numeric_ids(self, since: int = 0) -> list[int]:
        """Numeric transaction ids the bridge answered 200 (pushes from ``since`` on)."""
        return [int(t) for t, _, status in self.pushes[since:] if t.isdigit() and status == 200]


@pytest.fixture(scope="module")
async def stack(tmp_path_factory, pg_server_url) -> AsyncIterator[E2E]:
    database_url = await create_database(pg_server_url, "catchup")
    async with e2e_stack(tmp_path_factory.mktemp("catch-up"), database_url) as s:
        yield s


@pytest.fixture(scope="module")
async def proxy(stack: E2E) -> AsyncIterator[SwallowingProxy]:
    proxy = SwallowingProxy(stack.appservice_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


@pytest.fixture
async def own_db(pg_server_url) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """A database for this test's bridges: a catch-up reads back only this test's room."""
    url = await create_database(pg_server_url, "catchup")
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        yield url, pool
    finally:
        await pool.close()


def real_bridge(
    stack: E2E,
    name: str,
    database_url: str,
    catch_up_window: float | None = None,
    homeserver_address: str | None = None,
) -> BridgeProcess:
    """A bridge (not started) on a port of its own, with a log file of its own."""
    port = free_port()
    while port == stack.appservice_port:
        port = free_port()
    log_file = stack.workdir / f"{name}.log"

    def edit(cfg: Any) -> None:
        cfg["appservice"]["port"] = port
        cfg["database"]["url"] = database_url
        cfg["logging"]["handlers"]["file"]["filename"] = str(log_file)
        if catch_up_window is not None:
            cfg["bridge"]["catch_up_window"] = catch_up_window
        if homeserver_address is not None:
            cfg["homeserver"]["address"] = homeserver_address

    config = stack.derived_config(f"config-{name}", edit)
    return stack.new_bridge(name, config, port=port, log_file=log_file)


def log_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


async def wait_matches_history(
    db: asyncpg.Pool,
    reader: Person,
    room_id: str,
    channel_id: Any,
    sent: dict[str, tuple[str, str]],
    timeout: float = RECOVERY_TIMEOUT,
) -> tuple[IndexReport, float]:
    """Poll the shared history check until the index matches the room's history (then
    assert it clean) or ``timeout`` passes (then fail naming what differs). Returns the
    report and the seconds it took."""
    t0 = time.monotonic()
    while True:
        report = await index_report(db, reader, room_id, channel_id, sent)
        elapsed = time.monotonic() - t0
        if report.ok or elapsed > timeout:
            break
        await asyncio.sleep(0.25)
    assert_report_clean(report, f"after {elapsed:.1f} s")
    return report, elapsed


async def swallow_until(proxy: SwallowingProxy, event_ids: list[str]) -> None:
    """Wait until Synapse has pushed (to the swallowing proxy) every one of them: it
    counts them as delivered and will not push them again."""

    async def all_swallowed() -> bool:
        return set(event_ids) <= proxy.swallowed

    await wait_for(all_swallowed, 30, what="Synapse to push the events to the swallowing proxy")


async def logged_rounds(bridge: BridgeProcess, at_least: int) -> list[CatchUpRound]:
    """The catch-up rounds in the bridge's log, once there are ``at_least`` of them."""

    async def enough() -> list[CatchUpRound] | None:
        rounds = catch_up_rounds(bridge.log_file)
        return rounds if len(rounds) >= at_least else None

    return await wait_for(enough, 10, what=f"{at_least} catch-up line(s) in the bridge log")


class Room:
    """A channel with two people sending into it, remembering what was sent."""

    def __init__(self, db: asyncpg.Pool, alice: Person, bob: Person) -> None:
        self.db = db
        self.alice = alice
        self.bob = bob
        self.sent: dict[str, tuple[str, str]] = {}
        self.room_id = ""
        self.cid: Any = None

    async def open(self, bot: str, name: str) -> None:
        self.room_id, channel = await open_channel(self.db, self.alice, bot, name, "public_chat")
        self.cid = channel["id"]
        await self.bob.join(self.room_id)

    async def say(self, person: Person, body: str) -> str:
        event_id = await person.send_text(self.room_id, body)
        self.sent[event_id] = (person.user_id, body)
        return event_id

    async def say_many(self, n: int, tag: str) -> list[str]:
        return [
            await self.say(self.alice if i % 2 == 0 else self.bob, f"{tag} #{i:02d} ✓")
            for i in range(n)
        ]

    async def indexed(self, n: int) -> None:
        seconds = await wait_indexed(self.db, self.cid, n, timeout=15)
        assert seconds is not None, f"the bridge did not index {n} messages (proxy forwarding)"

    async def report(self) -> IndexReport:
        return await index_report(self.db, self.alice, self.room_id, self.cid, self.sent)

    async def close(self) -> None:
        await self.alice.close()
        await self.bob.close()


async def two_people(stack: E2E, db: asyncpg.Pool, tag: str) -> Room:
    return Room(db, await stack.person(f"alice.{tag}"), await stack.person(f"bob.{tag}"))


@pytest.mark.timeout(60)
async def test_catch_up_at_start_indexes_what_synapse_pushed_elsewhere(stack, proxy, own_db):
    url, db = own_db
    first = real_bridge(stack, "catchup-start-first", url)
    second = real_bridge(stack, "catchup-start-second", url)
    room = await two_people(stack, db, "custart")
    try:
        # A channel made by a real bridge: the invite must reach one.
        proxy.swallow = False
        proxy.aim(first)
        await first.start()
        await room.open(stack.bot, "E2E catch-up at start")
        to_edit = await room.say(room.alice, "catch-up: to be edited")
        to_redact = await room.say(room.bob, "catch-up: to be redacted")
        await room.say(room.alice, "catch-up: stays as it is")
        await room.indexed(3)

        # No bridge runs; Synapse's pushes reach only the swallowing proxy.
        proxy.swallow = True
        await first.stop()
        lost = await room.say_many(LOST, "catch-up start")
        new_body = "catch-up: edited while no bridge ran"
        edit = await room.alice.edit(room.room_id, to_edit, new_body)
        room.sent[edit] = (room.alice.user_id, f"* {new_body}")
        redaction = await room.bob.redact(room.room_id, to_redact)
        await swallow_until(proxy, [*lost, edit, redaction])
        before = await room.report()
        assert sorted(before.missing) == sorted(lost), "test premise: the index lacks them"
        assert {w[0] for w in before.wrong} == {to_edit, to_redact}, "test premise"

        t0 = time.monotonic()
        await second.start()
        started = time.monotonic() - t0
        report, seconds = await wait_matches_history(
            db, room.alice, room.room_id, room.cid, room.sent
        )
        recovery = started + seconds
        rows = {
            r["matrix_event_id"]: r["content_preview"]
            for r in await db.fetch("SELECT * FROM messages WHERE channel_id = $1", room.cid)
        }
        assert rows[to_edit] == new_body
        assert rows[to_redact] == DELETED
        assert edit not in rows and redaction not in rows

        rounds = await logged_rounds(second, 1)
        assert [(r.reason, r.rooms, r.missing) for r in rounds] == [("start", 1, LOST + 2)], rounds
        print(
            f"\n[e2e] catch-up at start: {LOST} messages + 1 edit + 1 redaction swallowed, "
            f"{report.summary()}; index complete {recovery:.1f} s after the bridge was "
            f"started (ready in {started:.1f} s, catch-up round {rounds[0].seconds:.1f} s)"
        )
    finally:
        await first.stop()
        await second.stop()
        await room.close()


@pytest.mark.timeout(60)
async def test_catch_up_when_the_homeserver_was_away(stack, proxy, own_db):
    """A homeserver restart can drop what it had queued for the bridge and leave no sign
    in the transactions that follow (its ids go on). The bridge notices the homeserver
    did not answer for a while and reads back what it lacks once it answers again."""
    url, db = own_db
    room = await two_people(stack, db, "cuaway")
    async with HomeserverFront(stack.synapse.base_url) as front:
        bridge = real_bridge(stack, "catchup-away", url, homeserver_address=front.address)
        try:
            proxy.swallow = False
            proxy.aim(bridge)
            await bridge.start()
            await logged_rounds(bridge, 1)  # the start's own round first
            await room.open(stack.bot, "E2E catch-up after the homeserver was away")
            await room.say_many(4, "catch-up away, pushed")
            await room.indexed(4)

            proxy.swallow = True
            lost = await room.say_many(6, "catch-up away, dropped")
            await swallow_until(proxy, lost)
            before = await room.report()
            assert sorted(before.missing) == sorted(lost), "test premise: the index lacks them"
            proxy.swallow = False

            # As a reverse proxy answers while the homeserver behind it restarts.
            front.down = True
            await asyncio.sleep(3)
            front.down = False
            await wait_matches_history(db, room.alice, room.room_id, room.cid, room.sent)
            rounds = (await logged_rounds(bridge, 2))[1:]
            assert [(r.reason.split(" for ")[0], r.rooms, r.missing) for r in rounds] == [
                ("the homeserver was away", 1, len(lost))
            ], rounds
            assert "does not answer (HTTP 502)" in log_text(bridge.log_file)
            assert bridge.running
        finally:
            await bridge.stop()
            await room.close()


@pytest.mark.timeout(60)
async def test_catch_up_when_transaction_ids_go_backwards(stack, proxy, own_db):
    url, db = own_db
    bridge = real_bridge(stack, "catchup-restart", url)
    room = await two_people(stack, db, "curestart")
    http = aiohttp.ClientSession()
    try:
        proxy.swallow = False
        proxy.aim(bridge)
        await bridge.start()
        # The start's own catch-up over first, so what follows is the restart's.
        await logged_rounds(bridge, 1)
        pushes_before = len(proxy.pushes)
        await room.open(stack.bot, "E2E catch-up on restart")
        await room.say_many(4, "catch-up restart, pushed")
        await room.indexed(4)
        committed = proxy.committed_numeric_ids(pushes_before)
        assert committed and max(committed) > 1, f"test premise: numeric ids {committed}"

        proxy.swallow = True
        lost = await room.say_many(6, "catch-up restart, swallowed")
        await swallow_until(proxy, lost)
        before = await room.report()
        assert sorted(before.missing) == sorted(lost), "test premise: the index lacks them"
        proxy.swallow = False

        # What a restarted Synapse sends first: its transaction counter starts again.
        t0 = time.monotonic()
        status, body = await put_transaction(http, bridge.port, stack.hs_token, "1", [])
        assert status == 200, body
        report, seconds = await wait_matches_history(
            db, room.alice, room.room_id, room.cid, room.sent
        )

        log = log_text(bridge.log_file)
        assert "The homeserver's transaction ids started again at 1, as after a restart" in log
        assert "reads back recently active rooms" in log
        rounds = (await logged_rounds(bridge, 2))[1:]
        assert [(r.reason, r.rooms, r.missing) for r in rounds] == [
            ("signs of dropped events", 1, len(lost))
        ], rounds
        print(
            f"\n[e2e] catch-up on a restart signal (txn id 1 after {max(committed)}): "
            f"{len(lost)} messages swallowed, {report.summary()}; index complete "
            f"{time.monotonic() - t0:.1f} s after the signal"
        )
        assert bridge.running
    finally:
        await http.close()
        await bridge.stop()
        await room.close()


@pytest.mark.timeout(60)
async def test_no_catch_up_when_window_is_zero(stack, proxy, own_db):
    url, db = own_db
    bridge = real_bridge(stack, "catchup-off", url, catch_up_window=0)
    room = await two_people(stack, db, "cuoff")
    http = aiohttp.ClientSession()
    try:
        proxy.swallow = False
        proxy.aim(bridge)
        await bridge.start()
        await room.open(stack.bot, "E2E catch-up off")
        await room.say_many(2, "catch-up off, pushed")
        await room.indexed(2)

        proxy.swallow = True
        lost = await room.say_many(4, "catch-up off, swallowed")
        await swallow_until(proxy, lost)
        proxy.swallow = False

        # Both triggers: a start, and transaction ids going backwards after a larger one.
        await bridge.stop()
        await bridge.start()
        pushes_before = len(proxy.pushes)
        await room.say(room.alice, "catch-up off, pushed after the restart")
        await room.indexed(3)
        assert max(proxy.committed_numeric_ids(pushes_before), default=0) > 1, "test premise"
        status, body = await put_transaction(http, bridge.port, stack.hs_token, "1", [])
        assert status == 200, body
        # A catch-up would have run CATCH_UP_DELAY after each trigger; give it time.
        await asyncio.sleep(CATCH_UP_DELAY + 3)

        report = await room.report()
        assert sorted(report.missing) == sorted(lost), report.summary()
        assert not (report.doubled or report.extra or report.wrong or report.unexpected), (
            report.summary()
        )
        log = log_text(bridge.log_file)
        assert "transaction ids started again at 1" in log, "test premise: the trigger came"
        assert "Catch-up" not in log and not catch_up_rounds(bridge.log_file), [
            line for line in log.splitlines() if "atch-up" in line
        ]
        assert bridge.running
    finally:
        await http.close()
        await bridge.stop()
        await room.close()


@pytest.mark.timeout(90)
async def test_catch_up_at_start_recovers_members_name_and_join_rule(stack, proxy, own_db):
    url, db = own_db
    first = real_bridge(stack, "catchup-state-first", url)
    second = real_bridge(stack, "catchup-state-second", url)
    room = await two_people(stack, db, "custate")
    carol = await stack.person("carol.custate")
    try:
        proxy.swallow = False
        proxy.aim(first)
        await first.start()
        await room.open(stack.bot, "E2E catch-up state")
        await room.say(room.bob, "catch-up state: bob was here")
        await room.indexed(1)
        bob = await member_row(db, room.cid, room.bob.user_id)
        assert bob is not None and bob["left_at"] is None, "test premise: bob is a member"

        # No bridge runs: a leave, a join, a rename and a join rule change go nowhere.
        proxy.swallow = True
        await first.stop()
        await room.bob.leave(room.room_id)
        await carol.join(room.room_id)
        await room.alice.set_room_name(room.room_id, "E2E catch-up state, renamed")
        await room.alice.put_state(room.room_id, "m.room.join_rules", {"join_rule": "invite"})
        # Synapse pushes in order: once this is swallowed, so is everything before it.
        marker = await room.say(room.alice, "catch-up state: after the changes")
        await swallow_until(proxy, [marker])
        channel = await db.fetchrow("SELECT * FROM channels WHERE id = $1", room.cid)
        assert channel["name"] == "E2E catch-up state", "test premise: the index lacks them"
        assert await member_row(db, room.cid, carol.user_id) is None, "test premise"

        proxy.swallow = False
        proxy.aim(second)
        await second.start()

        async def caught_up() -> bool:
            bob = await member_row(db, room.cid, room.bob.user_id)
            carol_row = await member_row(db, room.cid, carol.user_id)
            channel = await db.fetchrow("SELECT * FROM channels WHERE id = $1", room.cid)
            return bool(
                bob["left_at"] is not None
                and carol_row is not None
                and carol_row["left_at"] is None
                and channel["name"] == "E2E catch-up state, renamed"
                and channel["visibility"] == "private"
            )

        await wait_for(caught_up, 30, what="the catch-up to apply the dropped state")
        rounds = await logged_rounds(second, 1)
        assert rounds[0].reason == "start" and rounds[0].missing == 1, rounds
        # bob's leave, carol's join, the name and the join rule at least; alice's join
        # and the power levels too (the channel was made from a snapshot, with no marks)
        assert rounds[0].state >= 4, rounds

        # Nothing newer since: the next start's round feeds no state again.
        await second.stop()
        offset = second.log_file.stat().st_size
        await second.start()

        async def next_round() -> list[CatchUpRound]:
            return catch_up_rounds(second.log_file, offset)

        again = await wait_for(next_round, 15, what="the next start's catch-up round")
        assert [(r.missing, r.state) for r in again] == [(0, 0)], again
    finally:
        await first.stop()
        await second.stop()
        await room.close()
        await carol.close()
