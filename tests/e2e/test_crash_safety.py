"""Crash safety: SIGKILL the bridge while two people flood a channel; after restarts the
index must hold exactly one correct row per message in the room's history."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import open_channel, wait_for

pytestmark = pytest.mark.e2e

MESSAGES = 300
KILLS = 3
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


async def test_sigkill_during_flood_loses_and_duplicates_nothing(e2e, bridge, people, db):
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
    kill_at = sorted(rng.sample(range(20, MESSAGES - 20), KILLS))
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
    numbers = list(range(MESSAGES))
    t0 = time.monotonic()
    await asyncio.gather(flood(alice, numbers[0::2]), flood(bob, numbers[1::2]), killer())
    send_seconds = time.monotonic() - t0
    assert len(sent) == MESSAGES + 1  # the flood and the message sent while frozen
    assert bridge.running
    print(f"[e2e] {len(sent)} sends in {send_seconds:.1f} s; {kill_log}")
    cut = interrupted_pushes(e2e.synapse.log_path, log_offset)
    print(f"[e2e] pushes cut in flight by the kills: {cut}")
    assert cut, "test premise: at least one kill must land while Synapse awaits an answer"

    async def settled():
        n = await db.fetchval("SELECT count(*) FROM messages WHERE channel_id = $1", cid)
        return n if n >= len(sent) else None

    t1 = time.monotonic()
    await wait_for(settled, timeout=120, interval=0.25, what=f"{len(sent)} message rows")
    print(f"[e2e] index settled {time.monotonic() - t1:.1f} s after the last send")
    await asyncio.sleep(1)  # anything still in flight would show up as an extra row

    history = [e for e in await alice.history(room_id) if e["type"] == "m.room.message"]
    assert {e["event_id"] for e in history} == set(sent)

    rows = await db.fetch(
        """
        SELECT m.matrix_event_id, m.content_preview, m.sender_type, u.matrix_id
        FROM messages m LEFT JOIN users u ON u.id = m.sender_user_id
        WHERE m.channel_id = $1
        """,
        cid,
    )
    by_event: dict[str, list] = {}
    for row in rows:
        by_event.setdefault(row["matrix_event_id"], []).append(row)

    missing = [e["event_id"] for e in history if e["event_id"] not in by_event]
    extra = sorted(set(by_event) - set(sent))
    dupes = [k for k, v in by_event.items() if len(v) > 1]
    assert not missing, f"{len(missing)} messages have no row (seed {seed}): {missing[:5]}"
    assert not extra, f"{len(extra)} rows match no message (seed {seed}): {extra[:5]}"
    assert not dupes, f"duplicate rows (seed {seed}): {dupes[:5]}"
    assert len(rows) == len(sent)

    wrong = []
    for event in history:
        (row,) = by_event[event["event_id"]]
        sender, body = sent[event["event_id"]]
        assert event["sender"] == sender
        if (row["content_preview"], row["matrix_id"], row["sender_type"]) != (
            body,
            sender,
            "human",
        ):
            wrong.append((event["event_id"], dict(row), body, sender))
    assert not wrong, f"{len(wrong)} rows with a wrong preview/sender (seed {seed}): {wrong[:3]}"
