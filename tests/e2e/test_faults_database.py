"""PostgreSQL stops for 10 s while people keep sending, then comes back.

Meanwhile the bridge must stay up and say so (`/live` 200), say it is not ready
(`/ready` 503) and refuse transactions with a 5xx so Synapse keeps them. Once the
database is back the bridge pings the homeserver, so Synapse resends at once instead of
waiting out its backoff (up to 512 s): the backlog must be indexed within seconds, with
exactly one correct row per message.

The test runs its own PostgreSQL (the session one serves the other tests) and a bridge
with the session config pointed at it; it shares the session Synapse.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from daarion_bridge.db.embedded import EmbeddedPostgres
from tests.conftest import create_database
from tests.e2e.helpers import (
    BridgeProcess,
    assert_report_clean,
    explain_missing,
    fmt_seconds,
    http_status,
    index_report,
    open_channel,
    put_transaction,
    wait_for,
    wait_indexed,
)

pytestmark = pytest.mark.e2e

OUTAGE = 10.0  # seconds the database is down
RECOVERY_LIMIT = 5.0  # backlog indexed within this long after the database is back
CHECKS_AT = (1.0, 5.0, 9.0)  # seconds into the outage to probe the bridge
SEND_PAUSE = 0.05  # between one person's sends


class OwnPostgres:
    """An embedded PostgreSQL in a temp dir that the test may stop and start."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="daarion-fault-pg-"))
        self.tmp.chmod(0o755)  # the server runs as another user when we are root
        self.data_dir = self.tmp / "data"
        self.server: EmbeddedPostgres | None = None

    async def start(self) -> str:
        self.server = EmbeddedPostgres(self.data_dir)
        return await self.server.start()

    async def stop(self) -> None:
        """`pg_ctl -m fast stop`: clients are disconnected, the server shuts down."""
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop()

    async def close(self) -> None:
        await self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
async def own_pg() -> AsyncIterator[OwnPostgres]:
    pg = OwnPostgres()
    try:
        yield pg
    finally:
        await pg.close()


@pytest.fixture(scope="module")
async def own_db_url(own_pg: OwnPostgres) -> str:
    server_url = await own_pg.start()
    return await create_database(server_url, "fault")


