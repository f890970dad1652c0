"""With ``bridge.default_microdao: null`` the bot refuses rooms it cannot map."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.helpers import channel_row, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def bridge(e2e):
    """The session bridge config with default_microdao set to null (same tokens, port and
    database, so the session registration still fits)."""

    def no_default(cfg):
        cfg["bridge"]["default_microdao"] = None

    config = e2e.derived_config("config-no-default-microdao", no_default)
    proc = e2e.new_bridge("bridge-no-default-microdao", config)
    await proc.start()
    try:
        yield proc
    finally:
        await proc.stop()


async def test_unmappable_room_is_refused(e2e, bridge, people, db):
    alice = await people("alice.nomap")
    room_id = await alice.create_room(name="E2E unmappable", preset="private_chat")
    await alice.invite(room_id, e2e.bot)

    async def bot_left() -> bool:
        return await alice.membership(room_id, e2e.bot) == "leave"

    await wait_for(bot_left, what="the bot to leave the room it cannot map")

    history = await alice.history(room_id)
    bot_joins = [
        e
        for e in history
        if e["type"] == "m.room.member"
        and e.get("state_key") == e2e.bot
        and e["content"].get("membership") == "join"
    ]
    assert bot_joins, "the bot must join to explain itself before leaving"
    notices = [e for e in history if e["type"] == "m.room.message" and e["sender"] == e2e.bot]
    assert len(notices) == 1, notices
    content = notices[0]["content"]
    assert content.get("msgtype") == "m.notice"
    body = content.get("body", "").lower()
    assert "map" in body or "microdao" in body, content.get("body")

    # Give the bridge time to (wrongly) write something, then check it did not.
    await asyncio.sleep(2)
    assert await channel_row(db, room_id) is None
