"""Synapse restarts while people keep sending.

The senders behave like clients that survive a restart: on a connection error or a 5xx
they send again with the same transaction id, so no message is lost or doubled on the
client side. After the restart the index must hold exactly one correct row per message
of the room's history.

Restarting the session Synapse would cut other modules' connections, so this module runs
a Synapse (and database) of its own. A recording proxy on the registration's URL stands
in front of the bridge, so a lost message can be blamed: "never pushed by the
homeserver" or "answered 200 by the bridge" (the bridge's fault).

What the restart does to the appservice stream, seen while writing this test (Synapse
1.163, SQLite): its transaction ids may start again at 1 (the bridge must take a known id
with other events as new), and a SIGTERM can drop the events Synapse had queued for the
appservice but not yet pushed (its in-memory queue, and a transaction created but not
sent while the service counts as up): those messages never reach the bridge by a push.
The bridge takes the ids going backwards as a homeserver restart and catches up: it
reads the room back (CATCH_UP_DELAY after the signal) and indexes what it lacks. The
final check waits, bounded by RECOVERY, for that; if messages are still missing the
test fails, saying whether Synapse pushed them and which catch-up rounds the bridge ran.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from daarion_bridge.devtools.synapse import free_port
from tests.conftest import create_database
from tests.e2e.conftest import E2E, e2e_stack
from tests.e2e.helpers import (
    BridgeProcess,
    RecordingProxy,
    assert_report_clean,
    catch_up_rounds,
    explain_missing,
    fmt_seconds,
    index_report,
    open_channel,
    put_transaction,
    wait_for,
    wait_indexed,
)

pytestmark = pytest.mark.e2e

IN_FLIGHT = 2  # concurrent sends per person
BEFORE = 2.0  # seconds of traffic before the restart
AFTER = 2.0  # seconds of traffic after Synapse is back
DOWN = 1.0  # seconds between stop and start
CATCH_UP_DELAY = 2.0  # the bridge reads history this long after it notices the restart
# Seconds from the last send to a complete index: the catch-up (triggered by each push
# whose id is lower than one already seen, so it may run a second round) must be done.
RECOVERY = 15.0


@pytest.fixture(scope="module")
async def stack(tmp_path_factory, pg_server_url) -> AsyncIterator[E2E]:
    database_url = await create_database(pg_server_url, "fsyn")
    async with e2e_stack(tmp_path_factory.mktemp("faults-synapse"), database_url) as s:
        yield s


@pytest.fixture(scope="module")
async def stack_db(stack: E2E) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="module")
async def proxy(stack: E2E) -> AsyncIterator[RecordingProxy]:
    """On the registration's URL, in front of the bridge: records what Synapse pushed."""
    bridge_port = free_port()
    while bridge_port == stack.appservice_port:
        bridge_port = free_port()
    proxy = RecordingProxy(stack.appservice_port, bridge_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


@pytest.fixture(scope="module")
async def stack_bridge(stack: E2E, proxy: RecordingProxy) -> AsyncIterator[BridgeProcess]:
    port = int(proxy.target.rsplit(":", 1)[1])

    def behind_proxy(cfg):
        cfg["appservice"]["port"] = port

    config = stack.derived_config("config-behind-proxy", behind_proxy)
    proc = stack.new_bridge("bridge-faults-synapse", config, port=port)
    await proc.start()
    try:
        yield proc
    finally:
        await proc.stop()


async def forced_catch_up(stack: E2E, bridge: BridgeProcess, db, cid, sent) -> str:
    """Diagnosis when the restart went unnoticed: send the signal the bridge missed (a
    transaction id lower than any it saw) and tell whether the catch-up then finds the
    messages."""
    async with aiohttp.ClientSession() as http:
        status, _ = await put_transaction(http, bridge.port, stack.hs_token, "0", [])
    t0 = time.monotonic()
    seconds = await wait_indexed(db, cid, len(sent), timeout=CATCH_UP_DELAY + 8, interval=0.1)
    rows = await db.fetchval("SELECT count(*) FROM messages WHERE channel_id = $1", cid)
    return (
        f"a catch-up forced afterwards (txn id 0, answered {status}) brought the index to "
        f"{rows} of {len(sent)} rows in {time.monotonic() - t0:.1f} s"
        + (": it finds them once triggered" if seconds is not None else "")
    )


@pytest.mark.timeout(90)
async def test_synapse_restart_mid_stream(stack, proxy, stack_bridge, stack_db):
    synapse = stack.synapse
    alice = await stack.person("alice.hsfault")
    bob = await stack.person("bob.hsfault")
    try:
        room_id, channel = await open_channel(
            stack_db, alice, stack.bot, "E2E synapse restart", "public_chat"
        )
        cid = channel["id"]
        await bob.join(room_id)
        log_offset = stack.log_file.stat().st_size if stack.log_file.exists() else 0

        sent: dict[str, tuple[str, str]] = {}
        retries = 0
        stop_sending = asyncio.Event()

        async def worker(person) -> None:
            nonlocal retries
            while not stop_sending.is_set():
                body = f"hsfault {person.localpart} {uuid.uuid4().hex[:8]} ✓"
                event_id, tries = await person.send_text_retrying(room_id, body, timeout=45)
                assert event_id not in sent, "the homeserver reused an event id"
                sent[event_id] = (person.user_id, body)
                retries += tries

        senders = [asyncio.create_task(worker(p)) for p in (alice, bob) for _ in range(IN_FLIGHT)]
        try:
            await asyncio.sleep(BEFORE)
            before = len(sent)
            t_stop = time.monotonic()
            stop_ms = time.time() * 1000
            pushes_at_stop = len(proxy.pushes)
            await synapse.stop()
            stopped = time.monotonic() - t_stop
            await asyncio.sleep(DOWN)
            await synapse.start()
            t_back = time.monotonic()
            print(
                f"\n[e2e] Synapse restarted after {before} sends: stop {stopped:.2f} s, "
                f"down {t_back - t_stop:.2f} s in all"
            )
            assert stack_bridge.running
            await asyncio.sleep(AFTER)
        finally:
            stop_sending.set()
            results = await asyncio.gather(*senders, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, f"senders failed: {errors[:3]}"

        # Bounded and explicit: messages Synapse dropped at SIGTERM come only through the
        # catch-up, CATCH_UP_DELAY after the first push of the restarted Synapse.
        t_last = time.monotonic()
        seconds = await wait_indexed(stack_db, cid, len(sent), timeout=RECOVERY, interval=0.1)
        print(
            f"[e2e] {len(sent)} sent ({len(sent) - before} from the restart on), "
            f"{retries} client retries; index complete {fmt_seconds(seconds)} after the "
            f"last send, {t_last - t_back + (seconds or RECOVERY):.1f} s after Synapse was back"
        )
        await asyncio.sleep(1)  # anything still in flight would show up as an extra row
        report = await index_report(stack_db, alice, room_id, cid, sent)
        print(f"[e2e] synapse restart: {report.summary()}")
        txn_ids = [txn for txn, _, _ in proxy.pushes]
        reused = sorted({t for t in txn_ids if txn_ids.count(t) > 1}, key=int)
        print(
            f"[e2e] Synapse pushed {len(proxy.pushes)} transactions; ids pushed more than "
            f"once (retries, or a counter that restarted): {reused[:10]}; ids around the "
            f"restart: {txn_ids[max(0, pushes_at_stop - 3) : pushes_at_stop]} | "
            f"{txn_ids[pushes_at_stop : pushes_at_stop + 3]}"
        )
        pushed = {i for _, ids, _ in proxy.pushes for i in ids}
        never_pushed = [i for i in sent if i not in pushed]
        rounds = catch_up_rounds(stack.log_file, log_offset)
        print(
            f"[e2e] Synapse never pushed {len(never_pushed)} of the {len(sent)} messages; "
            "catch-up rounds (reason, rooms, events fed, seconds): "
            f"{[(r.reason, r.rooms, r.missing, r.seconds) for r in rounds]}"
        )
        note = ""
        if report.missing:
            ts = {e["event_id"]: e["origin_server_ts"] for e in report.history}
            fates = {
                i: f"created {(ts[i] - stop_ms) / 1000:+.3f} s from SIGTERM, {proxy.fate(i)}"
                for i in report.missing
            }
            print(f"[e2e] lost messages: {fates}")
            bridge_lost = [i for i in report.missing if "answered 200" in proxy.fate(i)]
            assert not bridge_lost, f"BRIDGE answered 200 and wrote no row: {bridge_lost}"
            if all("never pushed" in proxy.fate(i) for i in report.missing):
                restart_rounds = [r for r in rounds if r.reason != "start"]
                note = (
                    "Synapse never pushed them and the catch-up did not index them "
                    f"(rounds after the restart: {restart_rounds or 'none: not triggered'}); "
                    + explain_missing(report.missing, synapse.workdir)
                )
                if not restart_rounds:
                    note += "; " + await forced_catch_up(stack, stack_bridge, stack_db, cid, sent)
        assert_report_clean(report, note)
    finally:
        await alice.close()
        await bob.close()


async def _log_has(log_file, needle: str) -> bool:
    return log_file.exists() and needle in log_file.read_text(encoding="utf-8")


class HomeserverFront:
    """In front of Synapse on the bridge's homeserver.address: forwards every request.
    With ``cut_pings`` it drops the connection of the start-up ping (POST
    .../appservice/<id>/ping), as a Synapse stopped right then does; while ``down`` it
    answers 502, as a reverse proxy does while the homeserver behind it restarts."""

    def __init__(self, target: str, *, cut_pings: bool = False) -> None:
        self.target = target
        self.port = free_port()
        self.cut_pings = cut_pings
        self.cut = 0
        self.down = False
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._client is not None
        if self.down:
            return web.Response(status=502)
        if self.cut_pings and request.method == "POST" and request.path.endswith("/ping"):
            self.cut += 1
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        body = await request.read()
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type")
        }
        async with self._client.request(
            request.method, self.target + request.path_qs, data=body, headers=headers
        ) as resp:
            data = await resp.read()
            ctype = resp.headers.get("Content-Type", "application/json")
            return web.Response(status=resp.status, body=data, headers={"Content-Type": ctype})

    async def __aenter__(self) -> HomeserverFront:
        self._client = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None and self._client is not None
        await self._runner.cleanup()
        await self._client.close()


@pytest.mark.timeout(60)
async def test_homeserver_gone_during_the_start_up_ping_leaves_the_bridge_running(
    stack, pg_server_url
):
    """The bridge is ready before it pings; the homeserver going away then (the size
    benchmark stops Synapse right after /ready) is a warning, not the end of the bridge."""
    database_url = await create_database(pg_server_url, "fsyn_ping")
    port = free_port()
    log_file = stack.workdir / "bridge-ping-cut.log"
    async with HomeserverFront(stack.synapse.base_url, cut_pings=True) as cutter:

        def through_cutter(cfg):
            cfg["homeserver"]["address"] = cutter.address
            cfg["appservice"]["port"] = port
            cfg["database"]["url"] = database_url
            cfg["logging"]["handlers"]["file"]["filename"] = str(log_file)

        config = stack.derived_config("config-ping-cut", through_cutter)
        bridge = stack.new_bridge("bridge-ping-cut", config, port=port, log_file=log_file)
        await bridge.start()
        try:
            await wait_for(
                lambda: _log_has(log_file, "did not answer the start-up ping"),
                what="the ping's warning in the bridge log",
            )
            assert cutter.cut == 1
            await asyncio.sleep(1.0)  # where the bridge used to exit
            assert bridge.running, bridge.tail()
            async with aiohttp.ClientSession() as http:
                status, _ = await put_transaction(http, port, stack.hs_token, "ping-cut-1", [])
            assert status == 200
        finally:
            await bridge.stop()
    text = log_file.read_text(encoding="utf-8")
    assert "Traceback" not in text, text[-3000:]
