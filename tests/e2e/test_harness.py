"""The harness on its own (no bridge): LocalSynapse loads a hand-written registration and
pushes transactions to a stub appservice; people register and act over the CS API.

When this passes and a bridge test fails, look at the bridge, not at the harness."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from aiohttp import web

from daarion_bridge.devtools.synapse import LocalSynapse, free_port
from tests.e2e.helpers import Person, wait_for

pytestmark = pytest.mark.e2e


async def test_local_synapse_pushes_to_a_registered_appservice(tmp_path):
    as_port = free_port()
    hs_token = secrets.token_urlsafe(16)
    as_token = secrets.token_urlsafe(16)
    registration = tmp_path / "registration.yaml"
    registration.write_text(
        f"""\
id: harness
url: http://127.0.0.1:{as_port}
as_token: {as_token}
hs_token: {hs_token}
sender_localpart: harnessbot
namespaces:
  users:
    - exclusive: true
      regex: '@harnessbot:localhost'
rate_limited: false
receive_ephemeral: true
de.sorunome.msc2409.push_ephemeral: true
""",
        encoding="utf-8",
    )
    pushed: list[tuple[str | None, dict]] = []

    async def transaction(request: web.Request) -> web.Response:
        pushed.append((request.headers.get("Authorization"), await request.json()))
        return web.json_response({})

    app = web.Application()
    app.router.add_put("/_matrix/app/v1/transactions/{txn_id}", transaction)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", as_port).start()

    synapse = LocalSynapse(tmp_path / "synapse", registrations=[registration])
    people: list[Person] = []
    try:
        await synapse.start()
        assert synapse.start_seconds is not None and synapse.start_seconds < 30
        print(f"\n[e2e] harness Synapse started in {synapse.start_seconds:.2f} s")

        user_id, token = await synapse.register_user("harness.alice", admin=True)
        assert user_id == "@harness.alice:localhost"
        again_id, again_token = await synapse.register_user("harness.alice", admin=True)
        assert again_id == user_id and again_token != token  # existing user: logged in

        alice = Person(synapse.base_url, user_id, token)
        bot = Person(synapse.base_url, "@harnessbot:localhost", as_token)
        people += [alice, bot]
        room_id = await alice.create_room(name="Harness", preset="private_chat")
        await alice.invite(room_id, "@harnessbot:localhost")
        await bot.join(room_id)
        event_id = await alice.send_text(room_id, "hello harness")

        def pushed_ids() -> set[str]:
            return {e["event_id"] for _, body in pushed for e in body.get("events", [])}

        async def got_message() -> bool:
            return event_id in pushed_ids()

        await wait_for(got_message, what="Synapse to push the message to the appservice")
        assert {auth for auth, _ in pushed} == {f"Bearer {hs_token}"}

        history = await alice.history(room_id)
        assert [e["content"]["body"] for e in history if e["type"] == "m.room.message"] == [
            "hello harness"
        ]
        assert await alice.membership(room_id, "@harnessbot:localhost") == "join"
        assert "STARTING SERVER" in synapse.log_tail(500)
    finally:
        for person in people:
            await person.close()
        await synapse.stop()
        await runner.cleanup()
    assert not synapse.running

    # A second start reuses the config, database and users.
    synapse2 = LocalSynapse(tmp_path / "synapse", registrations=[registration])
    try:
        await synapse2.start()
        same_id, _ = await synapse2.register_user("harness.alice")
        assert same_id == user_id
    finally:
        await synapse2.stop()


async def test_start_failure_reports_the_log_tail(tmp_path):
    bad = tmp_path / "missing-registration.yaml"  # Synapse refuses to start without it
    synapse = LocalSynapse(tmp_path / "synapse", registrations=[bad])
    with pytest.raises(RuntimeError) as info:
        await synapse.start(timeout=30)
    assert "missing-registration.yaml" in str(info.value)
    assert not synapse.running
    await asyncio.sleep(0)
