"""Room state follows the newest event, not the last to arrive: an older membership,
power levels, name or join rule sent again (the admin API's join read back from room
state, `dead-letters replay`, a homeserver restored from backup) changes nothing."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.db.matrix_events import event, member
from tests.db.test_agents import SOFIA, Feed, agent_member, apply, make_roster, sessions_of
from tests.db.test_agents import setup as agents_setup
from tests.db.test_writer import BOB, CAROL, Txns, roles, setup

ROOM = "!room:localhost"


@pytest.fixture
async def txns(pool: asyncpg.Pool) -> Txns:
    t = Txns(pool)
    await t.send([], [setup()])
    return t


def again(e: dict[str, Any]) -> dict[str, Any]:
    """The same event, as a later transaction brings it once more."""
    return dict(e)


async def test_a_replayed_older_join_leaves_the_member_gone(pool: asyncpg.Pool, txns: Txns) -> None:
    join = member(CAROL, "join")
    await txns.send([join])
    await txns.send([member(CAROL, "leave")])
    outcome = await txns.send([again(join)])
    assert (await roles(pool))[CAROL] == ("member", False)
    assert outcome.applied["Membership"] == 1  # counted, but it changed nothing


async def test_an_older_leave_arriving_after_a_rejoin_is_ignored(
    pool: asyncpg.Pool, txns: Txns
) -> None:
    leave = member(CAROL, "leave")
    await txns.send([member(CAROL, "join")])
    await txns.send([leave, member(CAROL, "join")])
    await txns.send([again(leave)])
    assert (await roles(pool))[CAROL] == ("member", True)


async def test_the_same_membership_event_twice_changes_nothing_the_second_time(
    pool: asyncpg.Pool, txns: Txns
) -> None:
    """A leave, the rejoin, then the leave once more in the same transaction as a newer
    event of someone else: only events newer than their member's last one apply."""
    leave, rejoin = member(BOB, "leave"), member(BOB, "join")
    await txns.send([leave, rejoin])
    await txns.send([member(CAROL, "join"), again(leave)])
    found = await roles(pool)
    assert found[BOB][1] is True and found[CAROL][1] is True


async def test_replayed_older_room_state_keeps_the_newer(pool: asyncpg.Pool, txns: Txns) -> None:
    old_name = event("m.room.name", {"name": "Old"}, state_key="")
    old_rule = event("m.room.join_rules", {"join_rule": "public"}, state_key="")
    old_levels = event("m.room.power_levels", {"users": {BOB: 100}}, state_key="")
    await txns.send([old_name, old_rule, old_levels])
    await txns.send(
        [
            event("m.room.name", {"name": "New"}, state_key=""),
            event("m.room.join_rules", {"join_rule": "invite"}, state_key=""),
            event("m.room.power_levels", {"users": {BOB: 0}}, state_key=""),
        ]
    )
    outcome = await txns.send([again(old_name), again(old_rule), again(old_levels)])
    row = await pool.fetchrow("SELECT name, visibility FROM channels")
    assert (row["name"], row["visibility"]) == ("New", "private")
    assert (await roles(pool))[BOB] == ("member", True)
    assert outcome.ignored["PowerLevels"] == 1 and outcome.ignored["RoomName"] == 1
    # A join after the replay takes its role from the newer levels.
    await txns.send([member(BOB, "leave"), member(BOB, "join")])
    assert (await roles(pool))[BOB] == ("member", True)


@pytest.mark.parametrize("isolate", [False, True], ids=["batched", "isolated"])
async def test_a_replayed_agent_join_neither_rejoins_nor_reopens_a_session(
    pool: asyncpg.Pool, isolate: bool
) -> None:
    roster = make_roster()
    await apply(pool, roster)
    feed = Feed(pool, roster, isolate=isolate)
    await feed.send([], [agents_setup()])
    join = member(SOFIA, "join")
    await feed.send([join])
    await feed.send([member(SOFIA, "leave")])
    await feed.send([again(join)])
    row = await agent_member(pool, SOFIA)
    assert row is not None and row["left_at"] is not None
    assert [s["status"] for s in await sessions_of(pool, SOFIA)] == ["closed"]
