"""The admin API end to end: a real Synapse, the real bridge process with an admin token
and a database of its own, called over HTTP on the bridge's port.

What an admin sees: a microDAO's space and channels the bot creates appear in Element
with the right name, alias, join rule and power levels, linked into the space; the
channel row exists the moment the call returns; people and agents invited through the
API end up where they should (an agent stays, though a bot's invite is not one of the
usual inviters); errors answer with their status.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.e2e.agents_helpers import open_session
from tests.e2e.helpers import (
    MatrixError,
    OwnIndex,
    Person,
    channel_row,
    member_row,
    own_fixtures,
    own_index,
    q,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

D = "localhost"
TOKEN = f"admin-{uuid.uuid4().hex}"
RUN = uuid.uuid4().hex[:6]  # fresh microDAOs and aliases on every run of the session
SPACED = f"microdao:adm{RUN}"  # created through the API, with a space
PLAIN = f"microdao:plain{RUN}"  # created through the API, without one
SOFIA = f"@agent-adm-sofia:{D}"
OWNER, MEMBER, STRANGER = "adm.owner", "adm.member", "adm.stranger"
LEVEL = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def e2e_bot() -> str:
    return f"@daarion:{D}"


def mxid(localpart: str) -> str:
    return f"@{localpart}:{D}"


@pytest.fixture(scope="module")
async def stack(e2e, pg_server_url) -> OwnIndex:
    def with_admin(cfg: Any) -> None:
        cfg["api"]["admin_token"] = TOKEN
        cfg["blueprints"] = [{"code": "adm_guide", "model": "test"}]
        # Nobody may invite this agent into a private room but its owner (who is not in
        # this module): only the admin API brings it in.
        cfg["agents"] = [
            {
                "external_id": "agent:adm-sofia",
                "name": "Admin Sofia",
                "kind": "assistant",
                "blueprint": "adm_guide",
                "owner": mxid("adm.agentowner"),
            }
        ]

    return await own_index(e2e, pg_server_url, "admin", with_admin)


own = own_fixtures("admin", index="stack")
db, bridge = own.db, own.bridge


class Client:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/_daarion/v1"
        self.http = aiohttp.ClientSession()

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = TOKEN
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json()


@pytest.fixture(scope="module")
async def api(bridge) -> AsyncIterator[Client]:
    client = Client(bridge.port)
    yield client
    await client.http.close()


@pytest.fixture(scope="module")
async def spaced(api, people) -> dict[str, Any]:
    """microDAO SPACED, created with its space; the owner has joined the space."""
    owner = await people(OWNER)
    body = {"external_id": SPACED, "name": "Admin Space DAO", "owner": owner.user_id}
    status, dao = await api.call("POST", "/microdaos", body | {"create_space": True})
    assert status == 201, dao
    await owner.join(dao["space_room_id"])
    return dao


async def power(person: Person, room_id: str) -> dict[str, Any]:
    return await person.state(room_id, "m.room.power_levels") or {}


async def test_microdao_with_its_space(api, spaced, people, db) -> None:
    owner = await people(OWNER)
    space = spaced["space_room_id"]
    assert space and space.startswith("!")
    create = await owner.state(space, "m.room.create")
    assert create["type"] == "m.space"
    assert (await owner.state(space, "m.room.name"))["name"] == "Admin Space DAO"
    assert (await power(owner, space))["users"][owner.user_id] == 100
    assert await owner.membership(space, owner.user_id) == "join"
    row = await db.fetchrow("SELECT * FROM microdaos WHERE external_id = $1", SPACED)
    assert row is not None and str(row["id"]) == spaced["id"]
    linked = await db.fetchval(
        "SELECT room_id FROM bridge_spaces WHERE microdao_id = $1", row["id"]
    )
    assert linked == space
    status, again = await api.call(
        "POST", "/microdaos", {"external_id": SPACED, "name": "x", "owner": owner.user_id}
    )
    assert (status, again["field"]) == (409, "external_id")


async def test_channel_in_the_microdaos_space(api, spaced, people, db) -> None:
    owner = await people(OWNER)
    member = await people(MEMBER)
    space = spaced["space_room_id"]
    body = {"name": "General talk", "slug": "general", "visibility": "microdao", "topic": "Hi"}
    status, made = await api.call("POST", f"/microdaos/{SPACED}/channels", body)
    assert status == 201, made
    # The row exists when the call returns: no waiting.
    row = await channel_row(db, made["matrix_room_id"])
    assert row is not None, "no channels row right after the call"
    assert (str(row["id"]), row["slug"], row["name"]) == (made["id"], "general", "General talk")
    assert row["visibility"] == "microdao" and made["visibility"] == "microdao"
    assert (
        await db.fetchval("SELECT external_id FROM microdaos WHERE id = $1", row["microdao_id"])
        == SPACED
    )
    alias = f"#general-adm{RUN}:{D}"
    assert made["alias"] == alias
    assert (made["in_space"], made["owner_invited"], made["space_room_id"]) == (True, True, space)

    room_id = made["matrix_room_id"]
    # Element's view, as the invited owner who joins.
    await owner.join(room_id)
    invites = [
        e
        for e in await owner.history(room_id)
        if e["type"] == "m.room.member"
        and e["state_key"] == owner.user_id
        and e["content"].get("membership") == "invite"
    ]
    assert [e["sender"] for e in invites] == [e2e_bot()], "the bot invited the owner"
    assert (await owner.state(room_id, "m.room.name"))["name"] == "General talk"
    assert (await owner.state(room_id, "m.room.topic"))["topic"] == "Hi"
    assert (await owner.state(room_id, "m.room.canonical_alias"))["alias"] == alias
    resolved = await owner.request("GET", f"/v3/directory/room/{q(alias)}")
    assert resolved["room_id"] == room_id
    rules = await owner.state(room_id, "m.room.join_rules")
    assert rules["join_rule"] == "restricted"
    assert rules["allow"] == [{"type": "m.room_membership", "room_id": space}]
    assert (await power(owner, room_id))["users"][owner.user_id] == 100
    assert (await owner.state(room_id, "m.space.parent", space))["via"] == [D]
    assert (await owner.state(space, "m.space.child", room_id))["via"] == [D]
    # The owner's join is indexed with the owner's role.
    joined = await wait_for(lambda: member_row(db, row["id"], owner.user_id), what="owner row")
    assert joined["role"] == "owner"

    # The join rule works: a member of the space joins without an invite; a stranger cannot.
    await owner.invite(space, member.user_id)
    await member.join(space)
    await member.join(room_id)
    assert await owner.membership(room_id, member.user_id) == "join"
    stranger = await people(STRANGER)
    with pytest.raises(MatrixError) as refused:
        await stranger.join(room_id)
    assert refused.value.status == 403

    status, listed = await api.call("GET", f"/microdaos/{SPACED}/channels")
    assert status == 200 and [c["id"] for c in listed["channels"]] == [made["id"]]

    # The same slug again, and an alias someone else holds: 409, no room, no row.
    status, again = await api.call("POST", f"/microdaos/{SPACED}/channels", body)
    assert (status, again["field"]) == (409, "slug")
    await stranger.create_room(name="squatter", room_alias_name=f"squat-adm{RUN}")
    taken = {"name": "Squat", "slug": "squat", "visibility": "public"}
    status, again = await api.call("POST", f"/microdaos/{SPACED}/channels", taken)
    assert (status, again["field"]) == (409, "slug"), again
    assert await db.fetchval("SELECT count(*) FROM channels WHERE slug = 'squat'") == 0


async def test_channels_without_a_space(api, people, db) -> None:
    owner = await people(OWNER)
    stranger = await people(STRANGER)
    new = {"external_id": PLAIN, "name": "Plain DAO", "owner": owner.user_id}
    status, dao = await api.call("POST", "/microdaos", new)
    assert status == 201 and dao["space_room_id"] is None, dao
    made = {}
    for visibility in ("public", "microdao", "private"):
        body = {"name": f"{visibility.title()} room", "visibility": visibility}
        status, made[visibility] = await api.call("POST", f"/microdaos/{dao['id']}/channels", body)
        assert status == 201, made[visibility]
        assert await channel_row(db, made[visibility]["matrix_room_id"]) is not None
    public = made["public"]
    assert public["slug"] == "public-room" and public["alias"] == f"#public-room-plain{RUN}:{D}"
    assert (public["visibility"], public["in_space"], public["space_room_id"]) == (
        "public",
        False,
        None,
    )
    # Public: anyone joins. microDAO without a space, and private: invite only.
    await stranger.join(public["matrix_room_id"])
    for visibility in ("microdao", "private"):
        room_id = made[visibility]["matrix_room_id"]
        await owner.join(room_id)
        assert (await owner.state(room_id, "m.room.join_rules"))["join_rule"] == "invite"
        assert (await power(owner, room_id))["users"][owner.user_id] == 100
        state = await owner.request("GET", f"/v3/rooms/{q(room_id)}/state")
        assert not [e for e in state if e["type"] == "m.space.parent"]
        with pytest.raises(MatrixError):
            await stranger.join(room_id)
    # The index follows the room's join rule.
    assert made["microdao"]["visibility"] == "private"
    assert made["private"]["visibility"] == "private"
    status, listed = await api.call("GET", f"/microdaos/{PLAIN}/channels")
    assert [c["slug"] for c in listed["channels"]] == [
        "public-room",
        "microdao-room",
        "private-room",
    ]


async def test_invite_a_person_and_an_agent(api, spaced, people, db) -> None:
    owner = await people(OWNER)
    guest = await people("adm.guest")
    body = {"name": "Invites", "visibility": "private"}
    status, made = await api.call("POST", f"/microdaos/{SPACED}/channels", body)
    assert status == 201, made
    room_id, channel_id = made["matrix_room_id"], made["id"]
    path = f"/channels/{channel_id}/invites"
    await owner.join(room_id)  # to watch the room as Element would

    status, invited = await api.call("POST", path, {"user_id": guest.user_id})
    assert status == 201, invited
    assert (invited["membership"], invited["changed"], invited["agent_id"]) == (
        "invite",
        True,
        None,
    )
    assert await owner.membership(room_id, guest.user_id) == "invite"
    status, again = await api.call(
        "POST", f"/channels/{q(room_id)}/invites", {"user_id": guest.user_id}
    )
    assert (status, again["membership"], again["changed"]) == (200, "invite", False)

    # An agent: the bot invites, the puppet joins at once, indexed before the answer.
    status, agent = await api.call("POST", path, {"user_id": "agent:adm-sofia"})
    assert status == 201, agent
    assert (agent["user_id"], agent["agent_id"], agent["membership"]) == (
        SOFIA,
        "agent:adm-sofia",
        "join",
    )
    row = await member_row(db, channel_id, SOFIA)
    assert row is not None and row["role"] == "agent" and row["left_at"] is None
    assert await open_session(db, SOFIA, channel_id) is not None
    assert await owner.membership(room_id, SOFIA) == "join"
    # The homeserver's push of the bot's invite is handled too: the puppet stays.
    await asyncio.sleep(1.5)
    assert await owner.membership(room_id, SOFIA) == "join"
    row = await member_row(db, channel_id, SOFIA)
    assert row["left_at"] is None
    status, again = await api.call("POST", path, {"user_id": SOFIA})
    assert (status, again["changed"]) == (200, False)

    # Listed with its open session.
    status, listed = await api.call("GET", "/agents")
    sofia = next(a for a in listed["agents"] if a["external_id"] == "agent:adm-sofia")
    assert [s["channel_id"] for s in sofia["sessions"]] == [channel_id]

    # A person not on the homeserver; an agent the config does not have.
    status, answer = await api.call("POST", path, {"user_id": f"@nobody-{RUN}:{D}"})
    assert (status, answer["field"]) == (404, "user_id"), answer
    assert await owner.membership(room_id, f"@nobody-{RUN}:{D}") is None
    status, answer = await api.call("POST", path, {"user_id": "agent:none"})
    assert (status, answer["field"]) == (404, "user_id")


async def test_messages_of_a_created_channel(api, spaced, people, db) -> None:
    owner = await people(OWNER)
    status, made = await api.call(
        "POST", f"/microdaos/{SPACED}/channels", {"name": "Talk", "visibility": "public"}
    )
    assert status == 201
    room_id = made["matrix_room_id"]
    await owner.join(room_id)
    sent = [await owner.send_text(room_id, f"admin canary {RUN} {i}") for i in range(3)]

    async def indexed() -> Any:
        status, page = await api.call("GET", f"/channels/{made['id']}/messages?limit=2")
        return page if status == 200 and page["next_cursor"] else None

    page = await wait_for(indexed, what="two pages of messages")
    assert [m["matrix_event_id"] for m in page["messages"]] == [sent[2], sent[1]]
    status, rest = await api.call(
        "GET", f"/channels/{made['id']}/messages?limit=2&cursor={page['next_cursor']}"
    )
    assert [m["matrix_event_id"] for m in rest["messages"]] == [sent[0]]
    assert rest["messages"][0]["sender_matrix_id"] == owner.user_id
    assert rest["next_cursor"] is None


async def test_errors_over_the_bridge_port(api, people) -> None:
    assert (await api.call("GET", "/agents", token=None))[0] == 401
    assert (await api.call("GET", "/agents", token="wrong"))[0] == 403
    assert (await api.call("GET", "/microdaos/microdao:none"))[0] == 404
    status, body = await api.call("POST", "/microdaos", {"external_id": "x"})
    assert (status, body["field"]) == (400, "external_id")
    owner = await people(OWNER)
    status, body = await api.call(
        "PUT", f"/users/{q(owner.user_id)}/link", {"external_id": f"user:adm{RUN}"}
    )
    assert status in (200, 201) and body["matrix_id"] == owner.user_id
    status, doc = await api.call("GET", "/openapi.json", token=None)
    assert status == 200 and doc["openapi"].startswith("3.1")


async def test_log_has_no_token_and_no_message_text(api, stack) -> None:
    """Runs last: the whole module's log, at DEBUG."""
    text = stack.log_file.read_text(encoding="utf-8", errors="replace")
    assert "Created room" in text, "the log is this bridge's"
    assert TOKEN not in text
    loud = [line for line in text.splitlines() if (m := LEVEL.match(line)) and m[1] != "DEBUG"]
    assert loud
    assert not [line for line in loud if f"admin canary {RUN}" in line]
