"""Room upgrades end to end: real Synapse (POST /rooms/{id}/upgrade, as Element's
"Upgrade this room" does), the real bridge process with an agent, real PostgreSQL and
NATS. The channel follows its room: same id, slug and history, the agent still in it
with its session, `messaging.channel.updated` naming both rooms. A room that only
claims to replace a channel takes nothing over; a tombstone without a replacement
closes the agent's session."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from daarion_bridge.devtools.nats import LocalNats
from tests.e2e.agents_helpers import wait_membership
from tests.e2e.helpers import (
    OwnIndex,
    Person,
    own_fixtures,
    own_index,
    q,
    stream_events,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

D = "localhost"
BOT = f"@daarion:{D}"
SOFIA = f"@agent-sofia:{D}"
OWNER = f"@up.alice:{D}"
STREAM = "E2EUPGRADES"

own = own_fixtures("upgrades", index="index")
local_nats, db, bridge = own.nats, own.db, own.bridge


@pytest.fixture(scope="module")
async def index(e2e, pg_server_url, local_nats) -> OwnIndex:
    def edit(cfg: Any) -> None:
        cfg["nats"] = {"url": local_nats.url, "stream": STREAM}
        cfg["microdaos"] = [{"external_id": "microdao:up", "name": "Up", "owner": OWNER}]
        cfg["blueprints"] = [{"code": "up_guide", "model": "demo"}]
        cfg["agents"] = [
            {"external_id": "agent:sofia", "name": "Sofia", "kind": "assistant",
             "blueprint": "up_guide", "microdao": "microdao:up", "owner": OWNER},
        ]  # fmt: skip

    return await own_index(e2e, pg_server_url, "upgrades", edit)


@pytest.fixture(scope="module")
async def alice(people) -> Person:
    return await people("up.alice")


async def channel(db: asyncpg.Pool, room_id: str) -> asyncpg.Record:
    sql = "SELECT * FROM channels WHERE matrix_room_id = $1"
    return await wait_for(lambda: db.fetchrow(sql, room_id), what=f"the channel of {room_id}")


async def bridged_room(alice: Person, db: asyncpg.Pool, preset: str) -> tuple[str, Any]:
    room_id = await alice.create_room(name=f"up {uuid.uuid4().hex[:6]}", preset=preset)
    for user in (BOT, SOFIA):
        await alice.invite(room_id, user)
        await wait_membership(alice, room_id, user, "join")
    row = await channel(db, room_id)
    await wait_for(lambda: sofia_sessions(db, row["id"]), what="Sofia's session")
    return room_id, row


async def sofia_sessions(db: asyncpg.Pool, channel_id: Any) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT s.* FROM agent_sessions s JOIN agents a ON a.id = s.agent_id "
        "WHERE a.matrix_id = $1 AND s.channel_id = $2",
        SOFIA,
        channel_id,
    )


async def indexed(db: asyncpg.Pool, event_id: str) -> asyncpg.Record:
    sql = "SELECT * FROM messages WHERE matrix_event_id = $1"
    return await wait_for(lambda: db.fetchrow(sql, event_id), what=f"the row of {event_id}")


async def upgrade(alice: Person, room_id: str) -> str:
    body = {"new_version": "12"}
    return (await alice.request("POST", f"/v3/rooms/{q(room_id)}/upgrade", body))[
        "replacement_room"
    ]


async def channel_updates(server: LocalNats) -> list[dict[str, Any]]:
    return await stream_events(server.url, STREAM, "messaging.channel.updated")


async def moved_to(db: asyncpg.Pool, channel_id: Any, room_id: str) -> bool:
    sql = "SELECT matrix_room_id FROM channels WHERE id = $1"
    return await db.fetchval(sql, channel_id) == room_id


async def test_an_upgrade_with_invites_keeps_the_channel(alice, db, bridge, local_nats) -> None:
    """A private room: Element invites the old members into the new room."""
    old, before = await bridged_room(alice, db, "private_chat")
    first = await alice.send_text(old, "said before the upgrade")
    await indexed(db, first)
    new = await upgrade(alice, old)
    for user in (BOT, SOFIA):
        await alice.invite(new, user)

    await wait_for(lambda: moved_to(db, before["id"], new), what="the channel in the new room")
    after = await db.fetchrow("SELECT * FROM channels WHERE id = $1", before["id"])
    assert (after["slug"], after["microdao_id"]) == (before["slug"], before["microdao_id"])
    assert await db.fetchval("SELECT count(*) FROM channels WHERE matrix_room_id = $1", new) == 1
    second = await alice.send_text(new, "said after the upgrade")
    assert (await indexed(db, second))["channel_id"] == before["id"]
    assert (await indexed(db, first))["channel_id"] == before["id"]  # history stays
    await wait_membership(alice, new, SOFIA, "join")
    sessions = await sofia_sessions(db, before["id"])
    assert [s["status"] for s in sessions] == ["active"]  # the one session, carried over

    async def announced() -> dict[str, Any] | None:
        for update in await channel_updates(local_nats):
            if update.get("matrix_room_id") == new:
                return update
        return None

    update = await wait_for(announced, what="messaging.channel.updated of the move")
    assert update["previous_matrix_room_id"] == old
    assert update["channel_id"] == str(before["id"])


async def test_a_public_room_is_followed_from_its_tombstone(alice, db, bridge) -> None:
    """No invites: the bot follows the tombstone into the new room, Sofia with it."""
    old, before = await bridged_room(alice, db, "public_chat")
    new = await upgrade(alice, old)
    await wait_for(lambda: moved_to(db, before["id"], new), what="the channel in the new room")
    await wait_membership(alice, new, BOT, "join")
    await wait_membership(alice, new, SOFIA, "join")
    sessions = await sofia_sessions(db, before["id"])
    assert [s["status"] for s in sessions] == ["active"]
    said = await alice.send_text(new, "after a public upgrade")
    assert (await indexed(db, said))["channel_id"] == before["id"]


async def test_a_room_that_only_claims_a_predecessor_takes_nothing(
    alice, people, db, bridge
) -> None:
    old, before = await bridged_room(alice, db, "private_chat")
    eve = await people("up.eve")
    fake = await eve.create_room(
        name="not an upgrade",
        preset="private_chat",
        creation_content={"predecessor": {"room_id": old}},
    )
    await eve.invite(fake, BOT)
    await wait_membership(eve, fake, BOT, "join")
    await channel(db, fake)  # a channel of its own, in the default microDAO
    assert await moved_to(db, before["id"], old)


async def test_a_tombstone_without_a_replacement_closes_the_sessions(alice, db, bridge) -> None:
    old, before = await bridged_room(alice, db, "private_chat")
    # Synapse insists on the key; a room closed for good names no room in it.
    content = {"body": "This room is closed", "replacement_room": ""}
    await alice.put_state(old, "m.room.tombstone", content)

    async def closed() -> bool:
        return [s["status"] for s in await sofia_sessions(db, before["id"])] == ["closed"]

    await wait_for(closed, what="Sofia's session closed")
    assert await moved_to(db, before["id"], old)


async def test_an_upgrade_the_bot_could_not_follow_yet_is_followed_after_a_restart(
    alice, db, bridge
) -> None:
    """The new room is closed to the bot at first (invite only, no invites): the wish to
    follow stays committed, and once the room is open a restart follows it (also what
    a bridge killed between the tombstone's commit and the join relies on)."""
    old, before = await bridged_room(alice, db, "private_chat")
    new = await upgrade(alice, old)

    async def tried() -> asyncpg.Record | None:
        sql = "SELECT * FROM bridge_pending_upgrades WHERE room_id = $1 AND attempts >= 1"
        return await db.fetchrow(sql, old)

    wish = await wait_for(tried, what="the failed first attempt, the wish kept")
    assert wish["replacement"] == new
    assert await moved_to(db, before["id"], old)
    await alice.put_state(new, "m.room.join_rules", {"join_rule": "public"})
    await bridge.restart()
    await wait_for(lambda: moved_to(db, before["id"], new), what="the channel in the new room")
    await wait_membership(alice, new, SOFIA, "join")

    async def done() -> bool:
        sql = "SELECT count(*) FROM bridge_pending_upgrades WHERE room_id = $1"
        return await db.fetchval(sql, old) == 0

    await wait_for(done, what="the wish done")
