"""One Synapse transaction -> rows, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from daarion_bridge.db import rooms
from daarion_bridge.db.bookkeeping import INGEST_LOCK_KEY, events_digest, ingest_transaction
from daarion_bridge.ingest.channel_setup import ChannelSetup
from daarion_bridge.ingest.items import Rejected
from daarion_bridge.ingest.writer import write_rows, write_transaction
from daarion_bridge.translate.events import NewMessage, translate_event
from daarion_bridge.translate.preview import BadEvent
from daarion_bridge.translate.rooms import snapshot_from_state
from tests.db.matrix_events import event, member, text

BOT = "@daarion:localhost"
ALICE, BOB, CAROL = "@alice:localhost", "@bob:localhost", "@carol:localhost"
ROOM = "!room:localhost"


def room_state(name: str = "General", room_id: str = ROOM) -> list[dict[str, Any]]:
    return [
        {"type": "m.room.create", "state_key": "", "sender": ALICE,
         "content": {"room_version": "12"}},
        {"type": "m.room.power_levels", "state_key": "", "sender": ALICE,
         "content": {"users": {BOB: 50}, "users_default": 0}},
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "invite"}},
        {"type": "m.room.name", "state_key": "", "content": {"name": name}},
        {"type": "m.room.member", "state_key": ALICE, "content": {"membership": "join"}},
        {"type": "m.room.member", "state_key": BOB, "content": {"membership": "join"}},
        {"type": "m.room.member", "state_key": BOT, "content": {"membership": "join"}},
    ]  # fmt: skip


def items_of(events: list[Any]) -> list[Any]:
    items = []
    for e in events:
        try:
            items.append(translate_event(e, bot_mxid=BOT, preview_length=20))
        except BadEvent as err:
            items.append(Rejected(e, str(err)))
    return items


class Txns:
    """Sends transactions the way the ingest path does, with fresh ids."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.counter = itertools.count(1)

    async def send(
        self, events: list[Any], setups: list[ChannelSetup] = (), txn_id: str | None = None
    ):
        txn_id = txn_id or f"t{next(self.counter)}"
        async with self.pool.acquire() as conn:
            return await write_transaction(
                conn, txn_id, events_digest(events), items_of(events), setups
            )


def setup(
    room_id: str = ROOM, name: str = "General", microdao: str = "microdao:core"
) -> ChannelSetup:
    return ChannelSetup(
        snapshot_from_state(room_id, room_state(name, room_id)), microdao, ALICE, BOT
    )


@pytest.fixture
async def txns(pool: asyncpg.Pool) -> Txns:
    t = Txns(pool)
    await t.send([], [setup()])
    return t


async def previews(pool: asyncpg.Pool) -> dict[str, str]:
    rows = await pool.fetch("SELECT matrix_event_id, content_preview FROM messages")
    return {r["matrix_event_id"]: r["content_preview"] for r in rows}


async def roles(pool: asyncpg.Pool) -> dict[str, tuple[str, bool]]:
    rows = await pool.fetch(
        "SELECT u.matrix_id, m.role, m.left_at IS NULL AS present FROM channel_members m "
        "JOIN users u ON u.id = m.member_user_id"
    )
    return {r["matrix_id"]: (r["role"], r["present"]) for r in rows}


async def test_channel_setup_creates_microdao_channel_and_members(
    pool: asyncpg.Pool, txns: Txns
) -> None:
    channel = await pool.fetchrow("SELECT * FROM channels")
    assert (channel["matrix_room_id"], channel["name"], channel["slug"]) == (
        ROOM,
        "General",
        "general",
    )
    assert channel["visibility"] == "private"
    dao = await pool.fetchrow("SELECT * FROM microdaos")
    assert dao["id"] == channel["microdao_id"] and dao["external_id"] == "microdao:core"
    alice = await pool.fetchrow("SELECT * FROM users WHERE matrix_id = $1", ALICE)
    assert (alice["external_id"], alice["handle"]) == (f"matrix:{ALICE}", "@alice")
    assert channel["created_by_user_id"] == alice["id"]
    # A microDAO the config does not declare is owned by the bridge's bot, not by whoever
    # happened to bring the first room in (issue 16, item 4).
    bot = await pool.fetchrow("SELECT * FROM users WHERE matrix_id = $1", BOT)
    assert dao["owner_user_id"] == bot["id"]
    roles_in_dao = await pool.fetch("SELECT user_id, role FROM microdao_members")
    assert [(r["user_id"], r["role"]) for r in roles_in_dao] == [(bot["id"], "owner")]
    # Room v12: the creator is owner without appearing in power levels.
    assert await roles(pool) == {
        ALICE: ("owner", True),
        BOB: ("admin", True),
        BOT: ("member", True),
    }


