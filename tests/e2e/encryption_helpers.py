"""Helpers for the encryption end-to-end tests: a person's end-to-end-encrypting client
(matrix-nio with vodozemac) and an encrypted room made the way Element makes it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from nio import AsyncClient, AsyncClientConfig, RoomCreateResponse

from tests.e2e.agents_helpers import wait_membership
from tests.e2e.helpers import Person

MEGOLM = "m.megolm.v1.aes-sha2"


async def nio_on_device(person: Person, store: Path) -> AsyncClient:
    """An end-to-end-encrypting client on the person's token's device, keys uploaded."""
    whoami = await person.request("GET", "/v3/account/whoami")
    client = AsyncClient(
        person.base_url,
        person.user_id,
        device_id=whoami["device_id"],
        store_path=str(store),
        config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True),
    )
    client.restore_login(person.user_id, whoami["device_id"], person.token)
    if client.should_upload_keys:
        await client.keys_upload()
    await client.sync(timeout=0, full_state=True)
    return client


async def encrypted_room_with(
    person: Person, element: AsyncClient, who: str, **encryption: Any
) -> str:
    """As Element's "New room" does: private, m.room.encryption in the initial state;
    `who` invited and joined."""
    content = {"algorithm": MEGOLM, **encryption}
    created = await element.room_create(
        name=f"enc {uuid.uuid4().hex[:6]}",
        initial_state=[{"type": "m.room.encryption", "state_key": "", "content": content}],
    )
    assert isinstance(created, RoomCreateResponse), created
    room_id = created.room_id
    await person.invite(room_id, who)
    await wait_membership(person, room_id, who, "join")
    await element.sync(timeout=0, full_state=True)
    await element.joined_members(room_id)
    if element.should_query_keys:
        await element.keys_query()
    return room_id
