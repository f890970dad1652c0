"""Runs people's `!daarion` commands and answers them as the bot (`m.notice`, a reply to
the command). What a command means and who may run it is in commands.py; this is the
I/O.

Commands come from the ingest after the transaction that indexed them committed
(Outcome.commands: new rows only, so a replay runs nothing twice). Each runs in a task of
its own, never inside the transaction: at most MAX_PENDING wait (more are dropped with a
warning), CONCURRENT run at once, in order within a room, each for at most
TIMEOUT_SECONDS. A failure is logged with its traceback and answered in one line. A
crash after the commit but before the answer loses the command (at most once).

The command's text is logged only at DEBUG; INFO names the command (a fixed word), the
sender and the room.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import cast

from asyncpg import Pool
from mautrix.api import Method, Path
from mautrix.errors import MatrixRequestError
from mautrix.types import EventContent, EventType, RoomID, UserID

from ..bus.process import PublisherProcess
from ..bus.publisher import Publisher
from ..config import Config
from ..crypto import Crypto, seal
from ..db import agents, channels, members, microdaos, outbox, sessions
from ..ingest.invites import agent_visibility
from ..ingest.moves import Move, move_channel
from ..matrix.bot import UNREACHABLE, Bot
from ..matrix.puppets import Puppets
from ..policy.invites import bot_invite_allowed, command_invite_allowed
from ..translate.agents import LiveDirectory
from ..translate.events import NewMessage
from ..translate.rooms import invite_level, may_invite, snapshot_from_state
from . import parse as commands
from .parse import AgentHere, Command, Refuse, Status

log = logging.getLogger("daarion.commands")

MAX_PENDING = 32
CONCURRENT = 4
TIMEOUT_SECONDS = 30.0
PROBE_SECONDS = 5.0
FAILED = "The command failed; the bridge's log says why."


class CommandRunner:
    def __init__(
        self,
        pool: Pool,
        bot: Bot,
        puppets: Puppets,
        config: Config,
        directory: LiveDirectory,
        publisher: Publisher | PublisherProcess | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        crypto: Crypto | None = None,
    ) -> None:
        self.pool = pool
        # On: answers in an encrypted room go out encrypted with the bot's own device.
        self.crypto = crypto
        self.bot = bot
        self.puppets = puppets
        self.config = config
        self.directory = directory
        self.publisher = publisher
        self.clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(CONCURRENT)
        self._rooms: dict[str, tuple[asyncio.Lock, int]] = {}  # lock, commands using it

    # -- scheduling ---------------------------------------------------------------------

    def submit(self, messages: Sequence[NewMessage]) -> None:
        """Run these commands (the ingest calls this after its commit)."""
        for msg in messages:
            if len(self._tasks) >= MAX_PENDING:
                log.warning(
                    "Too many bot commands waiting; dropped %s from %s in %s",
                    msg.event_id,
                    msg.sender,
                    msg.room_id,
                )
                continue
            task = asyncio.create_task(self._run(msg), name=f"command {msg.event_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, msg: NewMessage) -> None:
        lock, users_of_lock = self._rooms.get(msg.room_id, (asyncio.Lock(), 0))
        self._rooms[msg.room_id] = (lock, users_of_lock + 1)
        try:
            async with lock, self._slots:  # in order within a room
                async with asyncio.timeout(TIMEOUT_SECONDS):
                    await self.execute(msg)
        except TimeoutError:
            log.warning(
                "Bot command %s in %s stopped after %.0f s",
                msg.event_id,
                msg.room_id,
                TIMEOUT_SECONDS,
            )
        except Exception:
            log.exception("Bot command %s in %s failed", msg.event_id, msg.room_id)
        finally:
            lock, users_of_lock = self._rooms[msg.room_id]
            if users_of_lock <= 1:
                del self._rooms[msg.room_id]
            else:
                self._rooms[msg.room_id] = (lock, users_of_lock - 1)

    async def wait_idle(self) -> None:
        """Until every command submitted so far is done (for tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- one command --------------------------------------------------------------------

    async def execute(self, msg: NewMessage) -> None:
        log.debug("Bot command %s from %s: %r", msg.event_id, msg.sender, msg.command)
        async with self.pool.acquire() as conn:
            channel = (await channels.by_rooms(conn, [msg.room_id])).get(msg.room_id)
            bot_here = channel is not None and await members.present(
                conn, channel.id, self.config.bot_mxid
            )
        if channel is None or not bot_here:
            log.debug(
                "Bot command %s in %s: the bot is not in that room", msg.event_id, msg.room_id
            )
            return
        now = self.clock()
        if commands.is_stale(msg.ts, now):
            log.info(
                "Bot command %s from %s in %s not run: stale", msg.event_id, msg.sender, msg.room_id
            )
            await self.answer(msg, commands.stale_text(msg.ts, now))
            return
        level = commands.level_of(msg.sender, self.config.bridge.permissions)
        decision = commands.decide(commands.parse(msg.command or ""), level)
        if isinstance(decision, Refuse):
            log.info("Bot command from %s in %s refused", msg.sender, msg.room_id)
            await self.answer(msg, decision.text)
            return
        name = decision.spec.name
        log.info("Bot command %s from %s (%s) in %s", name, msg.sender, level, msg.room_id)
        assert level is not None
        handler = getattr(self, f"_{name}")
        try:
            text = await handler(msg, channel, decision.command, level)
        except Exception:
            log.exception("Bot command %s in %s failed", name, msg.room_id)
            text = FAILED
        await self.answer(msg, text)

    async def answer(self, msg: NewMessage, text: str) -> None:
        content = {
            "msgtype": "m.notice",
            "body": text,
            "m.relates_to": {"m.in_reply_to": {"event_id": msg.event_id}},
            "m.mentions": {},
        }
        event_type, content = await seal(self.crypto, self.config.bot_mxid, msg.room_id, content)
        # mautrix sends a plain dict as it is; its type names only mautrix's own classes.
        await self.bot.intent.send_message_event(
            RoomID(msg.room_id),
            EventType.find(event_type, EventType.Class.MESSAGE),
            cast(EventContent, content),
            ensure_joined=False,
        )

    # -- the commands -------------------------------------------------------------------

    async def _help(
        self, msg: NewMessage, channel: channels.Channel, command: Command, level: str
    ) -> str:
        return commands.help_text(level)

    async def _status(
        self, msg: NewMessage, channel: channels.Channel, command: Command, level: str
    ) -> str:
        (hs_error, hs_ms), (db_error, backlog) = await asyncio.gather(
            self._probe_homeserver(), self._probe_database()
        )
        if self.publisher is None:
            nats = "off"
        else:
            nats = "connected" if self.publisher.connected else "not connected"
        encryption = "off (bridge.encryption)"
        if self.crypto is not None:
            try:
                encryption = await self.crypto.status()
            except Exception as e:  # the database is down: said above
                encryption = f"unknown ({type(e).__name__})"
        return commands.status_text(Status(hs_error, hs_ms, db_error, nats, backlog, encryption))

    async def _probe_homeserver(self) -> tuple[str | None, float | None]:
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(PROBE_SECONDS):
                await self.bot.intent.api.request(Method.GET, Path.v3.account.whoami)
        except TimeoutError:
            return f"no answer in {PROBE_SECONDS:.0f} s", None
        except MatrixRequestError as e:
            return f"{e.http_status} {e.errcode}", None
        except UNREACHABLE as e:
            return type(e).__name__, None
        return None, (time.monotonic() - t0) * 1000

    async def _probe_database(self) -> tuple[str | None, int | None]:
        try:
            async with asyncio.timeout(PROBE_SECONDS), self.pool.acquire() as conn:
                return None, await outbox.backlog(conn)
        except TimeoutError:
            return f"no answer in {PROBE_SECONDS:.0f} s", None
        except Exception as e:  # any failure is the answer here, not an error
            return type(e).__name__, None

    async def _agents(
        self, msg: NewMessage, channel: channels.Channel, command: Command, level: str
    ) -> str:
        configured = self.directory.current.roster.agents
        async with self.pool.acquire() as conn:
            here = await sessions.agents_here(conn, channel.id, [a.external_id for a in configured])
        rows = [AgentHere(a, *here.get(a.external_id, (False, None))) for a in configured]
        return commands.agents_text(rows)

    async def _invite(
        self, msg: NewMessage, channel: channels.Channel, command: Command, level: str
    ) -> str:
        agent = commands.find_agent(command.arg, self.directory.current.roster.agents)
        if agent is None:
            return (
                f"No agent '{commands.shown(command.arg)}'. "
                f"Say {commands.PREFIX} agents for the list."
            )
        who = f"{agent.name} ({agent.external_id})"
        async with self.pool.acquire() as conn:
            row = await agents.by_external_id(conn, agent.external_id)
            present = row is not None and await members.agent_present(conn, channel.id, row.id)
            role = (
                await microdaos.role_of(conn, agent.microdao, msg.sender)
                if agent.microdao
                else None
            )
        if present:
            return f"{who} is already in this room."
        # The room as it is now, not as the index last saw it: its power levels say who
        # may invite, its join rule whom it is open to.
        room = snapshot_from_state(msg.room_id, await self.bot.room_state(msg.room_id))
        holds_level = may_invite(msg.sender, room.power_levels, room.creators)
        visibility = await agent_visibility(self.pool, agent, room.access)
        ours = bot_invite_allowed(msg.sender, self.config.homeserver.domain, self.config.bridge)
        if not command_invite_allowed(
            level, msg.sender, agent, role, visibility, ours, holds_level
        ):
            log.info("%s may not bring %s into %s", msg.sender, agent.external_id, msg.room_id)
            if not holds_level:
                return (
                    f"You may not invite {who} here: inviting into this room needs power "
                    f"level {invite_level(room.power_levels)}."
                )
            return f"You may not invite {who} here: ask its owner or an admin of its microDAO."
        # The bot invites (the puppet's invite rules do not ask about the bot's invites:
        # translate/events.py), then the puppet joins.
        await self.puppets.ensure_profile(agent)
        try:
            await self.bot.intent.invite_user(  # type: ignore[call-arg]  # ensure_joined: mautrix's wrapper takes it
                RoomID(msg.room_id),
                UserID(agent.matrix_id),
                reason=f"{commands.PREFIX} invite by {msg.sender}",
                ensure_joined=False,
            )
        except MatrixRequestError as e:
            # Already invited, or the bot may not invite here: the join says whether it
            # matters (a public room needs no invite).
            log.info(
                "The bot could not invite %s to %s: %s", agent.external_id, msg.room_id, e.errcode
            )
        try:
            await self.puppets.intent(agent.matrix_id).join_room(RoomID(msg.room_id), max_retries=0)
        except MatrixRequestError as e:
            log.warning("%s could not join %s: %s", agent.external_id, msg.room_id, e.errcode)
            return f"Could not bring {who} in: the homeserver said {e.errcode}."
        log.info("%s joined %s on a command of %s", agent.external_id, msg.room_id, msg.sender)
        return f"{who} joined this room."

    async def _link(
        self, msg: NewMessage, channel: channels.Channel, command: Command, level: str
    ) -> str:
        ref = commands.microdao_ref(command.arg)
        if ref is None:
            return f"'{commands.shown(command.arg)}' is not a microDAO id (microdao:<name>)."
        return await self._move(msg, ref)

    async def _unlink(
        self, msg: NewMessage, channel: channels.Channel, command: Command, level: str
    ) -> str:
        default = self.config.bridge.default_microdao
        if default is None:
            return (
                "Nothing to unlink to: the bridge has no bridge.default_microdao. "
                f"Use {commands.PREFIX} link <microdao>."
            )
        return await self._move(msg, default)

    async def _move(self, msg: NewMessage, ref: str) -> str:
        """Make the room a channel of the microDAO `ref` (ingest/moves.py)."""
        done = await move_channel(self.pool, msg.room_id, ref, self.config, msg.event_id)
        if done.result is Move.NOT_A_CHANNEL:
            return "This room is not a channel any more."
        if done.result is Move.ALREADY_THERE:
            return f"This room is already a channel of {ref}; nothing changed."
        if done.result is Move.NO_SUCH_MICRODAO:
            return f"No microDAO {ref}: declare it in the bridge's config first."
        assert done.previous is not None
        if done.announced and self.publisher is not None:
            self.publisher.wake()
        previous, slug = done.previous, done.slug
        log.info(
            "Room %s moved from %s to %s by %s", msg.room_id, previous.microdao, ref, msg.sender
        )
        renamed = "" if slug == previous.slug else f" (its slug {previous.slug} was taken there)"
        return (
            f"This room is now a channel of {ref}, was {previous.microdao}; slug {slug}{renamed}."
        )