async def test_messages_become_rows_with_sender_time_and_preview(
    pool: asyncpg.Pool, txns: Txns
) -> None:
    first, second = text("hello   world\n!"), text("x" * 50, sender=BOB)
    outcome = await txns.send([first, second])
    assert outcome.applied["NewMessage"] == 2
    rows = {
        r["matrix_event_id"]: r
        for r in await pool.fetch(
            "SELECT m.*, u.matrix_id FROM messages m JOIN users u ON u.id = m.sender_user_id"
        )
    }
    assert rows[first["event_id"]]["content_preview"] == "hello world !"
    assert rows[second["event_id"]]["content_preview"] == "x" * 19 + "…"
    assert rows[second["event_id"]]["matrix_id"] == BOB
    assert {r["sender_type"] for r in rows.values()} == {"human"}
    assert all(r["sender_agent_id"] is None for r in rows.values())
    expected = datetime.fromtimestamp(first["origin_server_ts"] / 1000, UTC)
    assert rows[first["event_id"]]["created_at"] == expected


async def test_message_ids_are_time_ordered_uuid7(pool: asyncpg.Pool, txns: Txns) -> None:
    """So each insert lands on the primary key's newest page (see db/messages.py)."""
    events = [text(f"m{i}") for i in range(5)]
    await txns.send(events[:3])
    await txns.send(events[3:])
    rows = await pool.fetch("SELECT id, matrix_event_id FROM messages")
    ids = {r["matrix_event_id"]: r["id"] for r in rows}
    in_order = [ids[e["event_id"]] for e in events]
    assert {i.version for i in in_order} == {7}
    assert in_order == sorted(in_order)
    assert len(set(in_order)) == 5


async def test_replayed_transaction_is_a_no_op(pool: asyncpg.Pool, txns: Txns) -> None:
    events = [text("one"), text("two")]
    first = await txns.send(events, txn_id="same")
    assert not first.replay and not first.reused_id
    again = await txns.send(events, txn_id="same")
    assert again.replay and not again.applied
    # The same events under a new id double nothing either.
    await txns.send(events, txn_id="other")
    assert await pool.fetchval("SELECT count(*) FROM messages") == 2


async def test_a_writer_waiting_for_the_ingest_lock_reads_what_the_holder_committed(
    pool: asyncpg.Pool, txns: Txns
) -> None:
    """Two bridge processes on one database (a rolling restart): the second waits for the
    lock and must then see the channel the first just made, or it would ignore the new
    room's messages. Its reads must take their snapshot after the lock, not before."""
    new_room = "!new:localhost"
    message = text("first words", room=new_room)
    async with pool.acquire() as holder:
        async with ingest_transaction(holder):
            made = await write_rows(holder, "make", events_digest([]), [], [setup(new_room)])
            assert [c.room_id for c in made.new_channels] == [new_room]
            waiting = asyncio.create_task(txns.send([message], txn_id="then"))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # held at the lock until the channel commits
    outcome = await asyncio.wait_for(waiting, 10)
    assert outcome.applied["NewMessage"] == 1
    assert (await previews(pool))[message["event_id"]] == "first words"


async def test_an_ingest_transaction_commits_whole_or_not_at_all(pool: asyncpg.Pool) -> None:
    insert = (
        "INSERT INTO bridge_transactions (txn_id, events_digest, event_count) VALUES ($1, 'd', 0)"
    )
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with ingest_transaction(conn):
                await conn.execute(insert, "rolled back")
                raise RuntimeError("the writer failed")
        assert not conn.is_in_transaction()
        async with ingest_transaction(conn):
            await conn.execute(insert, "committed")
        assert not conn.is_in_transaction()
    ids = {r[0] for r in await pool.fetch("SELECT txn_id FROM bridge_transactions")}
    assert "committed" in ids and "rolled back" not in ids
    # And the lock went with each: another connection takes it at once.
    async with pool.acquire() as other, other.transaction():
        assert await other.fetchval("SELECT pg_try_advisory_xact_lock($1)", INGEST_LOCK_KEY)


async def test_reused_transaction_id_with_new_events_is_processed(
    pool: asyncpg.Pool, txns: Txns
) -> None:
    await txns.send([text("before reset")], txn_id="1")
    outcome = await txns.send([text("after reset")], txn_id="1")
    assert not outcome.replay and outcome.reused_id
    assert sorted((await previews(pool)).values()) == ["after reset", "before reset"]


