"""The bridge process: start-up order, readiness and shutdown.

Start builds the services in order and pushes each one's stop as it starts; stop closes
the way in first (the HTTP listener, and the work its requests set off), then stops the
rest in the reverse of their start. A start that fails stops what it had started."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Coroutine, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
from aiohttp import web
from mautrix.appservice.state_store.asyncpg import PgASStateStore
from mautrix.errors import MatrixConnectionError, MatrixRequestError
from mautrix.util.async_db import Database

from . import metrics
from .admin.service import Admin
from .agents.context import ContextReader
from .agents.speak import RateLimiter, Speaker
from .agents.sync import apply_roster, make_bot_the_system_agent, retire_puppets
from .bus.process import PublisherProcess
from .commands.run import CommandRunner
from .config import Config, load_config
from .crypto import Crypto, open_crypto
from .crypto.requests import KeyRequests
from .db import maintenance
from .db.channels import Channel
from .db.database import open_database
from .db.embedded import EmbeddedPostgres
from .errors import OperatorError
from .ingest.backfill import Backfill
from .ingest.catchup import CatchUp
from .ingest.ingestor import Ingestor
from .ingest.invites import Invites
from .ingest.recovery import DatabaseRecovery
from .ingest.spaces_follow import SpacesFollow
from .ingest.upgrades import Upgrades
from .matrix.bot import Bot
from .matrix.puppets import Puppets
from .matrix.reach import homeserver_problem, watch_homeserver
from .matrix.registration import check_registration
from .process import freeze_long_lived_objects
from .redact import redact_url
from .translate.agents import LiveDirectory
from .translate.events import RoomTombstoned
from .web.admin_api import AdminApi
from .web.agents_api import AgentsApi
from .web.appservice import AppserviceApi

log = logging.getLogger("daarion.bridge")

T = TypeVar("T")


@dataclass(frozen=True)
class Services:
    """What runs on the open database, all made before any of it starts (Bridge._prepare)."""

    pool: asyncpg.Pool
    http: aiohttp.ClientSession
    bot: Bot
    puppets: Puppets
    recovery: DatabaseRecovery
    ingestor: Ingestor
    catch_up: CatchUp
    backfill: Backfill
    upgrades: Upgrades
    spaces_follow: SpacesFollow
    commands: CommandRunner
    publisher: PublisherProcess | None  # NATS on
    app: web.Application  # the appservice API, with the agents' and the admin's


class Background:
    """Tasks beside the requests: maintenance, puppets leaving, reloads. Their loops
    handle their own errors, so a task that fails is a bug: it is logged when it ends,
    not when the task is collected. Stop cancels those still running."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("Background task %r failed", task.get_name(), exc_info=error)

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _nothing() -> None:
    return None


