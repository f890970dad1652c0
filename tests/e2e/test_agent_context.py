"""What an agent needs to answer (issue 17), end to end: real Synapse, PostgreSQL, NATS
JetStream and the bridge process.

- The context endpoint gives the whole message (3,000 characters, not the preview) and
  the conversation before it in order, with edits applied and redactions shown as such,
  read from the homeserver as the agent's puppet; each of its errors.
- A question in a thread is answered in that thread (read back from /relations).
- A notice naming an agent calls nobody.
- A retried post with the same txn_id is one message.
- The reference runtime takes the question from the context endpoint (a 3,000-character
  question reaches it whole), answers in the thread, names only the asker in m.mentions,
  and with --openai-url sends the conversation to an OpenAI-compatible server (a
  stand-in here) and posts the model's answer.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from daarion_bridge.config import load_config
from daarion_bridge.devtools.demo_runtime import DemoRuntime
from daarion_bridge.devtools.nats import LocalNats
from tests.e2e.helpers import (
    OwnIndex,
    Person,
    own_fixtures,
    own_index,
    q,
    wait_for,
)
from tests.e2e.runtime_helpers import (
    QUIET,
    SOFIA,
    TOKEN,
    agents_config,
    call,
    channel_of,
    indexed,
    on_stream,
    room_with,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

STREAM, PREFIX = "E2ECONTEXT", "ctx."


own = own_fixtures("context", index="index")
local_nats, db, bridge = own.nats, own.db, own.bridge


@pytest.fixture(scope="module")
async def index(e2e, pg_server_url, local_nats) -> OwnIndex:
    return await own_index(
        e2e,
        pg_server_url,
        "context",
        lambda cfg: agents_config(cfg, "@ctx.alice:localhost", local_nats.url, STREAM, PREFIX),
    )


@pytest.fixture(scope="module")
async def alice(people) -> Person:
    return await people("ctx.alice")


async def context(e2e, agent: str, token: str | None = TOKEN, **query: str) -> tuple[int, Any]:
    path = f"/internal/agents/{agent}/context"
    return await call(e2e.appservice_port, "GET", path, token, **query)


async def post(e2e, agent: str, body: dict[str, Any]) -> tuple[int, Any]:
    path = f"/internal/agents/{agent}/post-to-channel"
    return await call(e2e.appservice_port, "POST", path, TOKEN, body)


async def invocation_of(nats_server: LocalNats, event_id: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        for p in await on_stream(nats_server, STREAM, PREFIX + "router.invoke.agent"):
            if p["payload"]["matrix_event_id"] == event_id:
                return p
        return None

    return await wait_for(found, what=f"router.invoke.agent of {event_id}")


async def send_in_thread(person: Person, room_id: str, root: str, body: str) -> str:
    """A message in the thread of `root`, as Element sends it."""
    in_thread = {
        "rel_type": "m.thread",
        "event_id": root,
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": root},
    }
    content = {"msgtype": "m.text", "body": body, "m.relates_to": in_thread}
    return await person.send(room_id, "m.room.message", content)


async def test_a_long_question_reaches_the_agent_whole(e2e, alice, bridge, db, local_nats) -> None:
    room_id = await room_with(alice, SOFIA)
    question = "Sofia, please read all of this.\n\n" + "".join(
        f"Point {i}: the quick brown fox jumps over the lazy dog. " for i in range(55)
    )
    assert len(question) >= 3000
    asked = await alice.send_text(room_id, question)
    invoked = await invocation_of(local_nats, asked)
    payload = invoked["payload"]
    assert (payload["thread_root"], payload["reply_to"]) == (None, None)
    status, body = await context(
        e2e, "agent:sofia", channel_id=payload["channel_id"], message_id=payload["message_id"]
    )
    assert status == 200, body
    message = body["message"]
    assert message["text"] == question and not message["truncated"]
    assert (message["sender_id"], message["sender_type"]) == (f"matrix:{alice.user_id}", "human")
    assert message["message_id"] == payload["message_id"]
    assert (body["agent_id"], body["matrix_room_id"]) == ("agent:sofia", room_id)
    assert body["microdao_id"] == payload["microdao_id"]


async def test_history_in_order_with_edits_and_redactions(e2e, alice, bridge, db) -> None:
    room_id = await room_with(alice, SOFIA)
    first = await alice.send_text(room_id, "first")
    second = await alice.send_text(room_id, "secnod")
    await alice.edit(room_id, second, "second")
    gone = await alice.send_text(room_id, "a secret")
    await alice.redact(room_id, gone)
    fourth = await alice.send_text(room_id, "fourth")
    asked = await alice.send_text(room_id, "Sofia, what did I say?")
    channel_id = await channel_of(db, room_id)
    await indexed(db, asked)

    status, body = await context(
        e2e, "agent:sofia", channel_id=channel_id, message_id=asked, limit="4"
    )
    assert status == 200, body
    history = body["history"]
    assert [m["matrix_event_id"] for m in history] == [first, second, gone, fourth]
    assert [m["text"] for m in history] == ["first", "second", None, "fourth"]
    assert [m["edited"] for m in history] == [False, True, False, False]
    assert [m["deleted"] for m in history] == [False, False, True, False]
    assert all(m["sender_name"] and m["created_at"] for m in history)
    assert body["message"]["matrix_event_id"] == asked
    # The platform uuid works as well as the event id; limit bounds the history.
    row_id = await indexed(db, asked)
    status, again = await context(
        e2e, "agent:sofia", channel_id=room_id, message_id=row_id, limit="2"
    )
    assert status == 200 and [m["matrix_event_id"] for m in again["history"]] == [gone, fourth]


async def test_a_question_in_a_thread_is_answered_in_that_thread(
    e2e, alice, bridge, db, local_nats
) -> None:
    room_id = await room_with(alice, SOFIA)
    root = await alice.send_text(room_id, "lunch plans")
    asked = await send_in_thread(alice, room_id, root, "Sofia, where?")
    payload = (await invocation_of(local_nats, asked))["payload"]
    assert (payload["thread_root"], payload["reply_to"]) == (root, None)
    created = [
        p for p in await on_stream(local_nats, STREAM, PREFIX + "messaging.message.created")
        if p["matrix_event_id"] in (root, asked)
    ]  # fmt: skip
    assert {p["matrix_event_id"]: p["thread_root"] for p in created} == {root: None, asked: root}
    status, body = await context(
        e2e, "agent:sofia", channel_id=payload["channel_id"], message_id=asked
    )
    assert status == 200 and body["message"]["thread_root"] == root

    # The runtime answers with reply_to only: the bridge puts it in the thread.
    status, sent = await post(
        e2e,
        "agent:sofia",
        {"channel_id": payload["channel_id"], "text": "At noon.", "reply_to": asked},
    )
    assert status == 200, sent
    path = f"/v1/rooms/{q(room_id)}/relations/{q(root)}/m.thread"
    thread = (await alice.request("GET", path))["chunk"]
    answer = next(e for e in thread if e["event_id"] == sent["matrix_event_id"])
    assert answer["sender"] == SOFIA
    assert answer["content"]["m.relates_to"] == {
        "rel_type": "m.thread",
        "event_id": root,
        "is_falling_back": False,
        "m.in_reply_to": {"event_id": asked},
    }
    row = await db.fetchval(
        "SELECT thread_root FROM bridge_message_threads WHERE matrix_event_id = $1",
        sent["matrix_event_id"],
    )
    assert row == root


async def test_a_notice_naming_an_agent_calls_nobody(alice, bridge, db, local_nats) -> None:
    room_id = await room_with(alice, SOFIA, QUIET)
    notice = await alice.send_text(room_id, "Sofia, the build finished", msgtype="m.notice")
    await indexed(db, notice)
    # A text after it does call her: once its invocation is out, the notice's would be.
    text = await alice.send_text(room_id, "Sofia, and now?")
    await invocation_of(local_nats, text)
    invoked = [
        p["payload"]["matrix_event_id"]
        for p in await on_stream(local_nats, STREAM, PREFIX + "router.invoke.agent")
    ]
    assert notice not in invoked


async def test_a_retried_post_with_one_txn_id_is_one_message(e2e, alice, bridge, db) -> None:
    room_id = await room_with(alice, QUIET)
    body = {"channel_id": room_id, "text": "once only", "txn_id": f"t-{uuid.uuid4().hex}"}
    first, second = await post(e2e, "agent:quiet", body), await post(e2e, "agent:quiet", body)
    assert first[0] == second[0] == 200, (first, second)
    assert first[1]["matrix_event_id"] == second[1]["matrix_event_id"]
    sent = [
        e
        for e in await alice.history(room_id)
        if e["sender"] == QUIET and "body" in e.get("content", {})
    ]
    assert [e["content"]["body"] for e in sent] == ["once only"]


# -- the reference runtime (issue 17, item 7) ---------------------------------------------


async def sofias_answer(alice: Person, room_id: str, asked: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        for e in await alice.history(room_id):
            relates = e.get("content", {}).get("m.relates_to", {})
            if e["sender"] == SOFIA and relates.get("m.in_reply_to", {}).get("event_id") == asked:
                return e
        return None

    return await wait_for(found, timeout=20, what="Sofia's answer")


async def test_a_long_question_reaches_the_runtime_whole(alice, bridge, index, db) -> None:
    runtime = DemoRuntime(load_config(index.config))
    await runtime.start()
    try:
        room_id = await room_with(alice, SOFIA)
        question = "Sofia, read this.\n" + " ".join(f"item{i} of the list" for i in range(200))
        assert len(question) >= 3000
        asked = await alice.send_text(room_id, question)
        reply = await sofias_answer(alice, room_id, asked)
    finally:
        await runtime.stop()
    assert reply["content"]["body"] == f"You asked: {question}"  # not a 500-char preview
    assert reply["content"]["m.mentions"] == {"user_ids": [alice.user_id]}


async def test_a_question_in_a_thread_is_answered_there_by_a_model(
    alice, bridge, index, db
) -> None:
    asked_model: list[dict[str, Any]] = []

    async def completions(request: web.Request) -> web.Response:
        asked_model.append(await request.json())
        return web.json_response({"choices": [{"message": {"content": "At noon."}}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    model_server = TestServer(app, host="127.0.0.1")
    await model_server.start_server()
    url = str(model_server.make_url("/v1"))
    runtime = DemoRuntime(load_config(index.config), openai_url=url, model="local-model")
    await runtime.start()
    try:
        room_id = await room_with(alice, SOFIA, QUIET)  # not a direct room: only a mention calls
        root = await alice.send_text(room_id, "Lunch on Friday?")
        asked = await send_in_thread(alice, room_id, root, "Sofia, when?")
        reply = await sofias_answer(alice, room_id, asked)
    finally:
        await runtime.stop()
        await model_server.close()
    assert reply["content"]["body"] == "At noon."
    assert reply["content"]["m.mentions"] == {"user_ids": [alice.user_id]}
    path = f"/v1/rooms/{q(room_id)}/relations/{q(root)}/m.thread"
    thread = [e["event_id"] for e in (await alice.request("GET", path))["chunk"]]
    assert reply["event_id"] in thread
    (request,) = asked_model
    assert request["model"] == "local-model"
    said = [m["content"] for m in request["messages"] if m["role"] == "user"]
    assert said[-2:] == ["ctx.alice: Lunch on Friday?", "ctx.alice: Sofia, when?"]


# -- the context endpoint's errors (last: Synapse restarts) -------------------------------


async def test_context_endpoint_errors(e2e, alice, bridge, db) -> None:
    room_id = await room_with(alice, SOFIA)
    asked = await alice.send_text(room_id, "hello")
    channel_id = await channel_of(db, room_id)
    await indexed(db, asked)
    ok = {"channel_id": channel_id, "message_id": asked}

    cases: list[tuple[int, tuple[str, str | None, dict[str, str]]]] = [
        (401, ("agent:sofia", None, ok)),
        (403, ("agent:sofia", "wrong-token", ok)),
        (400, ("agent:sofia", TOKEN, {"message_id": asked})),
        (400, ("agent:sofia", TOKEN, {"channel_id": channel_id})),
        (400, ("agent:sofia", TOKEN, {**ok, "limit": "0"})),
        (400, ("agent:sofia", TOKEN, {**ok, "limit": "101"})),
        (400, ("agent:sofia", TOKEN, {**ok, "limit": "ten"})),
        (404, ("agent:nobody", TOKEN, ok)),
        (404, ("agent:sofia", TOKEN, {**ok, "channel_id": str(uuid.uuid4())})),
        (404, ("agent:sofia", TOKEN, {**ok, "message_id": str(uuid.uuid4())})),
        (404, ("agent:sofia", TOKEN, {**ok, "message_id": "$not-here"})),
        # Quiet is not in the room: the index is no way around Matrix's visibility.
        (403, ("agent:quiet", TOKEN, ok)),
    ]
    for expected, (agent, token, query) in cases:
        status, body = await context(e2e, agent, token, **query)
        assert status == expected and isinstance(body.get("error"), str), (expected, query, body)
    status, body = await context(e2e, "agent:sofia", **ok, limit="100")
    assert status == 200, body

    # The homeserver down: 503, in JSON. Last in the module: Synapse restarts after it.
    await e2e.synapse.stop()
    try:
        status, body = await context(e2e, "agent:sofia", **ok)
    finally:
        await e2e.synapse.start()
    assert status == 503 and "retry" in body["error"], body