async def test_edit_updates_preview_and_adds_no_row(pool: asyncpg.Pool, txns: Txns) -> None:
    original = text("typo")
    edit = text(
        "* fixed",
        **{
            "m.new_content": {"msgtype": "m.text", "body": "fixed"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original["event_id"]},
        },
    )
    await txns.send([original, edit])
    assert await previews(pool) == {original["event_id"]: "fixed"}


async def test_older_edit_never_overwrites_newer(pool: asyncpg.Pool, txns: Txns) -> None:
    original = text("v0")

    def edit(body: str) -> dict[str, Any]:
        return text(
            f"* {body}",
            **{
                "m.new_content": {"msgtype": "m.text", "body": body},
                "m.relates_to": {"rel_type": "m.replace", "event_id": original["event_id"]},
            },
        )

    first, second = edit("v1"), edit("v2")
    await txns.send([original, second])
    await txns.send([first])  # arrives late, e.g. replayed under a new id
    assert await previews(pool) == {original["event_id"]: "v2"}


async def test_redaction_is_final(pool: asyncpg.Pool, txns: Txns) -> None:
    original = text("secret")
    redaction = event("m.room.redaction", {"redacts": original["event_id"]})
    late_edit = text(
        "* back",
        **{
            "m.new_content": {"msgtype": "m.text", "body": "back"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original["event_id"]},
        },
    )
    await txns.send([original, redaction])
    await txns.send([late_edit])
    assert await previews(pool) == {original["event_id"]: "[deleted]"}


async def test_bad_event_is_dead_lettered_and_does_not_block(
    pool: asyncpg.Pool, txns: Txns
) -> None:
    good = text("fine")
    bad = text("lost body")
    del bad["origin_server_ts"]
    outcome = await txns.send([bad, good, "not an event"])
    assert outcome.dead_letters == 2
    assert list((await previews(pool)).values()) == ["fine"]
    letters = await pool.fetch("SELECT * FROM bridge_dead_letters ORDER BY id")
    assert [r["event_id"] for r in letters] == [bad["event_id"], None]
    assert "origin_server_ts" in letters[0]["reason"]


async def test_failure_mid_transaction_commits_nothing(pool: asyncpg.Pool, txns: Txns) -> None:
    good = text("committed together or not at all")
    unstorable = NewMessage(ROOM, "$nul", ALICE, datetime.now(UTC), "nul \x00 byte")
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.PostgresError):
            await write_transaction(conn, "boom", "d", [*items_of([good]), unstorable])
    assert await previews(pool) == {}
    assert (
        await pool.fetchval("SELECT count(*) FROM bridge_transactions WHERE txn_id = 'boom'") == 0
    )


async def test_membership_changes_keep_members_true(pool: asyncpg.Pool, txns: Txns) -> None:
    await txns.send([member(CAROL, "invite", ALICE)])
    assert CAROL not in await roles(pool)
    await txns.send([member(CAROL, "join")])
    assert (await roles(pool))[CAROL] == ("member", True)
    levels = {"users": {BOB: 50, CAROL: 100}, "users_default": 0}
    await txns.send([event("m.room.power_levels", levels, state_key="")])
    assert (await roles(pool))[CAROL] == ("owner", True)
    await txns.send([event("m.room.power_levels", {"users": {}}, state_key="")])
    assert (await roles(pool))[BOB] == ("member", True)
    assert (await roles(pool))[ALICE] == ("owner", True)  # creator stays owner
    leave = member(CAROL, "leave")
    await txns.send([leave])
    left_at = await pool.fetchval("SELECT left_at FROM channel_members WHERE left_at IS NOT NULL")
    assert left_at == datetime.fromtimestamp(leave["origin_server_ts"] / 1000, UTC)
    rejoin = member(CAROL, "join")
    await txns.send([rejoin])
    row = await pool.fetchrow(
        "SELECT m.* FROM channel_members m JOIN users u ON u.id = m.member_user_id "
        "WHERE u.matrix_id = $1",
        CAROL,
    )
    assert row["left_at"] is None
    assert row["joined_at"] == datetime.fromtimestamp(rejoin["origin_server_ts"] / 1000, UTC)
    await txns.send([member(BOB, "ban", ALICE)])
    assert (await roles(pool))[BOB][1] is False


