"""A room bigger than bridge.max_room_members is not bridged: the bot says so in one
notice and leaves, nothing is written. Real Synapse, the real bridge process with a
small cap, a database of its own."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.agents_helpers import wait_membership
from tests.e2e.helpers import OwnIndex, own_fixtures, own_index, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

CAP = 3

own = own_fixtures("bigrooms", index="index")
db, bridge = own.db, own.bridge


@pytest.fixture(scope="module")
async def index(e2e, pg_server_url) -> OwnIndex:
    def edit(cfg: Any) -> None:
        cfg["bridge"]["max_room_members"] = CAP

    return await own_index(e2e, pg_server_url, "bigrooms", edit)


async def test_a_room_over_the_cap_is_left_with_a_notice(e2e, people, db, bridge) -> None:
    alice = await people("big.alice")
    crowd = [await people(f"big.p{i}") for i in range(CAP)]
    room_id = await alice.create_room(name="E2E too big", preset="public_chat")
    for person in crowd:
        await person.join(room_id)
    await alice.invite(room_id, e2e.bot)
    await wait_membership(alice, room_id, e2e.bot, "leave")

    async def notice() -> str | None:
        for event in await alice.history(room_id):
            if event["sender"] == e2e.bot and event["type"] == "m.room.message":
                return event["content"]["body"]
        return None

    body = await wait_for(notice, what="the bot's notice")
    assert "bridge.max_room_members" in body and str(CAP) in body
    assert (
        await db.fetchval("SELECT count(*) FROM channels WHERE matrix_room_id = $1", room_id) == 0
    )

    small = await alice.create_room(name="E2E small enough", preset="private_chat")
    await alice.invite(small, e2e.bot)
    sql = "SELECT id FROM channels WHERE matrix_room_id = $1"
    assert await wait_for(lambda: db.fetchval(sql, small), what="the small room's channel")
