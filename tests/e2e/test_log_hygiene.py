"""The bridge's own log of a full run: no message text at INFO or above, no token at all.

The session's bridges all log at DEBUG into one file; this module reads it after driving
messages, edits, replies, redactions, names and a dead letter through its own bridge.
"""

from __future__ import annotations

import re
import uuid

import aiohttp
import pytest

from tests.e2e.helpers import load_yaml, open_channel, put_transaction, wait_indexed

pytestmark = pytest.mark.e2e

LEVEL = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def log_records(text: str) -> list[tuple[str, str]]:
    """(level, record text) per record; continuation lines (tracebacks) join their record."""
    records: list[tuple[str, str]] = []
    for line in text.splitlines():
        match = LEVEL.match(line)
        if match:
            records.append((match[1], line))
        elif records:
            level, body = records[-1]
            records[-1] = (level, f"{body}\n{line}")
    return records


async def test_no_plaintext_at_info_and_no_token_anywhere(e2e, bridge, people, db) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    alice = await people("alice.logs")
    room_id, channel = await open_channel(db, alice, e2e.bot, f"logs {canary}-room")
    first = await alice.send_text(room_id, f"{canary} hello")
    await alice.reply(room_id, first, alice.user_id, f"{canary} hello", f"{canary} reply")
    await alice.edit(room_id, first, f"{canary} edited")
    second = await alice.send_text(room_id, f"{canary} to redact")
    await alice.redact(room_id, second)
    await alice.set_room_name(room_id, f"{canary} renamed")
    assert await wait_indexed(db, channel["id"], 3, timeout=30) is not None
    # A bad event with plaintext in it, straight to the bridge: it is dead-lettered.
    bad = {"type": "m.room.message", "room_id": room_id, "event_id": f"$bad-{canary}",
           "sender": alice.user_id, "content": {"body": f"{canary} in a dead letter"}}  # fmt: skip
    async with aiohttp.ClientSession() as http:
        status, _ = await put_transaction(http, bridge.port, e2e.hs_token, f"logs-{canary}", [bad])
    assert status == 200
    assert (
        await db.fetchval(
            "SELECT count(*) FROM bridge_dead_letters WHERE event_id = $1", bad["event_id"]
        )
        == 1
    )

    config = load_yaml(e2e.config)
    tokens = [config["appservice"]["as_token"], config["appservice"]["hs_token"]]
    records = log_records(e2e.log_file.read_text(encoding="utf-8"))
    assert any(level == "INFO" for level, _ in records), "the log under test is empty"
    leaked = [r for level, r in records if level != "DEBUG" and canary in r]
    assert not leaked, leaked[:3]
    with_token = [r for _, r in records if any(t in r for t in tokens)]
    assert not with_token, with_token[:3]