async def test_room_name_and_join_rule_changes(pool: asyncpg.Pool, txns: Txns) -> None:
    await txns.send(
        [
            event("m.room.name", {"name": "Renamed"}, state_key=""),
            event("m.room.join_rules", {"join_rule": "public"}, state_key=""),
        ]
    )
    row = await pool.fetchrow("SELECT name, visibility, slug FROM channels")
    assert (row["name"], row["visibility"], row["slug"]) == ("Renamed", "public", "general")


async def test_events_of_rooms_that_are_not_channels_are_ignored(
    pool: asyncpg.Pool, txns: Txns
) -> None:
    stray = text("elsewhere")
    stray["room_id"] = "!other:localhost"
    outcome = await txns.send([stray])
    assert outcome.ignored["NewMessage"] == 1
    assert await previews(pool) == {}


async def test_slug_is_unique_within_the_microdao(pool: asyncpg.Pool, txns: Txns) -> None:
    await txns.send([], [setup("!two:localhost"), setup("!three:localhost")])
    await txns.send([], [setup("!four:localhost", microdao="microdao:other")])
    rows = await pool.fetch(
        "SELECT c.slug, d.external_id FROM channels c JOIN microdaos d ON d.id = c.microdao_id "
        "ORDER BY c.created_at, c.slug"
    )
    slugs = sorted((r["external_id"], r["slug"]) for r in rows)
    assert slugs == [
        ("microdao:core", "general"),
        ("microdao:core", "general-2"),
        ("microdao:core", "general-3"),
        ("microdao:other", "general"),
    ]


async def test_hostile_text_is_stored_literally(pool: asyncpg.Pool, txns: Txns) -> None:
    hostile = "'); DROP TABLE messages; -- <b>\u202e\x07"
    await txns.send([text(hostile), event("m.room.name", {"name": hostile}, state_key="")])
    assert list((await previews(pool)).values()) == [hostile[:19] + "…"]
    assert await pool.fetchval("SELECT name FROM channels") == hostile


async def test_old_transaction_ids_are_pruned(pool: asyncpg.Pool, txns: Txns) -> None:
    from daarion_bridge.db.maintenance import prune_transactions

    await txns.send([text("a")], txn_id="old")
    await txns.send([text("b")], txn_id="new")
    await pool.execute(
        "UPDATE bridge_transactions SET processed_at = now() - interval '8 days' "
        "WHERE txn_id = 'old'"
    )
    assert await prune_transactions(pool) == 1
    ids = {r["txn_id"] for r in await pool.fetch("SELECT txn_id FROM bridge_transactions")}
    assert "old" not in ids and "new" in ids


async def test_one_transaction_with_everything_applies_like_one_by_one(
    pool: asyncpg.Pool, txns: Txns
) -> None:
    kept, gone = text("v0"), text("doomed")

    def edit_of(target: dict[str, Any], body: str) -> dict[str, Any]:
        return text(
            f"* {body}",
            **{
                "m.new_content": {"msgtype": "m.text", "body": body},
                "m.relates_to": {"rel_type": "m.replace", "event_id": target["event_id"]},
            },
        )

    newer, older = edit_of(kept, "v2"), edit_of(kept, "v1")
    newer["origin_server_ts"], older["origin_server_ts"] = 2_000_000_000_000, 1_900_000_000_000
    batch = [
        kept, member(CAROL, "join"), gone, newer, older,
        event("m.room.redaction", {"redacts": gone["event_id"]}),
        edit_of(gone, "resurrected?"), member(CAROL, "leave"), text("last", sender=CAROL),
    ]  # fmt: skip
    outcome = await txns.send(batch)
    assert await previews(pool) == {
        kept["event_id"]: "v2", gone["event_id"]: "[deleted]", batch[-1]["event_id"]: "last",
    }  # fmt: skip
    assert (await roles(pool))[CAROL] == ("member", False)
    assert outcome.applied["NewMessage"] == 3 and outcome.applied["RedactMessage"] == 1
    shown = await pool.fetchval(
        "SELECT last_edit_event_id FROM bridge_message_state WHERE matrix_event_id = $1",
        kept["event_id"],
    )
    assert shown == newer["event_id"]


def edit_event(target: str, body: str, sender: str = ALICE, room: str = ROOM) -> dict[str, Any]:
    e = text(
        f"* {body}",
        sender,
        **{
            "m.new_content": {"msgtype": "m.text", "body": body},
            "m.relates_to": {"rel_type": "m.replace", "event_id": target},
        },
    )
    e["room_id"] = room
    return e