class Bridge:
    """The bridge process's services: start, readiness, reload (SIGHUP) and stop."""

    def __init__(self, config: Config, registration_path: Path | None = None) -> None:
        self.config = config
        self.registration_path = registration_path
        self.directory = LiveDirectory(config.roster)
        self.services: Services | None = None  # once the database is open
        self.crypto: Crypto | None = None  # bridge.encryption on, once the database is open
        self.background = Background()
        self.reloading: asyncio.Task[bool] | None = None
        self.started = False
        # What start started, stopped in reverse by stop.
        self._stack = AsyncExitStack()
        # The way in, closed first: the HTTP listener and what its requests set off.
        self._entrance = AsyncExitStack()

    def is_ready(self) -> bool:
        services = self.services
        return self.started and services is not None and not services.recovery.recovering

    async def start(self) -> None:
        """Start everything in order. On an error, what had started is stopped before
        the error goes on. Cancelled (a signal while starting), it leaves that to the
        caller's stop(), which the caller runs whatever start did."""
        try:
            await self._start()
        except Exception:
            await self.stop()
            raise

    async def _start(self) -> None:
        t0 = time.monotonic()
        cfg = self.config
        stack = self._stack
        db_url = await self._database_url()
        db, state_db = await self._open_database(db_url)
        stack.push_async_callback(db.stop)
        connector = aiohttp.TCPConnector(limit=100, ssl=cfg.homeserver.verify_ssl)
        http = aiohttp.ClientSession(connector=connector)
        stack.push_async_callback(http.close)
        pool: asyncpg.Pool = db.pool  # type: ignore[attr-defined]
        await make_bot_the_system_agent(pool, cfg.bot_mxid, cfg.appservice.bot_displayname)
        self.crypto = await self._open_crypto(db_url, db, http)
        services = self.services = self._prepare(db_url, pool, state_db, http)

        # Listen before talking to the homeserver: its ping calls us back.
        stack.push_async_callback(self._entrance.aclose)
        await self._listen(services)
        if cfg.metrics.enabled:
            metrics_server = metrics.serve(cfg.metrics.host, cfg.metrics.port)
            stack.callback(metrics_server.shutdown)

        await self._wait_for_homeserver(http)
        await self._check_homeserver(services.bot)
        stack.push_async_callback(self.background.stop)  # the roster's may start one
        await self._apply_roster(cfg)
        await self._ensure_devices(cfg)
        if self.crypto is not None:
            self.background.spawn(self.crypto.check_flags(), name="encryption flags")
        if services.publisher is not None:
            services.publisher.start()
            stack.push_async_callback(services.publisher.stop)
        self.background.spawn(
            maintenance.run_forever(
                pool,
                outbox_retention=cfg.nats.outbox_retention,
                crypto=self.crypto is not None,
                rooms_pruned=self.crypto.cache.forget_sessions if self.crypto else None,
            ),
            name="maintenance",
        )
        if self.crypto is not None:
            requests = KeyRequests(pool, self.crypto.machines)
            self.background.spawn(requests.run_forever(), name="room key requests")
        self.background.spawn(
            maintenance.sweep_sessions_forever(pool, cfg.bridge.agent_session_idle_after),
            name="session sweep",
        )
        catch_up, upgrades = services.catch_up, services.upgrades

        def homeserver_back(away: float) -> None:
            catch_up.schedule(f"the homeserver was away for {away:.0f} s")
            upgrades.resume()

        self.background.spawn(
            watch_homeserver(http, cfg.homeserver.address, homeserver_back),
            name="homeserver watch",
        )
        self.started = True
        freeze_long_lived_objects()
        log.info(
            "Bridge ready in %.1f s: listening on %s:%d as %s",
            time.monotonic() - t0,
            cfg.appservice.hostname,
            cfg.appservice.port,
            cfg.bot_mxid,
        )
        await self._ping(services.bot)
        services.catch_up.schedule("start")
        services.backfill.resume()
        services.upgrades.resume()

    async def stop(self) -> None:
        """Stop what start started; again, or before start, it does nothing."""
        self.started = False
        try:
            await self._entrance.aclose()
        finally:
            await self._stack.aclose()

    def _prepare(
        self, db_url: str, pool: asyncpg.Pool, state_db: Database, http: aiohttp.ClientSession
    ) -> Services:
        """Make the services on the open database, each given what it calls; nothing
        starts here."""
        cfg = self.config
        bot = Bot.connect(cfg, http, PgASStateStore(state_db))
        puppets = Puppets(bot.intent, pool)
        recovery = DatabaseRecovery(pool, bot)
        publisher = PublisherProcess(db_url, cfg.nats, cfg.logging) if cfg.nats.enabled else None
        crypto = self.crypto
        commands = CommandRunner(pool, bot, puppets, cfg, self.directory, publisher, crypto=crypto)

        def homeserver_reset(sign: str, skipped: Sequence[str]) -> None:
            catch_up.homeserver_sign(sign, skipped)  # made below, from the ingestor

        def follow_upgrades(tombstones: Sequence[RoomTombstoned]) -> None:
            upgrades.submit(tombstones)  # likewise

        def read_back_history(new_channels: Sequence[Channel]) -> None:
            backfill.submit(new_channels)  # likewise

        def follow_spaces(room_ids: Sequence[str]) -> None:
            spaces_follow.submit(room_ids)  # likewise

        invites = Invites(pool, bot, puppets, cfg, self.directory, crypto)
        woken = publisher.wake if publisher is not None else _nothing
        ingestor = Ingestor(
            pool,
            invites,
            self.directory,
            cfg,
            on_homeserver_reset=homeserver_reset,
            on_announced=woken,
            on_commands=commands.submit,
            on_upgrades=follow_upgrades,
            on_space_changes=follow_spaces,
            crypto=self.crypto,
            on_backfills=read_back_history,
        )
        catch_up = CatchUp(pool, bot, ingestor, cfg.bridge.catch_up_window)
        backfill = Backfill(pool, catch_up, cfg.bridge.backfill)
        upgrades = Upgrades(pool, bot, puppets, ingestor, cfg.bot_mxid)
        spaces_follow = SpacesFollow(pool, bot, invites, cfg, woken)
        web_api = AppserviceApi(
            cfg, ingestor, recovery.database_failed, self.is_ready, self.query_user
        )
        if cfg.api.service_token:

            async def index_event(txn_id: str, event: dict[str, Any]) -> None:
                await ingestor.handle_transaction(txn_id, [event])

            limiter = RateLimiter(cfg.api.agent_messages_per_hour)
            speaker = Speaker(pool, puppets, self.directory, limiter, index_event, crypto)
            reader = ContextReader(pool, puppets, self.directory, crypto)
            api = AgentsApi(cfg.api.service_token, speaker, reader, cfg.appservice.body_timeout)
            api.add_routes(web_api.app)
        if cfg.api.admin_token:
            admin = Admin(pool, bot, puppets, self.directory, cfg, ingestor)
            AdminApi(cfg.api.admin_token, admin, cfg.appservice.body_timeout).add_routes(
                web_api.app
            )
        return Services(
            pool,
            http,
            bot,
            puppets,
            recovery,
            ingestor,
            catch_up,
            backfill,
            upgrades,
            spaces_follow,
            commands,
            publisher,
            web_api.app,
        )

    async def _listen(self, services: Services) -> None:
        """The way in. What its requests set off stops after the listener: pushed first."""
        cfg = self.config
        entrance = self._entrance
        entrance.push_async_callback(services.commands.stop)
        entrance.push_async_callback(services.catch_up.stop)
        entrance.push_async_callback(services.backfill.stop)
        entrance.push_async_callback(services.upgrades.stop)
        entrance.push_async_callback(services.spaces_follow.stop)
        entrance.push_async_callback(services.recovery.stop)
        runner = web.AppRunner(services.app, access_log=None)
        await runner.setup()
        entrance.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, cfg.appservice.hostname, cfg.appservice.port)
        try:
            await site.start()
        except OSError as e:
            raise OperatorError(
                f"appservice.hostname/port {cfg.appservice.hostname}:{cfg.appservice.port}: "
                f"cannot listen ({e.strerror})"
            ) from None

    async def _database_url(self) -> str:
        if not self.config.database.embedded:
            return self.config.database.url
        embedded = EmbeddedPostgres(self.config.database.embedded_dir)
        self._stack.push_async_callback(embedded.stop)  # also after a start that failed
        return await embedded.start()

    async def _open_database(self, url: str) -> tuple[Database, Database]:
        cfg = self.config.database
        return await open_database(
            url,
            min_size=cfg.pool_min_size,
            max_size=cfg.pool_max_size,
            where="database.url embedded" if cfg.embedded else None,
        )

    async def _wait_for_homeserver(self, http: aiohttp.ClientSession) -> None:
        address = self.config.homeserver.address
        deadline = time.monotonic() + self.config.homeserver.connect_timeout
        while True:
            last = await homeserver_problem(http, address)
            if last is None:
                return
            if time.monotonic() >= deadline:
                raise OperatorError(
                    f"homeserver.address {redact_url(address)}: not reachable ({last})"
                )
            await asyncio.sleep(1)

    async def _check_homeserver(self, bot: Bot) -> None:
        try:
            await bot.setup_profile()
        except MatrixRequestError as e:
            if e.errcode in ("M_UNKNOWN_TOKEN", "M_FORBIDDEN", "M_MISSING_TOKEN"):
                raise OperatorError(
                    f"homeserver.address {self.config.homeserver.address} rejected "
                    f"appservice.as_token ({e.errcode}): is the registration loaded "
                    "(app_service_config_files) and up to date?"
                ) from None
            if e.errcode == "M_EXCLUSIVE":
                raise OperatorError(
                    f"homeserver refused the bot {self.config.bot_mxid} (M_EXCLUSIVE): another "
                    "appservice owns that namespace, or the registration is out of date"
                ) from None
            raise OperatorError(
                f"homeserver.address {self.config.homeserver.address}: "
                f"bot setup failed ({e.errcode}: {e.message})"
            ) from None

    async def _open_crypto(
        self, db_url: str, db: Database, http: aiohttp.ClientSession
    ) -> Crypto | None:
        encryption = self.config.bridge.encryption
        if not encryption.enabled:
            if encryption.allow:
                log.warning(
                    "Encryption is off: bridge.encryption.pickle_key is not set "
                    "(set it to generate and run -g)"
                )
            return None
        return await open_crypto(db_url, db, self.config, http)

    async def _ensure_devices(self, config: Config) -> None:
        """A device of its own for the bot and each agent (new ones after a reload)."""
        if self.crypto is not None:
            users = [config.bot_mxid] + [a.matrix_id for a in config.roster.agents]
            await self.crypto.ensure_devices(users)
            # Room keys a database outage left on disk (a restart since): stored now.
            await self.crypto.replay_spooled()

    async def _apply_roster(self, config: Config) -> None:
        services = self.services
        assert services is not None
        try:
            report = await apply_roster(
                services.pool, config.roster, services.bot, services.puppets, self.directory
            )
        except MatrixRequestError as e:
            raise OperatorError(
                f"homeserver refused setting up the agents ({e.errcode}: {e.message}); "
                "is the registration from -g loaded and the homeserver restarted?"
            ) from None
        if report.leaving:
            self.background.spawn(self._retire(services, report.leaving), name="retire puppets")

    async def _retire(self, services: Services, leaving: list[tuple[str, list[str]]]) -> None:
        try:
            await retire_puppets(services.pool, services.puppets, leaving)
        except Exception as e:  # the next reload or start tries again
            log.error("Removed agents could not leave their rooms: %s", e or type(e).__name__)

    async def query_user(self, user_id: str) -> bool:
        """The homeserver asks whether a user in our namespace exists: the bot and the
        configured agents do (their puppet is registered before the answer)."""
        if user_id == self.config.bot_mxid:
            return True
        agent = self.directory.current.agents.get(user_id)
        if agent is None or self.services is None:
            return False
        await self.services.puppets.ensure_profile(agent)
        return True

    def request_reload(self) -> None:
        """SIGHUP: apply the config's microDAOs, blueprints and agents without a restart."""
        if not self.started:
            log.warning("Reload asked before the bridge was ready; ignored")
            return
        if self.reloading is not None and not self.reloading.done():
            log.warning("A reload is already running; send SIGHUP again when it is done")
            return
        self.reloading = self.background.spawn(self.reload(), name="reload")

    async def reload(self) -> bool:
        try:
            # Off the event loop: a city's config is slow to parse, and transactions
            # keep coming meanwhile.
            new = await asyncio.to_thread(load_config, self.config.path)
            if self.registration_path is not None:
                check_registration(new, self.registration_path)
        except OperatorError as e:
            log.error("Config not reloaded: %s", e)
            return False
        unchanged = dataclasses.replace(new, roster=self.config.roster, logging=None)
        if unchanged != dataclasses.replace(self.config, logging=None):
            log.warning(
                "Reload applies microdaos, blueprints and agents only; "
                "restart the bridge for the changes to other sections"
            )
        try:
            await self._apply_roster(new)
        except Exception as e:
            log.error("Config reload failed: %s", e or type(e).__name__)
            return False
        self.config = dataclasses.replace(self.config, roster=new.roster)
        try:
            await self._ensure_devices(self.config)
        except Exception as e:  # the agents work; encryption for new ones at the next reload
            log.error("Devices of new agents not set up: %s", e or type(e).__name__)
        freeze_long_lived_objects()  # the new roster in, the old one collected
        return True

    async def _ping(self, bot: Bot) -> None:
        """Tells the admin at start whether the homeserver can reach us back. The bridge
        is ready by now: a homeserver gone meanwhile (restarting, say) is only logged,
        since it pushes its queued transactions when it is back."""
        try:
            await bot.ping()
            log.info("Homeserver reached the bridge at %s", self.config.appservice.address)
        except MatrixRequestError as e:
            log.warning(
                "Homeserver could not reach appservice.address %s (%s: %s)",
                self.config.appservice.address,
                e.errcode,
                e.message,
            )
        except (MatrixConnectionError, aiohttp.ClientError, OSError, TimeoutError) as e:
            log.warning(
                "Homeserver %s did not answer the start-up ping (%s); it pushes what it "
                "queued once it is back",
                self.config.homeserver.address,
                e or type(e).__name__,
            )
