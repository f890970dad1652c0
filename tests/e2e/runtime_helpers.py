"""Helpers for the agent runtime's end-to-end tests: the runtime's two endpoints, what
the bridge put on NATS, and rooms with agents in them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiohttp
import asyncpg

from daarion_bridge.devtools.nats import LocalNats
from tests.e2e.agents_helpers import wait_membership
from tests.e2e.helpers import Person, stream_events, wait_for

TOKEN_HEADER = "X-Internal-Service-Token"
SOFIA, QUIET = "@agent-sofia:localhost", "@agent-quiet:localhost"
TOKEN = "service-" + uuid.uuid4().hex


def agents_config(cfg: Any, owner: str, nats_url: str, stream: str, prefix: str) -> None:
    """A module's config: its NATS stream, the runtime's token, agents Sofia and Quiet."""
    cfg["nats"] = {"url": nats_url, "stream": stream, "subject_prefix": prefix}
    cfg["api"] = {"service_token": TOKEN, "agent_messages_per_hour": 50}
    cfg["microdaos"] = [{"external_id": "microdao:ctx", "name": "CTX", "owner": owner}]
    cfg["blueprints"] = [{"code": "ctx_guide", "model": "demo"}]
    cfg["agents"] = [
        {"external_id": f"agent:{name}", "name": name.title(), "kind": "assistant",
         "blueprint": "ctx_guide", "microdao": "microdao:ctx", "owner": owner}
        for name in ("sofia", "quiet")
    ]  # fmt: skip


async def call(
    port: int, method: str, path: str, token: str | None, body: Any = None, **query: str
) -> tuple[int, Any]:
    """One request to the bridge's listener: (status, JSON answer or None)."""
    url = f"http://127.0.0.1:{port}{path}"
    headers = {TOKEN_HEADER: token} if token is not None else {}
    data = None if body is None else json.dumps(body)
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, data=data, headers=headers, params=query) as r,
    ):
        return r.status, await r.json(content_type=None)


async def on_stream(server: LocalNats, stream: str, subject: str) -> list[dict[str, Any]]:
    """Every payload on the stream under this (prefixed) subject, in order."""
    return await stream_events(server.url, stream, subject)


async def room_with(person: Person, *agents: str, preset: str = "private_chat") -> str:
    room_id = await person.create_room(name=f"rt {uuid.uuid4().hex[:6]}", preset=preset)
    for agent in agents:
        await person.invite(room_id, agent)
        await wait_membership(person, room_id, agent, "join")
    return room_id


async def channel_of(db: asyncpg.Pool, room_id: str) -> str:
    """The room's channel id, once indexed."""
    sql = "SELECT id::text FROM channels WHERE matrix_room_id = $1"
    return await wait_for(lambda: db.fetchval(sql, room_id), what=f"channel of {room_id}")


async def indexed(db: asyncpg.Pool, event_id: str) -> str:
    """The message's row id, once indexed."""
    sql = "SELECT id::text FROM messages WHERE matrix_event_id = $1"
    return await wait_for(lambda: db.fetchval(sql, event_id), what=f"row of {event_id}")