def redaction(target: str, sender: str = ALICE, room: str = ROOM) -> dict[str, Any]:
    e = event("m.room.redaction", {"redacts": target}, sender, redacts=target)
    e["room_id"] = room
    return e


async def test_only_the_sender_edits_and_only_in_the_same_room(
    pool: asyncpg.Pool, txns: Txns
) -> None:
    """An m.replace naming another user's message, or a message of another room, is not
    an edit of it: Element ignores such edits, and so must the index."""
    other_room = "!other:localhost"
    await txns.send([], [setup(other_room, "Other")])
    original = text("the original")
    elsewhere = text("in the other room")
    elsewhere["room_id"] = other_room
    await txns.send([original, elsewhere])
    outcome = await txns.send(
        [
            edit_event(original["event_id"], "forged by bob", sender=BOB),
            edit_event(elsewhere["event_id"], "forged across rooms", room=ROOM),
        ]
    )
    assert outcome.applied["EditMessage"] == 0
    shown = await previews(pool)
    assert shown[original["event_id"]] == "the original"
    assert shown[elsewhere["event_id"]] == "in the other room"
    await txns.send([edit_event(original["event_id"], "fixed by alice")])
    assert (await previews(pool))[original["event_id"]] == "fixed by alice"


async def test_redactions_need_the_sender_or_redact_power_in_the_same_room(
    pool: asyncpg.Pool, txns: Txns
) -> None:
    """Synapse accepts a redaction event from anyone but applies it only from the sender
    or a user with the room's redact level (50 by default): BOB has 50, CAROL 0."""
    other_room = "!other:localhost"
    await txns.send([], [setup(other_room, "Other")])
    await txns.send([member(CAROL, "join")])
    by_alice, by_carol, by_alice_2 = text("alice 1"), text("carol", CAROL), text("alice 2")
    elsewhere = text("other room")
    elsewhere["room_id"] = other_room
    await txns.send([by_alice, by_carol, by_alice_2, elsewhere])

    await txns.send(
        [
            redaction(by_alice["event_id"], sender=CAROL),  # no power: not applied
            redaction(elsewhere["event_id"]),  # another room: not applied
        ]
    )
    shown = await previews(pool)
    assert shown[by_alice["event_id"]] == "alice 1"
    assert shown[elsewhere["event_id"]] == "other room"

    await txns.send(
        [
            redaction(by_carol["event_id"], sender=CAROL),  # own message
            redaction(by_alice_2["event_id"], sender=BOB),  # moderator
        ]
    )
    shown = await previews(pool)
    assert shown[by_carol["event_id"]] == "[deleted]"
    assert shown[by_alice_2["event_id"]] == "[deleted]"


async def test_joins_and_leaves_in_one_transaction_apply_in_order(
    pool: asyncpg.Pool, txns: Txns
) -> None:
    """People's joins and leaves are written in runs of one statement each; the events'
    order still holds, and a join after new power levels takes the new role."""
    dave = "@dave:localhost"
    promote = event("m.room.power_levels", {"users": {BOB: 50, CAROL: 100, dave: 50}}, state_key="")
    outcome = await txns.send(
        [
            member(CAROL, "join"), member(dave, "join"), member(dave, "leave"), promote,
            member(CAROL, "leave"), member(CAROL, "join"), member(BOB, "leave"),
            member(dave, "join"), member(dave, "join"),
        ]
    )  # fmt: skip
    assert outcome.applied["Membership"] == 8
    found = await roles(pool)
    assert found[CAROL] == ("owner", True)
    assert found[dave] == ("admin", True)
    assert found[BOB][1] is False


async def test_power_levels_are_kept_for_later_transactions(pool: asyncpg.Pool, txns: Txns) -> None:
    """A join in a later transaction takes its role from the levels stored before."""
    dave = "@dave:localhost"
    await txns.send([event("m.room.power_levels", {"users": {dave: 50}}, state_key="")])
    await txns.send([member(dave, "join")])
    assert (await roles(pool))[dave] == ("admin", True)


async def test_a_transaction_notes_its_rooms_for_the_catch_up(
    pool: asyncpg.Pool, txns: Txns
) -> None:
    await pool.execute("UPDATE bridge_rooms SET last_event_at = now() - interval '1 hour'")
    assert await rooms.recently_active(pool, 600) == []
    other = text("elsewhere")
    other["room_id"] = "!not-a-channel:localhost"
    await txns.send([text("hello"), other])
    assert await rooms.recently_active(pool, 600) == [ROOM]
