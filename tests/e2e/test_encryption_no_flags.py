"""A homeserver nobody configured for the bridge's encryption: Synapse started without
the MSC2409/MSC3202 experimental flags (a Synapse of this module's own). Nothing fails
there; room keys just never come. The bridge must say so, in one WARNING line naming
exactly what to add to homeserver.yaml and the registration, and `!daarion status` must
say encryption is not working.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from daarion_bridge.crypto.flags import PROBE_WAIT, PROBES
from tests.conftest import create_database
from tests.e2e.conftest import E2E, e2e_stack
from tests.e2e.helpers import BridgeProcess, wait_for
from tests.e2e.test_bot_commands import ask

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

WARNING = "Encryption cannot work"


@pytest.fixture(scope="module")
async def stack(tmp_path_factory, pg_server_url) -> AsyncIterator[E2E]:
    database_url = await create_database(pg_server_url, "noflags")
    workdir = tmp_path_factory.mktemp("no-flags")
    async with e2e_stack(workdir, database_url, encryption_flags=False) as s:
        yield s


@pytest.fixture(scope="module")
async def flagless_bridge(stack: E2E) -> AsyncIterator[BridgeProcess]:
    proc = stack.new_bridge("bridge-no-flags")
    await proc.start()
    try:
        yield proc
    finally:
        await proc.stop()


def warnings_in(stack: E2E) -> list[str]:
    text = stack.log_file.read_text(encoding="utf-8") if stack.log_file.exists() else ""
    return [line for line in text.splitlines() if WARNING in line]


async def test_a_homeserver_without_the_flags_is_named_in_one_line(
    stack: E2E, flagless_bridge: BridgeProcess
) -> None:
    async def warned() -> list[str]:
        return warnings_in(stack)

    (line,) = await wait_for(warned, timeout=PROBES * PROBE_WAIT + 30, what="the warning")
    assert " WARNING daarion.crypto: " in line
    for needed in (
        "no to-device messages (MSC2409)",
        "no one-time-key counts (MSC3202)",
        "experimental_features: {msc2409_to_device_messages_enabled: true, "
        "msc3202_transaction_extensions: true}",
        "`receive_ephemeral: true`",
        "`de.sorunome.msc2409.push_ephemeral: true`",
        "`org.matrix.msc3202: true`",
    ):
        assert needed in line, needed
    person = await stack.person("noflags.alice")
    try:
        room_id = await person.create_room(name="no flags")
        await person.invite(room_id, stack.bot)

        async def bot_joined() -> bool:
            members = await person.request("GET", f"/v3/rooms/{room_id}/joined_members")
            return stack.bot in members.get("joined", {})

        await wait_for(bot_joined, timeout=30, what="the bot in the room")
        answer = await ask(stack, person, room_id, "!daarion status")
    finally:
        await person.close()
    (status,) = [x for x in answer.splitlines() if "Encryption" in x]
    assert status.startswith(
        "  Encryption: on, NOT working: the homeserver sends no to-device messages (MSC2409) "
        "and no one-time-key counts (MSC3202);"
    ), status
    assert len(warnings_in(stack)) == 1  # said once, not once per transaction
