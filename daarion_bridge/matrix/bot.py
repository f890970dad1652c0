"""The bridge bot on the homeserver: profile, room state and history, spaces, ping."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
from mautrix.api import Method, Path
from mautrix.appservice import AppServiceAPI, ASStateStore, IntentAPI
from mautrix.errors import MatrixConnectionError, MatrixRequestError
from mautrix.types import RoomAlias, UserID
from mautrix.util.logging import TraceLogger
from yarl import URL

from ..config import Config

log = logging.getLogger("daarion.bot")


class HomeserverUnavailable(Exception):
    """The homeserver did not answer; the transaction must be retried later."""


UNREACHABLE = (MatrixConnectionError, aiohttp.ClientError, TimeoutError)


async def room_state(intent: IntentAPI, room_id: str) -> list[dict[str, Any]]:
    """The room's full current state, as this user (who must be joined) sees it."""
    state = await intent.api.request(Method.GET, Path.v3.rooms[room_id].state)
    return cast(list[dict[str, Any]], state)


async def room_history(
    intent: IntentAPI, room_id: str, page_size: int = 100
) -> AsyncIterator[list[dict[str, Any]]]:
    """The room's timeline as this user sees it, newest first, one page at a time."""
    token: str | None = None
    while True:
        query = {"dir": "b", "limit": str(page_size)}
        if token:
            query["from"] = token
        page = await intent.api.request(
            Method.GET, Path.v3.rooms[room_id].messages, query_params=query
        )
        chunk = page.get("chunk") or []
        if chunk:
            yield chunk
        token = page.get("end")
        if not chunk or not token:
            return


class Bot:
    def __init__(self, intent: IntentAPI, config: Config) -> None:
        self.intent = intent
        self.config = config

    @classmethod
    def connect(cls, config: Config, http: aiohttp.ClientSession, state_store: ASStateStore) -> Bot:
        """The bot acting on the homeserver through the appservice's as_token."""
        api = AppServiceAPI(
            base_url=URL(config.homeserver.address),
            bot_mxid=UserID(config.bot_mxid),
            token=config.appservice.as_token,
            log=cast(TraceLogger, logging.getLogger("daarion.matrix")),
            state_store=state_store,
            client_session=http,
        )
        return cls(api.bot_intent(), config)

    async def setup_profile(self) -> None:
        await self.intent.ensure_registered()
        await self.intent.set_displayname(self.config.appservice.bot_displayname)

    async def room_state(self, room_id: str) -> list[dict[str, Any]]:
        return await room_state(self.intent, room_id)

    async def resolve_alias(self, alias: str) -> str:
        return (await self.intent.resolve_room_alias(RoomAlias(alias))).room_id

    async def space_lists(self, space_id: str, room_id: str) -> bool:
        """Whether the space lists the room as a child (an m.space.child with `via`)."""
        try:
            content = await self.intent.api.request(
                Method.GET, Path.v3.rooms[space_id].state["m.space.child"][room_id]
            )
        except MatrixRequestError:
            return False  # not listed, or the bot cannot read that space
        via = content.get("via") if isinstance(content, dict) else None
        return isinstance(via, list) and bool(via)

    def room_history(
        self, room_id: str, page_size: int = 100
    ) -> AsyncIterator[list[dict[str, Any]]]:
        return room_history(self.intent, room_id, page_size)

    async def ping(self) -> None:
        """Ask the homeserver to retry its queued transactions now (after an outage)."""
        await self.intent.appservice_ping(self.config.appservice.id)
