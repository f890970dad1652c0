"""Property tests: whatever a transaction holds, the bridge never crashes, never 5xx
while the database is up, never breaks a constraint, and sets bad events aside."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from daarion_bridge.ingest.channel_setup import ChannelSetup
from daarion_bridge.ingest.writer import write_transaction
from daarion_bridge.translate.rooms import snapshot_from_state

from .conftest import HS_TOKEN, ROOM, Api

PREVIEW_LENGTH = 500
# Every plane, NUL, control and format characters, and lone surrogates.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)
huge_text = st.builds(lambda c, n: c * n, st.characters(codec=None), st.integers(0, 30_000))
scalars = st.none() | st.booleans() | st.integers() | st.floats() | any_text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(any_text, inner, max_size=5),
    max_leaves=30,
)
deeply_nested = st.integers(1, 400).map(lambda depth: json.loads("[" * depth + "]" * depth))

EVENT_TYPES = [
    "m.room.message", "m.sticker", "m.room.encrypted", "m.room.redaction", "m.room.member",
    "m.room.power_levels", "m.room.name", "m.room.join_rules", "m.reaction", "m.room.create",
]  # fmt: skip
ROOMS = st.sampled_from([ROOM, "!other:localhost"]) | any_text
USERS = st.sampled_from(["@alice:localhost", "@bob:localhost", "@daarion:localhost"]) | any_text
message_content = st.fixed_dictionaries(
    {},
    optional={
        "msgtype": st.sampled_from(["m.text", "m.image", "m.file", "m.notice"]) | json_values,
        "body": any_text | huge_text | json_values,
        "filename": any_text | json_values,
        "membership": st.sampled_from(["join", "leave", "ban", "invite"]) | json_values,
        "name": any_text | json_values,
        "join_rule": st.sampled_from(["public", "invite", "restricted"]) | json_values,
        "users": st.dictionaries(USERS, st.integers() | json_values, max_size=4) | json_values,
        "redacts": any_text | json_values,
        "m.new_content": json_values,
        "m.relates_to": st.fixed_dictionaries(
            {}, optional={"rel_type": st.just("m.replace") | json_values,
                          "event_id": any_text, "m.in_reply_to": json_values}
        ) | json_values,
    },
)  # fmt: skip
plausible_event = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(EVENT_TYPES) | json_values,
        "room_id": ROOMS | json_values,
        "event_id": st.uuids().map(lambda u: f"${u.hex}") | any_text | json_values,
        "sender": USERS | json_values,
        "origin_server_ts": st.integers(-(2**63), 2**63) | json_values,
        "content": message_content | json_values,
        "state_key": st.just("") | USERS | json_values,
        "redacts": any_text | json_values,
        "unsigned": json_values,
    },
)
events = st.lists(plausible_event | json_values | deeply_nested, max_size=100)
bodies = (
    st.fixed_dictionaries(
        {"events": events},
        optional={"ephemeral": json_values, "de.sorunome.msc2409.ephemeral": json_values},
    )
    | json_values
)


async def assert_constraints_hold(pool: asyncpg.Pool) -> None:
    bad = await pool.fetchval(
        """
        SELECT count(*) FROM messages
        WHERE (sender_user_id IS NULL) = (sender_agent_id IS NULL)
           OR sender_type NOT IN ('human', 'agent')
           OR char_length(content_preview) > $1
        """,
        PREVIEW_LENGTH,
    )
    assert bad == 0
    assert await pool.fetchval(
        "SELECT count(*) FROM channel_members "
        "WHERE (member_user_id IS NULL) = (member_agent_id IS NULL)"
    ) == 0  # fmt: skip


HOSTILE = settings(
    max_examples=int(os.environ.get("DAARION_HYPOTHESIS_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@HOSTILE
@given(body=bodies)
async def test_any_body_is_answered_without_5xx(api: Api, pool: asyncpg.Pool, body: Any) -> None:
    status, answer = await api.put_txn(f"h-{uuid.uuid4().hex}", json.dumps(body))
    assert status in (200, 400), (status, answer)
    if status == 400:
        assert not (isinstance(body, dict) and isinstance(body.get("events"), list))
    await assert_constraints_hold(pool)


@HOSTILE
@given(batch=events)
async def test_bad_events_are_dead_lettered_and_good_ones_flow(
    api: Api, pool: asyncpg.Pool, batch: list[Any]
) -> None:
    good = {
        "type": "m.room.message", "room_id": ROOM, "event_id": f"$good-{uuid.uuid4().hex}",
        "sender": "@alice:localhost", "origin_server_ts": 1_700_000_000_000,
        "content": {"msgtype": "m.text", "body": "still here"},
    }  # fmt: skip
    letters_before = await pool.fetchval("SELECT count(*) FROM bridge_dead_letters")
    txn_id = f"e-{uuid.uuid4().hex}"
    status, _ = await api.put_txn(txn_id, json.dumps({"events": [*batch, good]}))
    assert status == 200
    letters = await pool.fetchval("SELECT count(*) FROM bridge_dead_letters") - letters_before
    assert letters >= sum(1 for e in batch if not isinstance(e, dict))
    assert await pool.fetchval(
        "SELECT count(*) FROM bridge_transactions WHERE txn_id = $1", txn_id
    ) == 1  # fmt: skip
    await assert_constraints_hold(pool)


async def test_unstorable_transaction_id_is_400(api: Api) -> None:
    url = URL(f"{api.base}_matrix/app/v1/transactions/nul%00id", encoded=True)
    headers = {"Authorization": f"Bearer {HS_TOKEN}"}
    async with api.client.put(url, data='{"events": []}', headers=headers) as resp:
        assert resp.status == 400
        assert (await resp.json())["errcode"] == "M_INVALID_PARAM"


async def test_concurrent_duplicate_transactions_double_nothing(
    api: Api, pool: asyncpg.Pool
) -> None:
    message = {
        "type": "m.room.message", "room_id": ROOM, "event_id": "$dup", "sender": "@a:localhost",
        "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": "once"},
    }  # fmt: skip
    results = await asyncio.gather(*(api.put_txn("dup", {"events": [message]}) for _ in range(8)))
    assert {status for status, _ in results} == {200}
    assert await pool.fetchval("SELECT count(*) FROM bridge_transactions WHERE txn_id = 'dup'") == 1


def _event(etype: str, content: Any, **extra: Any) -> dict[str, Any]:
    return {
        "type": etype, "room_id": ROOM, "event_id": f"$h-{uuid.uuid4().hex}",
        "sender": "@alice:localhost", "origin_server_ts": 1_700_000_000_000,
        "content": content, **extra,
    }  # fmt: skip


BAD_TARGETS = {
    "edit": _event(
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": "* x",
            "m.new_content": {"msgtype": "m.text", "body": "x"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$a\ud800b"},
        },
    ),  # fmt: skip
    "redaction": _event("m.room.redaction", {}, redacts="$a\ud800b"),
    "redaction in content": _event("m.room.redaction", {"redacts": "$a\udfffb"}),
    # The content is replaced by DEEP in the request's text: too deep for json.dumps here.
    "deep power levels": _event("m.room.power_levels", "DEEP", state_key=""),
}
DEEP = '{"users": ' + "[" * 980 + "]" * 980 + "}"


@pytest.mark.parametrize("bad", BAD_TARGETS.values(), ids=BAD_TARGETS.keys())
async def test_an_event_that_can_never_be_written_is_set_aside_not_retried(
    api: Api, pool: asyncpg.Pool, bad: dict[str, Any]
) -> None:
    """A 5xx would make Synapse retry this transaction forever, everything queued
    behind it: the event is dead-lettered and the rest commits."""
    state = [
        {"type": "m.room.create", "state_key": "", "sender": "@alice:localhost", "content": {}},
        {"type": "m.room.member", "state_key": "@alice:localhost",
         "content": {"membership": "join"}},
    ]  # fmt: skip
    setup = ChannelSetup(
        snapshot_from_state(ROOM, state), "microdao:test", "@alice:localhost", "@daarion:localhost"
    )
    async with pool.acquire() as conn:
        await write_transaction(conn, f"setup-{uuid.uuid4().hex}", "d", [], [setup])
    good = _event("m.room.message", {"msgtype": "m.text", "body": "still here"})
    text = json.dumps({"events": [bad, good]}).replace('"DEEP"', DEEP)
    status, answer = await api.put_txn(f"bad-{uuid.uuid4().hex}", text)
    assert status == 200, answer
    letters = await pool.fetchval(
        "SELECT count(*) FROM bridge_dead_letters WHERE event_id = $1", bad["event_id"]
    )
    assert letters == 1
    assert await pool.fetchval(
        "SELECT count(*) FROM messages WHERE matrix_event_id = $1", good["event_id"]
    ) == 1  # fmt: skip
