"""The appservice HTTP API on a real listener and a real PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
import pytest

from .conftest import HS_TOKEN, ROOM, Api


async def test_missing_token_is_401(api: Api) -> None:
    status, body = await api.put_txn("1", {"events": []}, token=None)
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")


async def test_wrong_token_is_403(api: Api) -> None:
    status, body = await api.put_txn("1", {"events": []}, token="nope")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


async def test_body_not_json_is_400(api: Api) -> None:
    status, body = await api.put_txn("1", b"{not json")
    assert (status, body["errcode"]) == (400, "M_NOT_JSON")


async def test_json_the_fast_parser_refuses_is_still_read(api: Api, pool: asyncpg.Pool) -> None:
    """A lone surrogate, NaN and a 70-bit integer: valid for the standard parser."""
    event = (
        '{"type": "m.room.message", "room_id": "!nowhere:localhost", "event_id": "$e1", '
        '"sender": "@alice:localhost", "origin_server_ts": 1700000000000, '
        '"content": {"msgtype": "m.text", "body": "a\\ud800b", "n": NaN, '
        '"big": 1180591620717411303424}}'
    )
    body = '{"events": [' + event + "]}"
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    status, _ = await api.put_txn("7", body)
    assert status == 200
    count = await pool.fetchval("SELECT event_count FROM bridge_transactions WHERE txn_id = '7'")
    assert count == 1


async def test_events_not_a_list_is_400(api: Api) -> None:
    status, body = await api.put_txn("1", {"events": {"a": 1}})
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")


async def test_unknown_route_and_wrong_method_are_json_unrecognized(api: Api) -> None:
    async with api.client.get(api.base / "_matrix/app/v1/nothing") as resp:
        assert resp.status == 404 and (await resp.json())["errcode"] == "M_UNRECOGNIZED"
    async with api.client.post(api.base / "_matrix/app/v1/transactions/1") as resp:
        assert resp.status == 405 and (await resp.json())["errcode"] == "M_UNRECOGNIZED"


async def test_empty_transaction_is_200_and_recorded(api: Api, pool: asyncpg.Pool) -> None:
    assert await api.put_txn("42", {"events": [], "ephemeral": [{"type": "m.typing"}]}) == (200, {})
    assert (
        await pool.fetchval("SELECT event_count FROM bridge_transactions WHERE txn_id = '42'") == 0
    )


async def test_user_and_alias_queries(api: Api) -> None:
    headers = {"Authorization": f"Bearer {HS_TOKEN}"}
    url = api.base / "_matrix/app/v1/users" / "@daarion:localhost"
    async with api.client.get(url, headers=headers) as resp:
        assert resp.status == 200 and await resp.json() == {}
    async with api.client.get(
        api.base / "_matrix/app/v1/users/@agent-x:localhost", headers=headers
    ) as resp:
        assert resp.status == 404
    async with api.client.get(
        api.base / "_matrix/app/v1/rooms/%23a:localhost", headers=headers
    ) as resp:
        assert resp.status == 404
    async with api.client.get(api.base / "_matrix/app/v1/rooms/%23a:localhost") as resp:
        assert resp.status == 401


async def test_ping_and_probes(api: Api) -> None:
    async with api.client.post(
        api.base / "_matrix/app/v1/ping", json={"transaction_id": "x"},
        headers={"Authorization": f"Bearer {HS_TOKEN}"},
    ) as resp:  # fmt: skip
        assert resp.status == 200 and await resp.json() == {}
    for probe in ("live", "ready"):
        async with api.client.get(api.base / f"_matrix/mau/{probe}") as resp:
            assert resp.status == 200


async def test_invite_with_homeserver_down_is_503_and_commits_nothing(
    api: Api, pool: asyncpg.Pool
) -> None:
    invite = {
        "type": "m.room.member", "room_id": ROOM, "event_id": "$invite",
        "sender": "@alice:localhost", "origin_server_ts": 1,
        "state_key": "@daarion:localhost", "content": {"membership": "invite"},
    }  # fmt: skip
    status, body = await api.put_txn("7", {"events": [invite]})
    assert status == 503 and body["errcode"] == "M_UNKNOWN"
    assert await pool.fetchval("SELECT count(*) FROM bridge_transactions") == 0


async def test_database_unavailable_is_503_then_retry_commits(
    api: Api, pool: asyncpg.Pool, pg_server_url: str
) -> None:
    dbname = await pool.fetchval("SELECT current_database()")
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", dbname
        )
        status, body = await api.put_txn("9", {"events": []})
        assert status == 503 and body["errcode"] == "M_UNKNOWN"
        assert api.database_failures == 1
        await admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
    finally:
        await admin.close()
    assert await api.put_txn("9", {"events": []}) == (200, {})
    assert await pool.fetchval("SELECT count(*) FROM bridge_transactions WHERE txn_id = '9'") == 1


async def test_wrong_scheme_and_empty_bearer_are_401(api: Api) -> None:
    url = api.base / "_matrix/app/v1/transactions/1"
    for header in (f"Basic {HS_TOKEN}", "Bearer ", HS_TOKEN):
        async with api.client.put(url, data="{}", headers={"Authorization": header}) as resp:
            assert resp.status == 401, header
            assert (await resp.json())["errcode"] == "M_MISSING_TOKEN"


async def test_query_token_accepted_and_disagreement_refused(api: Api, pool: asyncpg.Pool) -> None:
    url = api.base / "_matrix/app/v1/transactions/q1"
    async with api.client.put(url.with_query(access_token=HS_TOKEN), data="{}") as resp:
        assert resp.status == 200
    headers = {"Authorization": f"Bearer {HS_TOKEN}"}
    async with api.client.put(
        url.with_query(access_token="other"), data="{}", headers=headers
    ) as resp:
        assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"


async def test_body_over_the_limit_is_413_and_commits_nothing(api: Api, pool: asyncpg.Pool) -> None:
    huge = b'{"events": [], "pad": "' + b"x" * (21 * 1024 * 1024) + b'"}'
    status, body = await api.put_txn("big", huge)
    assert (status, body["errcode"]) == (413, "M_TOO_LARGE")
    assert await pool.fetchval("SELECT count(*) FROM bridge_transactions") == 0


async def test_metrics_count_transactions_and_events(api: Api) -> None:
    from daarion_bridge import metrics
    from daarion_bridge.devtools.synapse import free_port

    port = free_port()
    server = metrics.serve("127.0.0.1", port)
    try:
        message = {
            "type": "m.room.message", "room_id": ROOM, "event_id": "$m", "sender": "@a:localhost",
            "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": "hi"},
        }  # fmt: skip
        assert (await api.put_txn("metrics-1", {"events": [message, "bad"]}))[0] == 200
        async with api.client.get(f"http://127.0.0.1:{port}/metrics") as resp:
            text = await resp.text()
    finally:
        server.shutdown()
    assert 'daarion_bridge_transactions_total{outcome="committed"}' in text
    assert 'daarion_bridge_events_total{kind="NewMessage",outcome="ignored"}' in text
    assert "daarion_bridge_dead_letters_total" in text
    assert "daarion_bridge_transaction_seconds_bucket" in text


async def test_a_slow_client_times_out_with_408_and_commits_nothing(
    api: Api, pool: asyncpg.Pool
) -> None:
    """A client that sends half a body and stalls (slowloris) gets 408 after
    appservice.body_timeout (1 s here) instead of holding the ingest path."""
    body = b'{"events": []}'
    reader, writer = await asyncio.open_connection(api.base.host, api.base.port)
    try:
        writer.write(
            b"PUT /_matrix/app/v1/transactions/slow HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\n"
            + f"Authorization: Bearer {HS_TOKEN}\r\n".encode()
            + b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:5]
        )
        await writer.drain()
        started = asyncio.get_running_loop().time()
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
        waited = asyncio.get_running_loop().time() - started
    finally:
        writer.close()
    assert status_line.split()[1] == b"408", status_line
    assert waited >= 0.9
    assert await pool.fetchval("SELECT count(*) FROM bridge_transactions") == 0
