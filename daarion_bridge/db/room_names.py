"""bridge_room_names, bridge_member_names: the channels named after their members (rooms
without a name), and the display names members set, to name them as Element does."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from asyncpg import Connection


async def put(conn: Connection, room_id: str, bot_mxid: str, from_members: bool) -> None:
    """A channel was made (or its room read again): whether its name comes from its
    members, and who is left out of them."""
    await conn.execute(
        "INSERT INTO bridge_room_names (room_id, bot_mxid, from_members) VALUES ($1, $2, $3) "
        "ON CONFLICT (room_id) DO UPDATE SET bot_mxid = EXCLUDED.bot_mxid, "
        "from_members = EXCLUDED.from_members",
        room_id,
        bot_mxid,
        from_members,
    )


async def set_from_members(conn: Connection, room_id: str, from_members: bool) -> bool:
    """The room got a name (False) or lost it (True). False when the room has no row
    (a channel made before v11): nothing is known of who to leave out."""
    status = await conn.execute(
        "UPDATE bridge_room_names SET from_members = $2 WHERE room_id = $1", room_id, from_members
    )
    return status != "UPDATE 0"


async def put_display_names(
    conn: Connection, names: Collection[tuple[str, str, str | None]]
) -> None:
    """(room, member, display name or None: removed), as members' join events set them."""
    await conn.executemany(
        """
        WITH gone AS (
            DELETE FROM bridge_member_names
            WHERE $3::text IS NULL AND room_id = $1 AND matrix_id = $2
        )
        INSERT INTO bridge_member_names (room_id, matrix_id, display_name)
        SELECT $1, $2, $3 WHERE $3::text IS NOT NULL
        ON CONFLICT (room_id, matrix_id) DO UPDATE SET display_name = EXCLUDED.display_name
        """,
        list(names),
    )


async def put_room_display_names(conn: Connection, room_id: str, names: Mapping[str, str]) -> None:
    await put_display_names(conn, [(room_id, mxid, name) for mxid, name in names.items()])


# The current members of each room's channel that is named after them, but the one left
# out, with their display name in the room (an agent's own name when it set none).
_MEMBERS = """
SELECT r.room_id, m.matrix_id, COALESCE(n.display_name, m.own_name) AS display_name
FROM bridge_room_names r
JOIN channels c ON c.matrix_room_id = r.room_id
JOIN LATERAL (
    SELECT u.matrix_id, NULL::text AS own_name
    FROM channel_members cm JOIN users u ON u.id = cm.member_user_id
    WHERE cm.channel_id = c.id AND cm.left_at IS NULL
    UNION ALL
    SELECT a.matrix_id, a.name
    FROM channel_members cm JOIN agents a ON a.id = cm.member_agent_id
    WHERE cm.channel_id = c.id AND cm.left_at IS NULL
) m ON m.matrix_id IS DISTINCT FROM r.bot_mxid AND m.matrix_id IS NOT NULL
LEFT JOIN bridge_member_names n ON n.room_id = r.room_id AND n.matrix_id = m.matrix_id
WHERE r.room_id = ANY($1::text[]) AND r.from_members
"""


async def named_after_members(
    conn: Connection, room_ids: Collection[str]
) -> dict[str, list[tuple[str, str | None]]]:
    """For those of the rooms whose channel is named after its members: the members
    (Matrix id, display name or None). A room whose members all left maps to []."""
    rows = await conn.fetch(
        "SELECT room_id FROM bridge_room_names WHERE room_id = ANY($1::text[]) AND from_members",
        list(room_ids),
    )
    found: dict[str, list[tuple[str, str | None]]] = {r["room_id"]: [] for r in rows}
    if found:
        for r in await conn.fetch(_MEMBERS, list(found)):
            found[r["room_id"]].append((r["matrix_id"], r["display_name"]))
    return found
