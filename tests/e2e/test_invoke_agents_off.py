"""`nats.invoke_agents: false` end to end (issue 17, item 5): with the platform's own
router invoking agents, the bridge publishes no `router.invoke.agent`, while every
message is still announced and the agent's session still moves. Real Synapse,
PostgreSQL, NATS JetStream and the bridge process."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.helpers import (
    OwnIndex,
    Person,
    own_fixtures,
    own_index,
    wait_for,
)
from tests.e2e.runtime_helpers import SOFIA, agents_config, indexed, on_stream, room_with

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

STREAM, PREFIX = "E2EINVOKEOFF", "off."


own = own_fixtures("invoke-off", index="index")
local_nats, db, bridge = own.nats, own.db, own.bridge


@pytest.fixture(scope="module")
async def index(e2e, pg_server_url, local_nats) -> OwnIndex:
    def edit(cfg: Any) -> None:
        agents_config(cfg, "@off.alice:localhost", local_nats.url, STREAM, PREFIX)
        cfg["nats"]["invoke_agents"] = False

    return await own_index(e2e, pg_server_url, "invoke_off", edit)


@pytest.fixture(scope="module")
async def alice(people) -> Person:
    return await people("off.alice")


async def test_no_invocation_is_published_and_the_session_still_moves(
    alice, bridge, db, local_nats
) -> None:
    room_id = await room_with(alice, SOFIA)  # alone with Sofia: a direct room
    session = (
        "SELECT s.last_activity_at FROM agent_sessions s JOIN agents a ON a.id = s.agent_id "
        "JOIN channels c ON c.id = s.channel_id "
        "WHERE a.external_id = 'agent:sofia' AND c.matrix_room_id = $1 AND s.status <> 'closed'"
    )
    before = await wait_for(lambda: db.fetchval(session, room_id), what="Sofia's session")
    asked = await alice.send_text(room_id, "Sofia, are you there?")
    await indexed(db, asked)

    async def announced() -> bool:
        created = await on_stream(local_nats, STREAM, PREFIX + "messaging.message.created")
        return any(p["matrix_event_id"] == asked for p in created)

    await wait_for(announced, what="messaging.message.created of the question")
    assert await on_stream(local_nats, STREAM, PREFIX + "router.invoke.agent") == []
    assert await db.fetchval(session, room_id) > before
