"""The config takes back the microDAO roles it gave (hardening issue, item 3), on a real
PostgreSQL: write_roster is the database side of every config apply, at start and on
SIGHUP. Rows others wrote (the admin API, the default microDAO, the platform) stay."""

from __future__ import annotations

import asyncpg

from daarion_bridge.db import microdaos, users
from tests.db.test_agents import ALICE, BOB, CAROL, DAO, DAVE, apply, make_roster, raw_roster

OTHER = "microdao:other"


async def roles(pool: asyncpg.Pool, microdao: str = DAO) -> dict[str, str]:
    rows = await pool.fetch(
        "SELECT u.matrix_id, m.role FROM microdao_members m JOIN users u ON u.id = m.user_id "
        "JOIN microdaos d ON d.id = m.microdao_id WHERE d.external_id = $1",
        microdao,
    )
    return {r["matrix_id"]: r["role"] for r in rows}


async def test_a_member_removed_from_the_config_loses_the_role(pool: asyncpg.Pool) -> None:
    await apply(pool, make_roster(raw_roster(members={BOB: "admin", CAROL: "admin"})))
    assert await roles(pool) == {ALICE: "owner", BOB: "admin", CAROL: "admin"}
    _, report = await apply(pool, make_roster(raw_roster(members={BOB: "admin"})))
    assert await roles(pool) == {ALICE: "owner", BOB: "admin"}
    assert await microdaos.role_of(pool, DAO, CAROL) is None
    assert report.roles_revoked == 1
    # Listed again: the role comes back.
    await apply(pool, make_roster(raw_roster(members={BOB: "admin", CAROL: "member"})))
    assert await roles(pool) == {ALICE: "owner", BOB: "admin", CAROL: "member"}


async def test_a_member_demoted_in_the_config_holds_the_lower_role(pool: asyncpg.Pool) -> None:
    await apply(pool, make_roster(raw_roster(members={BOB: "owner", CAROL: "admin"})))
    await apply(pool, make_roster(raw_roster(members={BOB: "member", CAROL: "guest"})))
    assert await roles(pool) == {ALICE: "owner", BOB: "member", CAROL: "guest"}


async def test_rows_others_wrote_stay(pool: asyncpg.Pool) -> None:
    """A member the platform added, and a config member whose role the platform changed
    since: neither is the config's to take back."""
    await apply(pool, make_roster(raw_roster(members={BOB: "admin", CAROL: "admin"})))
    dao = await microdaos.find(pool, DAO)
    assert dao is not None
    async with pool.acquire() as conn:
        dave = (await users.ensure_users(conn, [DAVE]))[DAVE]
    await pool.execute(
        "INSERT INTO microdao_members (microdao_id, user_id, role) VALUES ($1, $2, 'admin')",
        dao,
        dave,
    )
    await pool.execute(
        "UPDATE microdao_members SET role = 'owner' WHERE microdao_id = $1 AND user_id = "
        "(SELECT id FROM users WHERE matrix_id = $2)",
        dao,
        CAROL,
    )
    _, report = await apply(pool, make_roster(raw_roster(members={})))
    assert await roles(pool) == {ALICE: "owner", CAROL: "owner", DAVE: "admin"}
    assert report.roles_revoked == 1  # Bob's


async def test_a_replaced_owner_the_config_made_loses_the_role(pool: asyncpg.Pool) -> None:
    """The config made Alice owner: when it names Bob, Alice keeps nothing unless listed."""
    await apply(pool, make_roster(raw_roster(owner=ALICE, members={})))
    await apply(pool, make_roster(raw_roster(owner=BOB, members={})))
    assert await roles(pool) == {BOB: "owner"}
    await apply(pool, make_roster(raw_roster(owner=ALICE, members={BOB: "admin"})))
    assert await roles(pool) == {ALICE: "owner", BOB: "admin"}


async def test_a_replaced_owner_someone_else_made_becomes_a_member(pool: asyncpg.Pool) -> None:
    """A microDAO made elsewhere (here as the bridge makes its default microDAO, with
    Carol as its owner), then declared in the config with another owner."""
    async with pool.acquire() as conn:
        carol = (await users.ensure_users(conn, [CAROL]))[CAROL]
        await microdaos.ensure(conn, DAO, carol)
    await apply(pool, make_roster(raw_roster(owner=ALICE, members={})))
    assert await roles(pool) == {ALICE: "owner", CAROL: "member"}
    await apply(pool, make_roster(raw_roster(owner=ALICE, members={})))  # and it stays
    assert await roles(pool) == {ALICE: "owner", CAROL: "member"}


async def test_a_microdao_dropped_from_the_config_keeps_only_its_owner(
    pool: asyncpg.Pool,
) -> None:
    raw = raw_roster(members={BOB: "admin"})
    raw["microdaos"].append({"external_id": OTHER, "name": "Other", "owner": DAVE,
                             "members": {CAROL: "admin"}})  # fmt: skip
    await apply(pool, make_roster(raw))
    raw["microdaos"] = raw["microdaos"][:1]
    await apply(pool, make_roster(raw))
    assert await roles(pool, OTHER) == {DAVE: "owner"}  # its microdaos row names Dave
    assert await roles(pool) == {ALICE: "owner", BOB: "admin"}
