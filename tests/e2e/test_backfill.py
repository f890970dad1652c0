"""History when a room becomes a channel (issue 19, item 2), end to end: real Synapse,
real PostgreSQL, real NATS JetStream, the real bridge process.

- A room with 300 earlier messages (each naming Sofia, in a room where Alice will be
  alone with her: every one would be a `direct` call), an edit and a redaction becomes
  a channel when Alice invites Sofia. All 300 are indexed once, the edit and the
  redaction applied, `messaging.message.created` says `backfilled: true` for each, and
  no `router.invoke.agent` is published for any; a live message afterwards calls Sofia.
- A backfill still pending when the bridge stopped is finished at its next start.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from tests.e2e.agents_helpers import wait_membership
from tests.e2e.helpers import OwnIndex, Person, own_fixtures, own_index, wait_for
from tests.e2e.test_platform import PREFIX, STREAM, stream_messages

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SOFIA = "@agent-sofia:localhost"
EARLIER = 300

own = own_fixtures("backfill", index="index")
local_nats, db, bridge = own.nats, own.db, own.bridge


@pytest.fixture(scope="module")
async def index(e2e, pg_server_url, local_nats) -> OwnIndex:
    owner = "@bf.alice:localhost"

    def edit(cfg: Any) -> None:
        cfg["nats"] = {"url": local_nats.url, "stream": STREAM, "subject_prefix": PREFIX}
        cfg["microdaos"] = [{"external_id": "microdao:bf", "name": "BF", "owner": owner}]
        cfg["blueprints"] = [{"code": "bf_guide", "model": "demo"}]
        cfg["agents"] = [
            {"external_id": "agent:sofia", "name": "Sofia", "kind": "assistant",
             "blueprint": "bf_guide", "microdao": "microdao:bf", "owner": owner},
        ]  # fmt: skip

    return await own_index(e2e, pg_server_url, "backfill", edit)


@pytest.fixture(scope="module")
async def alice(people) -> Person:
    return await people("bf.alice")


async def count_rows(db: asyncpg.Pool, event_ids: list[str]) -> tuple[int, int]:
    row = await db.fetchrow(
        "SELECT count(*), count(DISTINCT matrix_event_id) FROM messages "
        "WHERE matrix_event_id = ANY($1::text[])",
        event_ids,
    )
    return row[0], row[1]


async def published(local_nats: Any, subject: str, event_ids: list[str]) -> list[dict[str, Any]]:
    wanted = set(event_ids)
    found = await stream_messages(local_nats, subject)
    if subject == "router.invoke.agent":
        return [p for p in found if p["payload"]["matrix_event_id"] in wanted]
    return [p for p in found if p["matrix_event_id"] in wanted]


async def test_a_room_with_300_earlier_messages_becomes_a_channel(
    alice, bridge, db, local_nats, index
) -> None:
    room_id = await alice.create_room(name=f"bf {uuid.uuid4().hex[:6]}", preset="private_chat")
    sent = [await alice.send_text(room_id, f"Sofia, earlier question {n}") for n in range(EARLIER)]
    edit = await alice.edit(room_id, sent[5], "Sofia, question 5 reworded")
    redaction = await alice.redact(room_id, sent[7])
    await alice.invite(room_id, SOFIA)
    await wait_membership(alice, room_id, SOFIA, "join")

    async def all_indexed() -> bool:
        return await count_rows(db, sent) == (EARLIER, EARLIER)

    await wait_for(all_indexed, timeout=60, what=f"the {EARLIER} earlier messages indexed")
    previews = dict(
        await db.fetch(
            "SELECT matrix_event_id, content_preview FROM messages "
            "WHERE matrix_event_id = ANY($1::text[])",
            [sent[5], sent[7]],
        )
    )
    assert previews == {sent[5]: "Sofia, question 5 reworded", sent[7]: "[deleted]"}

    # A live message after the history: Sofia is called. The publisher sends the outbox
    # in order, so once this call is on NATS, everything the backfill wrote is too.
    live = await alice.send_text(room_id, "Sofia, are you there now?")

    async def live_call() -> list[dict[str, Any]]:
        return await published(local_nats, "router.invoke.agent", [live])

    calls = await wait_for(live_call, timeout=30, what="the live message's invocation")
    assert [(c["agent_id"], c["entrypoint"]) for c in calls] == [("agent:sofia", "direct")]
    assert await published(local_nats, "router.invoke.agent", sent) == []
    created = await published(local_nats, "messaging.message.created", [*sent, live])
    by_event: dict[str, list[bool]] = {}
    for payload in created:
        by_event.setdefault(payload["matrix_event_id"], []).append(payload["backfilled"])
    assert by_event == {**{e: [True] for e in sent}, live: [False]}
    updated = await published(local_nats, "messaging.message.updated", [sent[5]])
    deleted = await published(local_nats, "messaging.message.deleted", [sent[7]])
    assert [p["edit_event_id"] for p in updated] == [edit]
    assert [p["redaction_event_id"] for p in deleted] == [redaction]
    assert await db.fetchval("SELECT count(*) FROM bridge_backfills") == 0
    log = index.log_file.read_text(encoding="utf-8", errors="replace")
    assert f"Backfill of {room_id} done" in log


async def test_a_backfill_cut_short_is_finished_at_the_next_start(
    alice, bridge, db, local_nats
) -> None:
    """The wish is what a bridge stopped mid-way leaves: the channel exists, part of its
    history is missing. The next start reads the room again and indexes the rest once."""
    room_id = await alice.create_room(name=f"bf {uuid.uuid4().hex[:6]}", preset="private_chat")
    sent = [await alice.send_text(room_id, f"Sofia, before {n}") for n in range(20)]
    await alice.invite(room_id, SOFIA)
    await wait_membership(alice, room_id, SOFIA, "join")

    async def all_indexed() -> bool:
        return await count_rows(db, sent) == (20, 20)

    await wait_for(all_indexed, timeout=60, what="the earlier messages indexed")
    await bridge.stop()
    lost = sent[:12]  # as if the bridge had stopped before writing these
    async with db.acquire() as conn, conn.transaction():
        for table in ("bridge_message_state", "bridge_message_threads"):
            await conn.execute(f"DELETE FROM {table} WHERE matrix_event_id = ANY($1::text[])", lost)
        await conn.execute("DELETE FROM messages WHERE matrix_event_id = ANY($1::text[])", lost)
        await conn.execute(
            "INSERT INTO bridge_backfills (channel_id, room_id) "
            "SELECT id, matrix_room_id FROM channels WHERE matrix_room_id = $1",
            room_id,
        )
    assert await count_rows(db, sent) == (8, 8)
    await bridge.start()
    await wait_for(all_indexed, timeout=60, what="the rest indexed after the start")

    async def wish_done() -> bool:
        return await db.fetchval("SELECT count(*) FROM bridge_backfills") == 0

    await wait_for(wish_done, timeout=30, what="the backfill's wish done")
    assert await count_rows(db, sent) == (20, 20)
