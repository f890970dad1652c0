"""Two bridge processes on one database (same config but the listen port), transactions
alternating between them, with concurrent duplicates.

Synapse pushes to one URL only, so the test pushes the transactions itself: people send
real messages through Synapse (while a stub on the registration's URL swallows Synapse's
own pushes), the test reads those events back from the room and PUTs them, as the
homeserver would, to bridge A and bridge B:

- the bot's invite to both at once under two transaction ids: both bridges join, both
  would make the channel, one channel must result;
- alternately, one batch to A and the next to B at the same moment;
- the same transaction id to both at once;
- the same events under two transaction ids, to both at once;
- a transaction replayed to the other bridge later;
- batches that overlap (an event again in the next transaction, under another id).

Every PUT must end in 200 (a 5xx is retried as Synapse would, and counted); then one
correct row per message, each transaction id recorded once, nothing dead-lettered.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from daarion_bridge.devtools.synapse import free_port
from tests.e2e.helpers import (
    BridgeProcess,
    assert_index_matches_history,
    fmt_seconds,
    member_row,
    put_transaction,
    wait_for,
    wait_indexed,
)

pytestmark = pytest.mark.e2e

MESSAGES = 150
MAX_BATCH = 12
RETRY_LIMIT = 20  # 5xx answers tolerated per PUT before the test gives up


class StubAppservice:
    """Answers the homeserver on the registration's URL with 200 and records the event
    ids it was pushed, so Synapse's own pushes reach no bridge."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.event_ids: set[str] = set()
        self.runner: web.AppRunner | None = None

    async def _any(self, request: web.Request) -> web.Response:
        if request.method == "PUT" and "/transactions/" in request.path:
            body = await request.json()
            self.event_ids.update(e.get("event_id") for e in body.get("events", []))
        return web.json_response({})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


def _other_bridge(e2e, name: str) -> BridgeProcess:
    port = free_port()
    while port == e2e.appservice_port:
        port = free_port()

    def listen_elsewhere(cfg: Any) -> None:
        cfg["appservice"]["port"] = port

    config = e2e.derived_config(f"config-{name}", listen_elsewhere)
    return e2e.new_bridge(name, config, port=port)


@pytest.fixture(scope="module")
async def bridge_a(e2e) -> AsyncIterator[BridgeProcess]:
    proc = _other_bridge(e2e, "bridge-two-a")
    try:
        yield proc
    finally:
        await proc.stop()


@pytest.fixture(scope="module")
async def bridge_b(e2e) -> AsyncIterator[BridgeProcess]:
    proc = _other_bridge(e2e, "bridge-two-b")
    try:
        yield proc
    finally:
        await proc.stop()


