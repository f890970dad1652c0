"""Crash safety: SIGKILL the bridge while two people flood a channel; after restarts the
index must hold exactly one correct row per message in the room's history.

By default 300 messages and 3 kills (seconds). ``DAARION_SOAK=1`` runs the same test with
5,000 messages and 10 kills (a minute or two)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    assert_report_clean,
    catch_up_rounds,
    explain_missing,
    fmt_seconds,
    index_report,
    open_channel,
    wait_indexed,
)

pytestmark = pytest.mark.e2e

SOAK = os.environ.get("DAARION_SOAK") == "1"
SIZE = (5000, 10) if SOAK else (300, 3)  # (messages, kills)
SENDERS_IN_FLIGHT = 4  # concurrent sends per person


def interrupted_pushes(synapse_log: Path, offset: int) -> list[str]:
    """Transactions whose push failed other than by `connection refused` (bridge down):
    the bridge died holding them."""
    with synapse_log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    return [
        line.split("transactions/", 1)[1][:80]
        for line in text.splitlines()
        if "Error sending request to" in line
        and "/_matrix/app/v1/transactions/" in line
        and "ConnectionRefused" not in line
    ]


@pytest.mark.timeout(1200 if SOAK else 300)
@pytest.mark.parametrize(("messages", "kills"), [SIZE], ids=[f"{SIZE[0]}msgs-{SIZE[1]}kills"])
async def test_sigkill_during_flood_loses_and_duplicates_nothing(
    e2e, bridge, people, db, messages, kills
):
    seed = int(os.environ.get("DAARION_E2E_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    print(f"\n[e2e] crash test seed {seed} (set DAARION_E2E_SEED to replay)")

    alice = await people("alice.crash")
    bob = await people("bob.crash")
    room_id, channel = await open_channel(db, alice, e2e.bot, "E2E crash", "public_chat")
    cid = channel["id"]
    await bob.join(room_id)

    sent: dict[str, tuple[str, str]] = {}  # event id -> (sender, body)
    count = 0
    kill_at = sorted(rng.sample(range(20, messages - 20), kills))
    kill_log: list[str] = []

    async def flood(person, numbers: list[int]) -> None:
        nonlocal count
        queue = list(numbers)

        async def worker() -> None:
            nonlocal count
            while queue:
                n = queue.pop(0)
                body = f"crash {person.localpart} #{n:03d} ✓ {'x' * rng.randint(1, 40)}"
                event_id = await person.send_text(room_id, body)
                sent[event_id] = (person.user_id, body)
                count += 1

        await asyncio.gather(*(worker() for _ in range(SENDERS_IN_FLIGHT)))

    async def killer() -> None:
        for i, threshold in enumerate(kill_at):
            while count < threshold:
                await asyncio.sleep(0.005)
            # A random extra delay so the kill lands anywhere, inside a transaction or not.
            await asyncio.sleep(rng.uniform(0, 0.2))
            at = count
            if i == 1:
                # One kill surely cuts a pushed transaction: freeze the bridge, send one
                # more message (the flood may be over by now) so Synapse pushes to the
                # frozen process, then SIGKILL it with that push in flight.
                bridge.freeze()
                body = f"crash frozen #{i} ✓"
                event_id = await alice.send_text(room_id, body)
                sent[event_id] = (alice.user_id, body)
                await asyncio.sleep(0.5)
            bridge.kill()
            kill_log.append(f"killed after {at} sends" + (" (frozen first)" if i == 1 else ""))
            await asyncio.sleep(rng.uniform(0, 0.5))
            await bridge.start()

    log_offset = e2e.synapse.log_path.stat().st_size
    bridge_log_offset = bridge.log_file.stat().st_size if bridge.log_file.exists() else 0
    numbers = list(range(messages))
    t0 = time.monotonic()
    await asyncio.gather(flood(alice, numbers[0::2]), flood(bob, numbers[1::2]), killer())
    send_seconds = time.monotonic() - t0
    assert len(sent) == messages + 1  # the flood and the message sent while frozen
    assert bridge.running
    print(f"[e2e] {len(sent)} sends in {send_seconds:.1f} s; {kill_log}")
    cut = interrupted_pushes(e2e.synapse.log_path, log_offset)
    print(f"[e2e] pushes cut in flight by the kills: {cut}")
    assert cut, "test premise: at least one kill must land while Synapse awaits an answer"

    settle_seconds = await wait_indexed(db, cid, len(sent), timeout=120, interval=0.25, stall=30)
    print(f"[e2e] index settled {fmt_seconds(settle_seconds)} after the last send")
    await asyncio.sleep(1)  # anything still in flight would show up as an extra row

    report = await index_report(db, alice, room_id, cid, sent)
    why = explain_missing(report.missing, e2e.synapse.workdir)
    if why:
        print(f"[e2e] {report.summary()}; {why}")
    assert_report_clean(report, f"seed {seed}" + (f"; {why}" if why else ""))
    print(
        f"[e2e] crash figures: {len(sent)} sent, {kills} kills, {report.summary()}; "
        f"sends {send_seconds:.1f} s, settled +{fmt_seconds(settle_seconds)}, "
        f"bridge starts {[round(s, 2) for s in bridge.start_seconds]}"
    )
    rounds = catch_up_rounds(bridge.log_file, bridge_log_offset)
    print(
        f"[e2e] catch-up rounds logged before the check: {len(rounds)}, events they fed: "
        f"{sum(r.missing for r in rounds)} ({[(r.reason, r.missing) for r in rounds]})"
    )