@pytest.fixture(scope="module")
async def own_db(own_db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(own_db_url, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="module")
async def pg_bridge(e2e, own_db_url: str) -> AsyncIterator[BridgeProcess]:
    """The session config (tokens, port, log file) with database.url on the test's own
    server."""

    def own_database(cfg):
        cfg["database"]["url"] = own_db_url

    config = e2e.derived_config("config-faults-database", own_database)
    proc = e2e.new_bridge("bridge-faults-database", config)
    await proc.start()
    try:
        yield proc
    finally:
        await proc.stop()


def read_from(path: Path, offset: int) -> str:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


@pytest.mark.timeout(90)
async def test_database_outage_recovers_within_seconds(e2e, pg_bridge, own_pg, own_db, people):
    bridge = pg_bridge
    alice = await people("alice.dbfault")
    bob = await people("bob.dbfault")
    room_id, channel = await open_channel(own_db, alice, e2e.bot, "E2E db outage", "public_chat")
    cid = channel["id"]
    await bob.join(room_id)

    sent: dict[str, tuple[str, str]] = {}
    stop_sending = asyncio.Event()

    async def flood(person) -> None:
        n = 0
        while not stop_sending.is_set():
            body = f"dbfault {person.localpart} #{n:04d} ✓"
            event_id = await person.send_text(room_id, body)
            sent[event_id] = (person.user_id, body)
            n += 1
            await asyncio.sleep(SEND_PAUSE)

    base = f"http://127.0.0.1:{bridge.port}/_matrix/mau"
    bridge_log_offset = bridge.log_file.stat().st_size
    synapse_log_offset = e2e.synapse.log_path.stat().st_size
    senders = [asyncio.create_task(flood(p)) for p in (alice, bob)]
    probes: list[str] = []
    try:
        await asyncio.sleep(2)  # traffic flows normally first
        before = len(sent)
        t_down = time.monotonic()
        await own_pg.stop()
        print(f"\n[e2e] PostgreSQL stopped after {before} sends")

        async with aiohttp.ClientSession() as http:
            for at in CHECKS_AT:
                await asyncio.sleep(max(0.0, t_down + at - time.monotonic()))
                assert bridge.running, f"bridge died {at} s into the outage\n{bridge.tail()}"
                assert await http_status(http, f"{base}/live") == 200
                txn = f"fault-db-probe-{uuid.uuid4().hex}"
                status, body = await put_transaction(http, bridge.port, e2e.hs_token, txn, [])
                assert 500 <= status < 600, (
                    f"a transaction during the outage must be refused with a 5xx so the "
                    f"homeserver retries it; got {status} {body}"
                )
                ready = await http_status(http, f"{base}/ready")
                assert ready == 503, f"/ready {ready} {at} s into the outage"
                probes.append(f"{at:.0f}s: live 200, txn {status}, ready {ready}")
            await asyncio.sleep(max(0.0, t_down + OUTAGE - time.monotonic()))

            stop_sending.set()
            await asyncio.gather(*senders)
            during = len(sent) - before
            await own_pg.start()
            t_up = time.monotonic()
            up_wall = datetime.now()  # the bridge logs local wall-clock time
            print(f"[e2e] PostgreSQL back after {t_up - t_down:.1f} s; {during} sends meanwhile")
            assert bridge.running

            await own_db.expire_connections()  # ours died with the server too
            seconds = await wait_indexed(
                own_db, cid, len(sent), timeout=RECOVERY_LIMIT + 25, interval=0.05
            )

            async def ready_again() -> bool:
                return await http_status(http, f"{base}/ready") == 200

            await wait_for(ready_again, 10, what="/ready to answer 200 again")
    finally:
        stop_sending.set()
        await asyncio.gather(*senders, return_exceptions=True)

    print(f"[e2e] probes during the outage: {probes}")
    print(
        f"[e2e] database figures: {len(sent)} sent ({during} during the {OUTAGE:.0f} s "
        f"outage); backlog indexed {fmt_seconds(seconds)} after the database returned"
    )
    await asyncio.sleep(1)  # anything still in flight would show up as an extra row
    report = await index_report(own_db, alice, room_id, cid, sent)
    assert_report_clean(report, explain_missing(report.missing, e2e.synapse.workdir))
    print(f"[e2e] database outage: {report.summary()}")

    log = read_from(bridge.log_file, bridge_log_offset)
    refused = log.count("not committed: database")
    print(f"[e2e] transactions refused during the outage (bridge log): {refused}")
    back = [line for line in log.splitlines() if "Database is back; pinging" in line]
    assert back, "no recovery ping in the bridge log"
    logged_at = datetime.strptime(back[-1][:23], "%Y-%m-%d %H:%M:%S,%f")
    print(f"[e2e] bridge pinged {(logged_at - up_wall).total_seconds():.2f} s after the return")
    assert "Homeserver ping failed" not in log, "the recovery ping failed"
    synapse_log = read_from(e2e.synapse.log_path, synapse_log_offset)
    pings = [
        line
        for line in synapse_log.splitlines()
        if "/appservice/daarion/ping" in line and " 200 " in line
    ]
    print(f"[e2e] Synapse saw the ping: {pings[-1:]}")
    assert pings, "Synapse's log shows no appservice ping"
    answers = Counter(
        line.rsplit(": ", 1)[-1].strip()
        for line in synapse_log.splitlines()
        if "Received response to PUT" in line and "/_matrix/app/v1/transactions/" in line
    )
    print(
        f"[e2e] Synapse's pushes in the test, by answer: {dict(answers)} (while the service "
        "is down Synapse stores small transactions and replays them one at a time, so "
        "recovery time grows with their number)"
    )

    assert seconds is not None and seconds <= RECOVERY_LIMIT, (
        f"backlog indexed {fmt_seconds(seconds)} after the database returned "
        f"(limit {RECOVERY_LIMIT} s)"
    )
