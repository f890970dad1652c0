"""One Synapse transaction in, all or nothing: translated while its write begins; with
invites, those act on the homeserver first and the write starts over after them."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg
from asyncpg import Pool

from .. import metrics
from ..config import Config
from ..crypto import Crypto
from ..crypto.service import DECRYPTED
from ..db import bookkeeping
from ..db.channels import Channel
from ..db.errors import WRITE_ERRORS, is_data_error
from ..translate.agents import LiveDirectory
from ..translate.events import (
    AgentInvited,
    BotInvited,
    EditMessage,
    NewMessage,
    Operation,
    RoomTombstoned,
    translate_event,
)
from ..translate.preview import BadEvent
from .channel_setup import ChannelSetup
from .invites import Invites
from .items import Announce, Item, Outcome, Rejected
from .writer import write_transaction, write_while_translating

log = logging.getLogger("daarion.ingest")

ENCRYPTED = "[encrypted]"
# Events translated between two turns of the loop: about a round trip's worth of work.
TRANSLATE_SLICE = 20
# Skipped transaction ids looked for among the committed ones; a wider gap is a sign as is.
MAX_SKIPPED_CHECKED = 1000


class _Abandoned(Exception):
    """The transaction holds invites: the write begun while translating rolls back."""


def _has_invites(items: Sequence[Item] | None) -> bool:
    return items is not None and any(isinstance(i, BotInvited | AgentInvited) for i in items)


def _nothing() -> None:
    return None


def _no_sign(sign: str, skipped: Sequence[str]) -> None:
    return None


def _no_space_changes(_: Sequence[str]) -> None:
    return None


def _no_upgrades(_: Sequence[RoomTombstoned]) -> None:
    return None


def _no_commands(_: Sequence[NewMessage]) -> None:
    return None


def _no_backfills(_: Sequence[Channel]) -> None:
    return None


class Ingestor:
    def __init__(
        self,
        pool: Pool,
        invites: Invites,
        directory: LiveDirectory,
        config: Config,
        *,
        on_homeserver_reset: Callable[[str, Sequence[str]], None] = _no_sign,
        on_announced: Callable[[], None] = _nothing,
        on_commands: Callable[[Sequence[NewMessage]], None] = _no_commands,
        on_upgrades: Callable[[Sequence[RoomTombstoned]], None] = _no_upgrades,
        on_space_changes: Callable[[Sequence[str]], None] = _no_space_changes,
        crypto: Crypto | None = None,
        on_backfills: Callable[[Sequence[Channel]], None] = _no_backfills,
    ) -> None:
        """`on_homeserver_reset`: signs that the homeserver dropped events (see
        _note_sequence): what was seen, and the transaction ids it skipped (to be looked
        for among the committed ones: another bridge on this database may have had them).
        `on_announced`: outbox rows were committed (NATS on).
        `on_commands`: people's `!daarion` commands, handed over after the commit.
        `on_upgrades`: channels' rooms upgraded to new rooms, to follow after the commit.
        `on_space_changes`: rooms whose space links changed, to map again after it.
        `on_backfills`: new channels whose earlier history is to be read back."""
        self.pool = pool
        self.invites = invites
        self.directory = directory
        self.bot_mxid = config.bot_mxid
        self.preview_length = config.bridge.preview_length
        # Synapse sends one transaction at a time; a replay racing the original must not
        # interleave its writes with it. Invite handling (joins, room state) runs outside:
        # a replay is recognised before it, and joining twice is harmless.
        self._lock = asyncio.Lock()
        # Synapse numbers its transactions: the sequence tells when it may have dropped
        # events (see _note_sequence).
        self._last_numeric_id = -1
        self.on_homeserver_reset = on_homeserver_reset
        # With NATS on, every change also goes to the outbox; the publisher is told.
        self.announce = (
            Announce(config.bot_mxid, config.nats.invoke_agents) if config.nats.enabled else None
        )
        self.on_announced = on_announced
        self.on_commands = on_commands
        self.on_upgrades = on_upgrades
        self.on_space_changes = on_space_changes
        # Encryption on: encrypted messages are decrypted with the agents' devices.
        self.crypto = crypto
        self.plaintext_previews = config.bridge.encryption.plaintext_previews
        self.on_backfills = on_backfills

    def translate(self, events: Sequence[Any]) -> list[Item]:
        items: list[Item] = []
        agents = self.directory.current
        for event in events:
            try:
                item = translate_event(
                    event,
                    bot_mxid=self.bot_mxid,
                    preview_length=self.preview_length,
                    agents=agents,
                )
                items.append(self._encryption_aware(event, item))
            except BadEvent as e:
                items.append(Rejected(event, str(e)))
        return items

    def _encryption_aware(self, event: Any, item: Operation | None) -> Operation | None:
        """A decrypted message keeps `[encrypted]` in the index unless plaintext previews
        are on, while its text (in memory) finds mentions and commands; one still
        encrypted calls no agent (its key may come later, see _decrypted_late). One
        decrypted late (`late`) shows its text then, if plaintext previews are on."""
        if self.crypto is None or not isinstance(event, dict):
            return item
        mark = event.get(DECRYPTED)
        if mark is None:
            if isinstance(item, NewMessage) and event.get("type") == "m.room.encrypted":
                return dataclasses.replace(item, may_mention=None, sealed=True)
            return item
        if isinstance(item, NewMessage | EditMessage) and not self.plaintext_previews:
            item = dataclasses.replace(item, preview=ENCRYPTED)
        if isinstance(item, NewMessage | EditMessage) and mark == "late":
            item = dataclasses.replace(item, late=True)
        return item

    async def _open(self, events: Sequence[Any]) -> list[Any]:
        """The transaction's events, those whose key is here decrypted; the others wait
        for theirs (bridge_encrypted_waiting) and are indexed as `[encrypted]`."""
        assert self.crypto is not None
        opened = []
        for event in events:
            if (
                isinstance(event, dict)
                and event.get("type") == "m.room.encrypted"
                and "state_key" not in event
            ):
                decrypted = await self.crypto.decrypt(event)
                if decrypted is not None:
                    opened.append({**decrypted, DECRYPTED: "now"})
                    continue
                await self.crypto.wait_for_key(event)
            opened.append(event)
        return opened

    async def _decrypted_late(self) -> None:
        """Messages indexed as `[encrypted]` whose key has come: each decrypted and
        written as a transaction of its own (`decrypted:<event id>`), so its mentions,
        invocations and commands run once, whatever is retried."""
        assert self.crypto is not None
        readable = await self.crypto.now_readable()
        for event_id, event in readable:
            await self.write_late(event_id, event)
        await self.crypto.done_waiting([event_id for event_id, _ in readable])

    async def write_late(self, event_id: str, decrypted: Mapping[str, Any]) -> None:
        """One message (or edit) indexed as `[encrypted]` before, now decrypted."""
        late = {**decrypted, DECRYPTED: "late"}
        txn_id = f"decrypted:{event_id}"
        digest = bookkeeping.events_digest([late])
        async with self._lock:
            _, outcome = await self._write_while_translating(txn_id, digest, [late], False)
        if outcome is not None:
            self._after_write(outcome)

    def _after_write(self, outcome: Outcome) -> None:
        """Hand over what the commit set off; never awaited: the transaction answers now."""
        if outcome.announced:
            self.on_announced()
        if outcome.commands:
            self.on_commands(outcome.commands)
        if outcome.upgrades:
            self.on_upgrades(outcome.upgrades)
        if outcome.space_changes:
            self.on_space_changes(outcome.space_changes)
        if outcome.backfills:
            self.on_backfills(outcome.backfills)

    async def handle_transaction(
        self,
        txn_id: str,
        events: Sequence[Any],
        ephemeral: Sequence[Any] = (),
        extras: Mapping[str, Any] | None = None,
        *,
        backfill: bool = False,
    ) -> Outcome:
        """`extras`: the rest of Synapse's transaction body, where the crypto part is
        (to-device messages, key counts, device lists). `backfill`: the events are a
        room's history from before it became a channel (ingest/backfill.py): they call no
        agent and run no command."""
        started = time.perf_counter()
        digest = bookkeeping.events_digest(events)
        keys_came = False
        if self.crypto is not None:
            # Committed first and on its own: a retry of this transaction comes without it.
            # One the bridge made of events it read back (the catch-up's) has no crypto
            # part, but the membership changes it found rotate room keys all the same.
            body = extras if extras is not None else {"events": events}
            keys_came = await self.crypto.absorb(body)
            events = await self._open(events)
        async with self._lock:
            items, outcome = await self._write_while_translating(txn_id, digest, events, backfill)
        if outcome is None:
            outcome = await self._write_with_invites(txn_id, digest, events, items)
        self._after_write(outcome)
        self._record(outcome, ephemeral, time.perf_counter() - started)
        self._note_sequence(txn_id, outcome)
        if self.crypto is not None and (keys_came or self.crypto.recheck):
            self.crypto.recheck = True  # until they are all through: a failure retries
            await self._decrypted_late()
            self.crypto.recheck = False
        return outcome

    async def _write_while_translating(
        self, txn_id: str, digest: str, events: Sequence[Any], backfill: bool
    ) -> tuple[list[Item], Outcome | None]:
        """The common case: the write begins, claims the id and looks up what the events
        name while they are translated. No outcome when they hold invites: this writes
        nothing then (see _write_with_invites)."""
        translated: asyncio.Future[list[Item]] = asyncio.get_running_loop().create_future()
        async with self.pool.acquire() as conn:
            write = asyncio.create_task(
                write_while_translating(
                    conn,
                    txn_id,
                    digest,
                    events,
                    translated,
                    announce=self.announce,
                    backfill=backfill,
                )
            )
            items: list[Item] | None = None
            try:
                items = await self._translate_in_slices(events)
            finally:
                if items is None or _has_invites(items):
                    translated.set_exception(_Abandoned())
                    # The write must be over (rolled back) before its connection goes back.
                    await asyncio.gather(write, return_exceptions=True)
                else:
                    translated.set_result(items)
            if _has_invites(items):
                return items, None
            outcome = await self._retry_on_data_error(
                conn, txn_id, digest, events, items, write, backfill=backfill
            )
        return items, outcome

    async def _write_with_invites(
        self, txn_id: str, digest: str, events: Sequence[Any], items: Sequence[Item]
    ) -> Outcome:
        """Invites act on the homeserver before anything is written, so a replay must be
        recognised first, or it would join and speak twice. Joining and reading a room's
        state take as long as the homeserver makes them (a big federated room: long), so
        they run outside the lock; only the write takes it."""
        if await bookkeeping.is_committed(self.pool, txn_id, digest):
            return Outcome(replay=True)
        setups = await self._accept_invites(items)
        async with self._lock, self.pool.acquire() as conn:
            write = write_transaction(conn, txn_id, digest, items, setups, announce=self.announce)
            return await self._retry_on_data_error(
                conn, txn_id, digest, events, items, write, setups
            )

    async def _retry_on_data_error(
        self,
        conn: asyncpg.Connection,
        txn_id: str,
        digest: str,
        events: Sequence[Any],
        items: Sequence[Item],
        write: Awaitable[Outcome],
        setups: Sequence[ChannelSetup] = (),
        *,
        backfill: bool = False,
    ) -> Outcome:
        """The write; if the database rejected a row, again event by event, dead-lettering
        what it rejects."""
        try:
            return await write
        except WRITE_ERRORS as e:
            if not is_data_error(e):
                raise
            log.warning(
                "Transaction %s: database rejected a row (%s); retrying event by event",
                txn_id,
                getattr(e, "sqlstate", type(e).__name__),
            )
            return await write_transaction(
                conn,
                txn_id,
                digest,
                items,
                setups,
                events=events,
                announce=self.announce,
                backfill=backfill,
            )

    async def _translate_in_slices(self, events: Sequence[Any]) -> list[Item]:
        """Translate, giving the loop a turn before each slice: the write's first
        statements go out and their answers come back in between, while PostgreSQL
        works on them."""
        items: list[Item] = []
        for start in range(0, len(events), TRANSLATE_SLICE):
            await asyncio.sleep(0)
            items.extend(self.translate(events[start : start + TRANSLATE_SLICE]))
        return items

    async def write_setups(self, txn_id: str, setups: Sequence[ChannelSetup]) -> Outcome:
        """Channels of rooms the bridge made itself (the admin API), written as an accepted
        invite's are: under the ingest lock, with their outbox events, recorded under
        `txn_id` so a repeat writes nothing."""
        async with self._lock, self.pool.acquire() as conn:
            outcome = await write_transaction(
                conn, txn_id, bookkeeping.events_digest([]), [], setups, announce=self.announce
            )
        self._after_write(outcome)
        for channel in outcome.new_channels:
            log.info("Room %s is now channel %s", channel.room_id, channel.id)
        return outcome

    def _note_sequence(self, txn_id: str, outcome: Outcome) -> None:
        """Signs that the homeserver dropped events on their way here: its transaction ids
        went back (it restarted), skipped one (a transaction it stored but never sent), or
        it resent one already committed (its queue was lost in a restart)."""
        if not txn_id.isdigit():
            return
        number, last = int(txn_id), self._last_numeric_id
        self._last_numeric_id = number
        if last < 0:
            return  # the first since start: the start's own catch-up covers it
        skipped: Sequence[str] = ()
        if number < last or outcome.reused_id:
            sign = f"transaction ids started again at {number}"
        elif number > last + 1:
            sign = f"transaction ids skipped from {last} to {number}"
            if number - last - 1 <= MAX_SKIPPED_CHECKED:
                skipped = [str(n) for n in range(last + 1, number)]
        elif outcome.replay:
            sign = f"transaction {number} was sent again"
        else:
            return
        self.on_homeserver_reset(sign, skipped)

    async def _accept_invites(self, items: Sequence[Item]) -> list[ChannelSetup]:
        setups = []
        for item in items:
            if isinstance(item, BotInvited | AgentInvited):
                setup = await self.invites.handle(item)
                if setup is not None:
                    setups.append(setup)
        return setups

    def _record(self, outcome: Outcome, ephemeral: Sequence[Any], seconds: float) -> None:
        metrics.TRANSACTIONS.labels("replay" if outcome.replay else "committed").inc()
        metrics.TRANSACTION_SECONDS.observe(seconds)
        for kind, n in outcome.applied.items():
            metrics.EVENTS.labels(kind, "applied").inc(n)
        for kind, n in outcome.ignored.items():
            metrics.EVENTS.labels(kind, "ignored").inc(n)
        if outcome.dead_letters:
            metrics.EVENTS.labels("invalid", "dead_letter").inc(outcome.dead_letters)
            metrics.DEAD_LETTERS.inc(outcome.dead_letters)
            log.warning("%d event(s) dead-lettered", outcome.dead_letters)
        if ephemeral:
            metrics.EVENTS.labels("ephemeral", "ignored").inc(len(ephemeral))
        for channel in outcome.new_channels:
            log.info("Room %s is now channel %s", channel.room_id, channel.id)
