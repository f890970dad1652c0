"""The platform side end to end: real Synapse, real PostgreSQL, real NATS JetStream, the
real bridge process and the demo agent runtime.

- A mention reaches the agent runtime as `router.invoke.agent`, Sofia's answer comes back
  through the post endpoint as her m.notice, and is indexed as an agent message.
- `messaging.message.created` arrives on NATS exactly once per message across a bridge
  SIGKILL and a NATS restart.
- The post endpoint answers each error status of its contract.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from daarion_bridge.config import load_config
from daarion_bridge.devtools.demo_runtime import DemoRuntime
from daarion_bridge.devtools.nats import LocalNats
from tests.e2e.agents_helpers import wait_membership
from tests.e2e.helpers import (
    OwnIndex,
    Person,
    own_fixtures,
    own_index,
    stream_events,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

D = "localhost"
SOFIA, QUIET = f"@agent-sofia:{D}", f"@agent-quiet:{D}"
SERVICE_TOKEN = "service-" + uuid.uuid4().hex
STREAM = "E2EPLATFORM"
PREFIX = "e2e."
LIMIT = 3  # api.agent_messages_per_hour for this module


@dataclass
class Platform:
    config: Path
    database_url: str
    nats: LocalNats
    port: int


own = own_fixtures("platform", index="index")
local_nats, db, bridge = own.nats, own.db, own.bridge


@pytest.fixture(scope="module")
async def index(e2e, pg_server_url, local_nats) -> OwnIndex:
    owner = "@pf.alice:localhost"

    def edit(cfg: Any) -> None:
        cfg["nats"] = {"url": local_nats.url, "stream": STREAM, "subject_prefix": PREFIX}
        cfg["api"] = {"service_token": SERVICE_TOKEN, "agent_messages_per_hour": LIMIT}
        cfg["appservice"]["body_timeout"] = 1  # seconds: the slow-client test waits this
        cfg["microdaos"] = [{"external_id": "microdao:pf", "name": "PF", "owner": owner}]
        cfg["blueprints"] = [{"code": "pf_guide", "model": "demo"}]
        cfg["agents"] = [
            {"external_id": "agent:sofia", "name": "Sofia", "kind": "assistant",
             "blueprint": "pf_guide", "microdao": "microdao:pf", "owner": owner},
            {"external_id": "agent:quiet", "name": "Quiet", "kind": "assistant",
             "blueprint": "pf_guide", "microdao": "microdao:pf", "owner": owner},
        ]  # fmt: skip

    return await own_index(e2e, pg_server_url, "platform", edit)


@pytest.fixture(scope="module")
def platform(e2e, index, local_nats) -> Platform:
    return Platform(index.config, index.database_url, local_nats, e2e.appservice_port)


@pytest.fixture(scope="module")
async def runtime(bridge, platform) -> AsyncIterator[DemoRuntime]:
    demo = DemoRuntime(load_config(platform.config))
    await demo.start()
    try:
        yield demo
    finally:
        await demo.stop()


@pytest.fixture(scope="module")
async def alice(people) -> Person:
    return await people("pf.alice")


async def room_with(alice: Person, *agents: str, preset: str = "private_chat") -> str:
    room_id = await alice.create_room(name=f"pf {uuid.uuid4().hex[:6]}", preset=preset)
    for agent in agents:
        await alice.invite(room_id, agent)
        await wait_membership(alice, room_id, agent, "join")
    return room_id


async def channel_of(db: asyncpg.Pool, room_id: str) -> str:
    """The room's channel id, once indexed: the agent joins on the homeserver before the
    bridge commits the channel, so seeing the join is not enough."""
    sql = "SELECT id::text FROM channels WHERE matrix_room_id = $1"
    return await wait_for(lambda: db.fetchval(sql, room_id), what=f"channel of {room_id}")


async def post(
    platform: Platform, agent: str, body: Any, token: str | None = SERVICE_TOKEN
) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{platform.port}/internal/agents/{agent}/post-to-channel"
    headers = {"X-Internal-Service-Token": token} if token is not None else {}
    data = body if isinstance(body, str) else json.dumps(body)
    async with aiohttp.ClientSession() as http, http.post(url, data=data, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def stream_messages(server: LocalNats, subject: str) -> list[dict[str, Any]]:
    return await stream_events(server.url, STREAM, PREFIX + subject)


# -- mention -> invoke -> demo runtime -> reply indexed as the agent ---------------------------


async def test_mention_gets_sofias_answer_indexed_as_agent(alice, platform, runtime, db) -> None:
    room_id = await room_with(alice, SOFIA)
    started = time.monotonic()
    asked = await alice.send_text(room_id, "Sofia, help")

    async def answer() -> dict[str, Any] | None:
        for e in await alice.history(room_id):
            relates = e.get("content", {}).get("m.relates_to", {})
            if e["sender"] == SOFIA and relates.get("m.in_reply_to", {}).get("event_id") == asked:
                return e
        return None

    reply = await wait_for(answer, timeout=15, what="Sofia's answer in the room")
    seen_after = time.monotonic() - started
    assert reply["content"]["msgtype"] == "m.notice"
    # The reference runtime names the asker only (issue 17, item 7).
    assert reply["content"]["m.mentions"] == {"user_ids": [alice.user_id]}
    assert "Sofia" in reply["content"]["body"] and "agent:sofia" in reply["content"]["body"]
    row = await db.fetchrow(
        "SELECT m.sender_type, m.sender_user_id, a.external_id FROM messages m "
        "JOIN agents a ON a.id = m.sender_agent_id WHERE m.matrix_event_id = $1",
        reply["event_id"],
    )
    assert row is not None, "the answer is indexed"
    assert (row["sender_type"], row["sender_user_id"], row["external_id"]) == (
        "agent",
        None,
        "agent:sofia",
    )
    invokes = [
        p for p in await stream_messages(platform.nats, "router.invoke.agent")
        if p["payload"]["matrix_event_id"] == asked
    ]  # fmt: skip
    assert [(p["agent_id"], p["entrypoint"]) for p in invokes] == [("agent:sofia", "direct")]
    # The answer does not invoke anyone (loop rule).
    assert not [
        p for p in await stream_messages(platform.nats, "router.invoke.agent")
        if p["payload"]["matrix_event_id"] == reply["event_id"]
    ]  # fmt: skip
    print(f"\n[platform] mention -> answer visible in the room after {seen_after:.2f} s")


# -- exactly once on NATS across a bridge crash and a NATS restart ----------------------------


async def test_message_events_exactly_once_across_crash_and_nats_restart(
    alice, platform, bridge, db
) -> None:
    room_id = await room_with(alice)  # no agent: only message events
    await alice.invite(room_id, "@daarion:localhost")
    await wait_membership(alice, room_id, "@daarion:localhost", "join")
    sent: list[str] = []

    async def send(n: int) -> None:
        for i in range(n):
            event_id, _ = await alice.send_text_retrying(room_id, f"flow {len(sent)} {i}")
            sent.append(event_id)

    await send(20)
    bridge.kill()  # SIGKILL mid-stream
    await send(10)  # queued by Synapse while the bridge is down
    await bridge.start()
    await send(10)
    await platform.nats.stop()  # NATS down: the outbox holds events, ingest goes on
    await send(20)
    await asyncio.sleep(1)
    await platform.nats.start()
    await send(10)

    async def indexed() -> bool:
        n = await db.fetchval(
            "SELECT count(*) FROM messages WHERE matrix_event_id = ANY($1::text[])", sent
        )
        return n == len(sent)

    await wait_for(indexed, timeout=60, what="every message indexed")

    async def drained() -> bool:
        return await db.fetchval(
            "SELECT count(*) = 0 FROM bridge_outbox "
            "WHERE id > (SELECT last_sent_id FROM bridge_outbox_cursor)"
        )

    await wait_for(drained, timeout=60, what="the outbox drained to NATS")
    created = [
        p["matrix_event_id"]
        for p in await stream_messages(platform.nats, "messaging.message.created")
        if p["matrix_room_id"] == room_id
    ]
    missing = set(sent) - set(created)
    doubled = {e for e in created if created.count(e) > 1}
    assert not missing and not doubled, (len(missing), len(doubled))
    assert sorted(created) == sorted(sent)
    print(f"\n[platform] {len(sent)} messages, crash + NATS restart: 0 lost, 0 doubled on NATS")


# -- the post endpoint's contract ---------------------------------------------------------------


async def test_post_endpoint_errors(alice, platform, bridge, db) -> None:
    room_id = await room_with(alice, QUIET)
    channel_id = await channel_of(db, room_id)
    ok = {"channel_id": channel_id, "text": "hello"}

    assert (await post(platform, "agent:quiet", ok, token=None))[0] == 401
    assert (await post(platform, "agent:quiet", ok, token="wrong"))[0] == 403
    assert (await post(platform, "agent:nobody", ok))[0] == 404
    assert (await post(platform, "agent:quiet", {**ok, "channel_id": str(uuid.uuid4())}))[0] == 404
    for bad in ({"channel_id": channel_id}, {**ok, "text": ""}, {**ok, "extra": 1}, "not json",
                {**ok, "reply_to": "not-an-event"}, {**ok, "text": "x" * 10_001}):  # fmt: skip
        status, body = await post(platform, "agent:quiet", bad)
        assert status == 400 and body.get("error"), bad if isinstance(bad, str) else list(bad)

    private = await room_with(alice, SOFIA)  # Quiet is not in it and may not join
    private_id = await channel_of(db, private)
    assert (await post(platform, "agent:quiet", {**ok, "channel_id": private_id}))[0] == 403

    answers = [await post(platform, "agent:quiet", {**ok, "text": f"n{i}"}) for i in range(LIMIT)]
    assert [s for s, _ in answers] == [200] * LIMIT, answers  # the bodies say why
    for _, body in answers:
        row = await db.fetchrow(
            "SELECT sender_type, id::text FROM messages WHERE matrix_event_id = $1",
            body["matrix_event_id"],
        )
        assert row is not None and row["sender_type"] == "agent" and row["id"] == body["message_id"]
    status, body = await post(platform, "agent:quiet", ok)
    assert status == 429 and 0 < body["retry_after_ms"] <= 3600_000
    # By uuid and by room id too (the limit is per agent: Sofia is not limited by Quiet).
    sofia_id = str(await db.fetchval("SELECT id FROM agents WHERE external_id = 'agent:sofia'"))
    status, body = await post(platform, sofia_id, {"channel_id": private, "text": "by ids"})
    assert status == 200, body


async def test_a_slow_client_of_the_post_endpoint_gets_408(platform, bridge, db) -> None:
    body = b'{"channel_id": "x", "text": "never finished"}'
    reader, writer = await asyncio.open_connection("127.0.0.1", platform.port)
    try:
        writer.write(
            b"POST /internal/agents/agent:quiet/post-to-channel HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"X-Internal-Service-Token: {SERVICE_TOKEN}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=15)
    finally:
        writer.close()
    assert status_line.split()[1] == b"408", status_line


# -- what Element sends besides text: polls, locations, spaces (issue 19) ---------------------


async def created_event(platform: Platform, event_id: str) -> dict[str, Any]:
    """The messaging.message.created payload of this event, once it is on NATS."""

    async def found() -> dict[str, Any] | None:
        for p in await stream_messages(platform.nats, "messaging.message.created"):
            if p["matrix_event_id"] == event_id:
                return p
        return None

    return await wait_for(found, what=f"messaging.message.created of {event_id}")


async def test_a_poll_naming_an_agent_is_a_message_that_calls_it(
    alice, platform, bridge, db
) -> None:
    """What Element Web sends for a new poll (MSC3381 with MSC1767 text)."""
    room_id = await room_with(alice, SOFIA, QUIET)  # two agents: no `direct` call
    question, answers = "Sofia, pizza or sushi tonight?", ["Pizza", "Sushi"]
    text = "org.matrix.msc1767.text"
    poll_id = await alice.send(
        room_id,
        "org.matrix.msc3381.poll.start",
        {
            "org.matrix.msc3381.poll.start": {
                "question": {text: question, "body": question, "msgtype": "m.text"},
                "kind": "org.matrix.msc3381.poll.disclosed",
                "max_selections": 1,
                "answers": [{"id": f"a{i}", text: a} for i, a in enumerate(answers)],
            },
            text: question + "".join(f"\n{i + 1}. {a}" for i, a in enumerate(answers)),
        },
    )
    preview = f"[poll] {question} (Pizza / Sushi)"
    created = await created_event(platform, poll_id)
    assert created["content_preview"] == preview
    sql = "SELECT content_preview FROM messages WHERE matrix_event_id = $1"
    assert await db.fetchval(sql, poll_id) == preview

    async def invoked() -> list[tuple[str, str]] | None:
        calls = [
            (p["agent_id"], p["entrypoint"])
            for p in await stream_messages(platform.nats, "router.invoke.agent")
            if p["payload"]["matrix_event_id"] == poll_id
        ]
        return calls or None

    assert await wait_for(invoked, what="the poll's invocation") == [
        ("agent:sofia", "channel_message")
    ]
    # A response changes nothing visible: no message of its own.
    response = await alice.send(
        room_id,
        "org.matrix.msc3381.poll.response",
        {
            "org.matrix.msc3381.poll.response": {"answers": ["a0"]},
            "m.relates_to": {"rel_type": "m.reference", "event_id": poll_id},
        },
    )
    marker = await alice.send_text(room_id, "after the vote")
    await created_event(platform, marker)  # everything before it is indexed too
    assert await db.fetchval(sql, response) is None
    assert await db.fetchval(sql, poll_id) == preview


async def test_a_shared_location_keeps_no_coordinates(alice, platform, bridge, db) -> None:
    """What Element Web sends for "Share my location"."""
    room_id = await room_with(alice, QUIET, SOFIA)
    geo = "geo:51.5008,-0.1247;u=35"
    event_id = await alice.send(
        room_id,
        "m.room.message",
        {
            "msgtype": "m.location",
            "body": f"User Location {geo} at 2026-12-06T03:00:00.000Z",
            "geo_uri": geo,
            "org.matrix.msc3488.location": {"uri": geo},
            "org.matrix.msc3488.asset": {"type": "m.self"},
            "org.matrix.msc3488.ts": 1796526000000,
        },
    )
    created = await created_event(platform, event_id)
    assert created["content_preview"] == "[location]"
    sql = "SELECT content_preview FROM messages WHERE matrix_event_id = $1"
    assert await db.fetchval(sql, event_id) == "[location]"


async def test_a_space_is_not_a_channel(alice, bridge, db) -> None:
    """The bot invited into a space stays (to learn its children) but makes no channel of
    it; an agent invited into a space leaves."""
    space_id = await alice.create_room(
        name=f"pf space {uuid.uuid4().hex[:6]}",
        preset="private_chat",
        creation_content={"type": "m.space"},
    )
    await alice.invite(space_id, "@daarion:localhost")
    await wait_membership(alice, space_id, "@daarion:localhost", "join")
    await alice.invite(space_id, SOFIA)
    await wait_membership(alice, space_id, SOFIA, "leave")
    # A room made after the space is indexed, so the space's turn has passed.
    marker_room = await room_with(alice, SOFIA)
    await channel_of(db, marker_room)
    sql = "SELECT count(*) FROM channels WHERE matrix_room_id = $1"
    assert await db.fetchval(sql, space_id) == 0
    assert await alice.membership(space_id, "@daarion:localhost") == "join"
