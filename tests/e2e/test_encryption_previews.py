"""Encrypted rooms with `bridge.encryption.plaintext_previews: true`: the index and NATS
keep decrypted previews, as for any other room. A real end-to-end-encrypting client
(matrix-nio with vodozemac) plays the person; real Synapse with the MSC2409/MSC3202
flags, real PostgreSQL, real NATS, the bridge process.

- A message whose key is there: indexed with its text.
- A message whose room key comes one transaction later: `[encrypted]` first; once the
  key arrives, its text, and one `messaging.message.updated` saying so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from nio import AsyncClient

from tests.e2e.encryption_helpers import nio_on_device
from tests.e2e.helpers import OwnIndex, Person, own_fixtures, own_index, stream_events, wait_for
from tests.e2e.runtime_helpers import TOKEN
from tests.e2e.test_encryption import encrypted_room_with_sofia, preview, send_before_its_key

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

GLIMPSE = "@agent-glimpse:localhost"  # this module's agent: a device of its own
STREAM = "E2EPREVIEWS"
PREFIX = "encp."
OWNER = "@encp.alice:localhost"

own = own_fixtures("encryption-previews", index="index")
local_nats, db, bridge = own.nats, own.db, own.bridge


@pytest.fixture(scope="module")
async def index(e2e, pg_server_url, local_nats) -> OwnIndex:
    def edit(cfg: Any) -> None:
        cfg["nats"] = {"url": local_nats.url, "stream": STREAM, "subject_prefix": PREFIX}
        cfg["api"] = {"service_token": TOKEN}
        cfg["bridge"]["permissions"] = {OWNER: "user"}
        cfg["bridge"].setdefault("encryption", {})["plaintext_previews"] = True
        cfg["microdaos"] = [{"external_id": "microdao:encp", "name": "EncP", "owner": OWNER}]
        cfg["blueprints"] = [{"code": "encp_guide", "model": "demo"}]
        cfg["agents"] = [
            {"external_id": "agent:glimpse", "name": "Glimpse", "kind": "assistant",
             "blueprint": "encp_guide", "microdao": "microdao:encp", "owner": OWNER},
        ]  # fmt: skip

    return await own_index(e2e, pg_server_url, "encryption-previews", edit)


@pytest.fixture(scope="module")
async def alice(people) -> Person:
    return await people("encp.alice")


@pytest.fixture(scope="module")
async def element(alice: Person, bridge, tmp_path_factory) -> AsyncIterator[AsyncClient]:
    client = await nio_on_device(alice, tmp_path_factory.mktemp("nio-previews"))
    try:
        yield client
    finally:
        await client.close()


async def updates(server: Any, event_id: str) -> list[dict[str, Any]]:
    found = await stream_events(server.url, STREAM, PREFIX + "messaging.message.updated")
    return [p for p in found if p["matrix_event_id"] == event_id]


async def test_a_message_whose_key_is_there_is_indexed_with_its_text(alice, element, db) -> None:
    room_id = await encrypted_room_with_sofia(alice, element, GLIMPSE)
    body = {"msgtype": "m.text", "body": "Glimpse, the text shows"}
    sent = await element.room_send(room_id, "m.room.message", body, ignore_unverified_devices=True)
    assert await preview(db, sent.event_id) == "Glimpse, the text shows"


async def test_a_late_key_turns_encrypted_into_the_text_announced_once(
    alice, element, local_nats, db
) -> None:
    room_id = await encrypted_room_with_sofia(alice, element, GLIMPSE)
    event_id = await send_before_its_key(alice, element, room_id, "Glimpse, late text")
    assert await preview(db, event_id) == "[encrypted]"
    await element.share_group_session(room_id, ignore_unverified_devices=True)

    async def shown() -> str | None:
        text = await preview(db, event_id)
        return text if text != "[encrypted]" else None

    assert await wait_for(shown, timeout=30, what="the text shown") == "Glimpse, late text"
    (updated,) = await wait_for(lambda: updates(local_nats, event_id), what="message.updated")
    assert updated["content_preview"] == "Glimpse, late text"
    assert updated["edit_event_id"] == event_id  # the message itself: its text came
