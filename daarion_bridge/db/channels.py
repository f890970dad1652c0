"""channels: one row per Matrix room the bot bridges."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from asyncpg import Connection

from ..translate.bus import ChannelRef


@dataclass(frozen=True, slots=True)
class Channel:
    id: UUID
    microdao_id: UUID
    room_id: str
    microdao: str  # the microDAO's platform id
    slug: str

    @property
    def ref(self) -> ChannelRef:
        return ChannelRef(self.id, self.microdao, self.room_id)


async def by_rooms(conn: Connection, room_ids: Collection[str]) -> dict[str, Channel]:
    rows = await conn.fetch(
        "SELECT c.id, c.microdao_id, c.matrix_room_id, d.external_id, c.slug FROM channels c "
        "JOIN microdaos d ON d.id = c.microdao_id WHERE c.matrix_room_id = ANY($1::text[])",
        list(room_ids),
    )
    return {
        r["matrix_room_id"]: Channel(
            r["id"], r["microdao_id"], r["matrix_room_id"], r["external_id"], r["slug"]
        )
        for r in rows
    }


async def move_to_room(conn: Connection, channel_id: UUID, room_id: str) -> None:
    """The channel's room was upgraded: the same channel (id, slug, microDAO, history)
    lives in the new room."""
    await conn.execute("UPDATE channels SET matrix_room_id = $2 WHERE id = $1", channel_id, room_id)


async def free_slug(conn: Connection, microdao_id: UUID, slug: str) -> str:
    """The slug, or slug-2, slug-3 ... whichever is still free in the microDAO."""
    taken = {
        r["slug"]
        for r in await conn.fetch(
            "SELECT slug FROM channels WHERE microdao_id = $1 AND (slug = $2 OR slug LIKE $3)",
            microdao_id,
            slug,
            slug.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "-%",
        )
    }
    candidate, n = slug, 1
    while candidate in taken:
        n += 1
        candidate = f"{slug}-{n}"
    return candidate


async def create(
    conn: Connection,
    *,
    room_id: str,
    name: str,
    slug: str,
    visibility: str,
    microdao_id: UUID,
    created_by_user_id: UUID | None,
    created_by_agent_id: UUID | None = None,
) -> tuple[Channel, bool]:
    """The channel of the room, and whether it was created now (else updated)."""
    existing = (await by_rooms(conn, [room_id])).get(room_id)
    if existing is not None:
        await conn.execute(
            "UPDATE channels SET name = $2, visibility = $3 WHERE id = $1",
            existing.id,
            name,
            visibility,
        )
        return existing, False
    await conn.execute(
        "INSERT INTO channels (slug, name, microdao_id, matrix_room_id, visibility, "
        "created_by_user_id, created_by_agent_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        await free_slug(conn, microdao_id, slug),
        name,
        microdao_id,
        room_id,
        visibility,
        created_by_user_id,
        created_by_agent_id,
    )
    return (await by_rooms(conn, [room_id]))[room_id], True


async def set_name(conn: Connection, channel_id: UUID, name: str) -> bool:
    """True when the name changed."""
    status = await conn.execute(
        "UPDATE channels SET name = $2 WHERE id = $1 AND name IS DISTINCT FROM $2", channel_id, name
    )
    return status != "UPDATE 0"


async def set_visibility(conn: Connection, channel_id: UUID, visibility: str) -> bool:
    """True when the visibility changed."""
    status = await conn.execute(
        "UPDATE channels SET visibility = $2 WHERE id = $1 AND visibility IS DISTINCT FROM $2",
        channel_id,
        visibility,
    )
    return status != "UPDATE 0"


async def visibility_of(conn: Connection, room_id: str) -> str | None:
    return await conn.fetchval("SELECT visibility FROM channels WHERE matrix_room_id = $1", room_id)


async def by_ref(conn: Connection, ref: str) -> Channel | None:
    """A channel by row uuid or Matrix room id."""
    try:
        row_id = UUID(ref)
    except ValueError:
        return (await by_rooms(conn, [ref])).get(ref)
    room_id = await conn.fetchval("SELECT matrix_room_id FROM channels WHERE id = $1", row_id)
    return (await by_rooms(conn, [room_id])).get(room_id) if room_id else None


async def move(conn: Connection, channel: Channel, microdao_id: UUID) -> str:
    """Make the channel one of another microDAO (`link`). Its slug stays unless the
    microDAO has it already; then slug-2, slug-3 ... Returns the slug. Call under the
    ingest lock, like every writer that picks a slug."""
    slug = await free_slug(conn, microdao_id, channel.slug)
    await conn.execute(
        "UPDATE channels SET microdao_id = $2, slug = $3 WHERE id = $1",
        channel.id,
        microdao_id,
        slug,
    )
    return slug


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """A channel as the admin API shows it."""

    id: UUID
    slug: str
    name: str
    visibility: str
    matrix_room_id: str
    microdao: str  # the microDAO's platform id
    created_at: datetime | None
    created_by: str | None  # platform id of the creating user or agent


_INFO = """
SELECT c.id, c.slug, c.name, c.visibility, c.matrix_room_id, d.external_id, c.created_at,
       COALESCE(u.external_id, a.external_id)
FROM channels c JOIN microdaos d ON d.id = c.microdao_id
LEFT JOIN users u ON u.id = c.created_by_user_id
LEFT JOIN agents a ON a.id = c.created_by_agent_id
"""


async def list_of_microdao(conn: Connection, microdao_id: UUID) -> list[ChannelInfo]:
    """Oldest first (the microdao_id index, then a sort of one microDAO's channels)."""
    rows = await conn.fetch(
        _INFO + "WHERE c.microdao_id = $1 ORDER BY c.created_at, c.slug", microdao_id
    )
    return [ChannelInfo(*r) for r in rows]


async def info(conn: Connection, channel_id: UUID) -> ChannelInfo | None:
    row = await conn.fetchrow(_INFO + "WHERE c.id = $1", channel_id)
    return ChannelInfo(*row) if row else None


async def slug_taken(conn: Connection, microdao_id: UUID, slug: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM channels WHERE microdao_id = $1 AND slug = $2)",
            microdao_id,
            slug,
        )
    )
