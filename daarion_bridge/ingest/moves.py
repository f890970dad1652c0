"""A channel moves to another microDAO: `!daarion link`/`unlink`, and a room's space
changing under it (ingest/spaces_follow.py). One way to do it, under the ingest lock, so
no transaction picks a slug at the same time."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from asyncpg import Pool

from ..config import Config
from ..db import bookkeeping, channels, microdaos, users
from ..translate import bus
from .announce import Announcer


class Move(enum.Enum):
    MOVED = "moved"
    NOT_A_CHANNEL = "not a channel"
    ALREADY_THERE = "already there"
    NO_SUCH_MICRODAO = "no such microDAO"


@dataclass(frozen=True, slots=True)
class MoveResult:
    result: Move
    previous: channels.Channel | None = None
    slug: str = ""
    announced: int = 0  # outbox rows written: the publisher is to be woken


async def move_channel(
    pool: Pool, room_id: str, ref: str, config: Config, cause: str
) -> MoveResult:
    """Make the room a channel of the microDAO `ref`: one that exists, or the default
    (made on first use, owned by the bot), announced as messaging.channel.updated."""
    async with pool.acquire() as conn, conn.transaction():
        await bookkeeping.lock_ingest(conn)
        current = (await channels.by_rooms(conn, [room_id])).get(room_id)
        if current is None:
            return MoveResult(Move.NOT_A_CHANNEL)
        if current.microdao == ref:
            return MoveResult(Move.ALREADY_THERE, current, current.slug)
        target = await microdaos.find(conn, ref)
        if target is None:
            if ref != config.bridge.default_microdao:
                return MoveResult(Move.NO_SUCH_MICRODAO, current)
            # The bot, never a person, owns the undeclared default (see ChannelSetup).
            bot = config.bot_mxid
            owner = (await users.ensure_users(conn, [bot]))[bot]
            target = await microdaos.ensure(conn, ref, owner)
        slug = await channels.move(conn, current, target)
        announced = 0
        if config.nats.enabled:
            moved = (await channels.by_rooms(conn, [room_id]))[room_id]
            announcer = Announcer(True, config.bot_mxid)
            fields = {"slug": slug, "previous_microdao_id": current.microdao}
            at = await conn.fetchval("SELECT now()")
            announcer.channel(bus.CHANNEL_UPDATED, moved, fields, at, cause)
            announced = await announcer.flush(conn)
    return MoveResult(Move.MOVED, current, slug, announced)
