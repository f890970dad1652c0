"""The bridge bot: accepts or refuses invites and reads a room's state when it joins."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from mautrix.api import Method, Path
from mautrix.appservice import AppServiceAPI, ASStateStore, IntentAPI
from mautrix.errors import MatrixConnectionError, MatrixRequestError
from yarl import URL

from ..config import BridgeConfig, Config
from ..db.writer import ChannelSetup
from ..translate.events import BotInvited
from ..translate.rooms import snapshot_from_state

log = logging.getLogger("daarion.bot")

NO_MICRODAO_NOTICE = (
    "This room cannot be bridged: no microDAO is mapped to it and the bridge has no "
    "default (bridge.default_microdao). Ask the bridge admin to set one, then invite me again."
)


def invite_allowed(inviter: str, domain: str, bridge: BridgeConfig) -> bool:
    """Only people of our own homeserver may bring the bot in, unless the admin opens it."""
    return inviter.split(":", 1)[-1] == domain or bridge.allow_federated_invites


class HomeserverUnavailable(Exception):
    """The homeserver did not answer; the transaction must be retried later."""


class Bot:
    def __init__(self, intent: IntentAPI, config: Config) -> None:
        self.intent = intent
        self.config = config

    @classmethod
    def connect(cls, config: Config, http: aiohttp.ClientSession, state_store: ASStateStore) -> Bot:
        """The bot acting on the homeserver through the appservice's as_token."""
        api = AppServiceAPI(
            base_url=URL(config.homeserver.address),
            bot_mxid=config.bot_mxid,
            token=config.appservice.as_token,
            log=logging.getLogger("daarion.matrix"),
            state_store=state_store,
            client_session=http,
        )
        return cls(api.bot_intent(), config)

    async def setup_profile(self) -> None:
        await self.intent.ensure_registered()
        await self.intent.set_displayname(self.config.appservice.bot_displayname)

    async def accept_invite(self, invite: BotInvited) -> ChannelSetup | None:
        """Join and snapshot the room, or refuse; None when no channel is to be made."""
        room_id = invite.room_id
        try:
            bridge = self.config.bridge
            if not invite_allowed(invite.inviter, self.config.homeserver.domain, bridge):
                log.info("Refusing invite to %s from %s: other homeserver", room_id, invite.inviter)
                await self.intent.leave_room(room_id, reason="Invites from other servers are off")
                return None
            await self.intent.join_room(room_id)
            microdao = self.config.bridge.default_microdao
            if microdao is None:
                log.info("Leaving %s: no microDAO to map it to", room_id)
                await self.intent.send_notice(room_id, NO_MICRODAO_NOTICE)
                await self.intent.leave_room(room_id, reason="No microDAO for this room")
                return None
            state = await self.room_state(room_id)
        except MatrixRequestError as e:
            # The invite was withdrawn or the room is gone: nothing to bridge.
            log.warning("Could not accept invite to %s: %s %s", room_id, e.errcode, e.message)
            return None
        except (MatrixConnectionError, aiohttp.ClientError, TimeoutError) as e:
            raise HomeserverUnavailable(str(e)) from e
        return ChannelSetup(snapshot_from_state(room_id, state), microdao, invite.inviter)

    async def room_state(self, room_id: str) -> list[dict[str, Any]]:
        return await self.intent.api.request(Method.GET, Path.v3.rooms[room_id].state)

    async def room_history(
        self, room_id: str, page_size: int = 100
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The room's timeline as the bot sees it, newest first, one page at a time."""
        token: str | None = None
        while True:
            query = {"dir": "b", "limit": str(page_size)}
            if token:
                query["from"] = token
            page = await self.intent.api.request(
                Method.GET, Path.v3.rooms[room_id].messages, query_params=query
            )
            chunk = page.get("chunk") or []
            if chunk:
                yield chunk
            token = page.get("end")
            if not chunk or not token:
                return

    async def ping(self) -> None:
        """Ask the homeserver to retry its queued transactions now (after an outage)."""
        await self.intent.appservice_ping(self.config.appservice.id)