@pytest.mark.timeout(90)
async def test_two_bridges_one_database(e2e, bridge_a, bridge_b, people, db):
    seed = int(os.environ.get("DAARION_E2E_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    print(f"\n[e2e] two-bridges seed {seed} (set DAARION_E2E_SEED to replay)")
    run = uuid.uuid4().hex[:8]

    stub = StubAppservice(e2e.appservice_port)
    await stub.start()
    http = aiohttp.ClientSession()
    try:
        await bridge_a.start()
        await bridge_b.start()
        statuses: list[tuple[str, str, int]] = []  # (bridge, txn id, final status)
        retried: list[tuple[str, str, int]] = []  # (bridge, txn id, 5xx answer)
        expected: dict[str, int] = {}  # txn id -> event count

        async def put(proc: BridgeProcess, txn: str, batch: list[dict[str, Any]]) -> None:
            name = "A" if proc is bridge_a else "B"
            expected[txn] = len(batch)
            for _ in range(RETRY_LIMIT):
                status, body = await put_transaction(http, proc.port, e2e.hs_token, txn, batch)
                if status < 500:
                    break
                retried.append((name, txn, status))
                await asyncio.sleep(0.1)
            statuses.append((name, txn, status))
            assert status == 200, f"bridge {name} answered {txn} with {status} {body}"

        # The invite reaches both bridges at once (under two transaction ids): both join,
        # both would make the channel; there must be one.
        alice = await people("alice.two")
        bob = await people("bob.two")
        room_id = await alice.create_room(name="E2E two bridges", preset="public_chat")
        await alice.invite(room_id, e2e.bot)
        timeline = await alice.history(room_id)
        (invite,) = [
            e
            for e in timeline
            if e["type"] == "m.room.member"
            and e.get("state_key") == e2e.bot
            and e["content"].get("membership") == "invite"
        ]
        assert invite.get("room_id") == room_id, "client API events must carry room_id"
        await asyncio.gather(
            put(bridge_a, f"two-{run}-invite", [invite]),
            put(bridge_b, f"two-{run}-invite-again", [invite]),
        )
        assert await alice.membership(room_id, e2e.bot) == "join"
        channels = await db.fetch("SELECT id FROM channels WHERE matrix_room_id = $1", room_id)
        assert len(channels) == 1, f"{len(channels)} channels for one room"
        cid = channels[0]["id"]

        # Traffic through Synapse (whose own pushes the stub swallows).
        await bob.join(room_id)
        sent: dict[str, tuple[str, str]] = {}

        async def send_some(person, numbers: list[int]) -> None:
            for n in numbers:
                body = f"two {person.localpart} #{n:03d} ✓ {'y' * rng.randint(1, 30)}"
                sent[await person.send_text(room_id, body)] = (person.user_id, body)

        numbers = list(range(MESSAGES))
        await asyncio.gather(
            send_some(alice, numbers[0::4]),
            send_some(alice, numbers[2::4]),
            send_some(bob, numbers[1::4]),
            send_some(bob, numbers[3::4]),
        )

        async def stub_has_all() -> bool:
            return set(sent) <= stub.event_ids

        await wait_for(stub_has_all, 30, what="Synapse to push every message to the stub")

        # Everything after the invite, as Synapse would push it: the bot's join, bob's,
        # the messages, in timeline order.
        timeline = await alice.history(room_id)
        after = [e["event_id"] for e in timeline].index(invite["event_id"]) + 1
        events = timeline[after:]
        assert {e["event_id"] for e in events if e["type"] == "m.room.message"} == set(sent)
        batches: list[list[dict[str, Any]]] = []
        i = 0
        while i < len(events):
            size = rng.randint(1, MAX_BATCH)
            start = max(0, i - rng.choice([0, 0, 0, 2]))  # sometimes overlap the last one
            batches.append(events[start : i + size])
            i += size

        modes: dict[str, int] = {}
        t0 = time.monotonic()
        replays: list[tuple[str, list[dict[str, Any]]]] = []
        k = 0
        while k < len(batches):
            mode = ["alternate", "same-txn", "same-events", "replay"][(k // 2) % 4]
            modes[mode] = modes.get(mode, 0) + 1
            batch = batches[k]
            txn = f"two-{run}-{k}"
            if mode == "alternate" and k + 1 < len(batches):
                # Two different transactions at once, one to each bridge.
                await asyncio.gather(
                    put(bridge_a, txn, batch),
                    put(bridge_b, f"two-{run}-{k + 1}", batches[k + 1]),
                )
                k += 2
                continue
            if mode == "same-txn":
                await asyncio.gather(put(bridge_a, txn, batch), put(bridge_b, txn, batch))
            elif mode == "same-events":
                await asyncio.gather(
                    put(bridge_a, txn, batch), put(bridge_b, f"{txn}-again", batch)
                )
            else:
                await put(bridge_a if k % 2 else bridge_b, txn, batch)
                replays.append((txn, batch))
            k += 1
        # Replays of committed transactions, each to the bridge that did not take it.
        for txn, batch in replays:
            committed_by = next(n for n, t, _ in statuses if t == txn)
            await put(bridge_a if committed_by == "B" else bridge_b, txn, batch)
        push_seconds = time.monotonic() - t0

        seconds = await wait_indexed(db, cid, len(sent), timeout=10)
        await asyncio.sleep(0.5)
        print(
            f"[e2e] {len(sent)} messages ({len(events)} events) in {len(batches)} batches, "
            f"{len(statuses)} PUTs ({modes}) in {push_seconds:.1f} s, indexed "
            f"{fmt_seconds(seconds)} after; 5xx answers retried: {len(retried)} {retried[:5]}"
        )
        report = await assert_index_matches_history(db, alice, room_id, cid, sent, f"seed {seed}")
        print(f"[e2e] two bridges: {report.summary()}")
        assert await member_row(db, cid, bob.user_id) is not None, "bob is no member"

        rows = await db.fetch(
            "SELECT txn_id, event_count FROM bridge_transactions WHERE txn_id LIKE $1",
            f"two-{run}-%",
        )
        recorded: dict[str, list[int]] = {}
        for row in rows:
            recorded.setdefault(row["txn_id"], []).append(row["event_count"])
        assert {t: [n] for t, n in expected.items()} == recorded, (
            f"bridge_transactions differs (seed {seed})"
        )
        dead = await db.fetch(
            "SELECT txn_id, event_id, reason FROM bridge_dead_letters WHERE txn_id LIKE $1",
            f"two-{run}-%",
        )
        assert not dead, f"events dead-lettered (seed {seed}): {[dict(r) for r in dead[:5]]}"
        assert bridge_a.running and bridge_b.running
    finally:
        await http.close()
        await bridge_a.stop()
        await bridge_b.stop()
        await stub.stop()
