"""The bridge process: start-up order, readiness and shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from mautrix.appservice.state_store.asyncpg import PgASStateStore
from mautrix.errors import MatrixConnectionError, MatrixRequestError
from mautrix.util.async_db import Database

from . import metrics
from .admin.service import Admin
from .agents.speak import RateLimiter, Speaker
from .agents.sync import apply_roster, retire_puppets
from .bus.process import PublisherProcess
from .commands.run import CommandRunner
from .config import Config, load_config
from .db import maintenance
from .db.database import open_database
from .db.embedded import EmbeddedPostgres
from .errors import OperatorError
from .ingest.catchup import CatchUp
from .ingest.ingestor import Ingestor
from .ingest.invites import Invites
from .ingest.recovery import DatabaseRecovery
from .matrix.bot import Bot
from .matrix.puppets import Puppets
from .matrix.registration import check_registration
from .process import freeze_long_lived_objects
from .translate.agents import LiveDirectory
from .web.admin_api import AdminApi
from .web.agents_api import AgentsApi
from .web.appservice import AppserviceApi

log = logging.getLogger("daarion.bridge")


class Bridge:
    def __init__(self, config: Config, registration_path: Path | None = None) -> None:
        self.config = config
        self.registration_path = registration_path
        self.directory = LiveDirectory(config.roster)
        self.pool: asyncpg.Pool | None = None
        self.bot: Bot | None = None
        self.puppets: Puppets | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.reloading: asyncio.Task[None] | None = None
        self.publisher: PublisherProcess | None = None
        self.retiring: list[asyncio.Task[None]] = []
        self.embedded: EmbeddedPostgres | None = None
        self.db: Database | None = None
        self.state_db: Database | None = None
        self.http: aiohttp.ClientSession | None = None
        self.runner: web.AppRunner | None = None
        self.recovery: DatabaseRecovery | None = None
        self.metrics_server: Any = None
        self.catch_up: CatchUp | None = None
        self.commands: CommandRunner | None = None
        self.started = False

    def is_ready(self) -> bool:
        return self.started and not (self.recovery and self.recovery.recovering)

    async def start(self) -> None:
        t0 = time.monotonic()
        db_url = await self._database_url()
        await self._start_database(db_url)
        assert self.db is not None
        pool: asyncpg.Pool = self.db.pool  # type: ignore[attr-defined]
        self.pool = pool

        cfg = self.config
        connector = aiohttp.TCPConnector(
            limit=100, ssl=None if cfg.homeserver.verify_ssl else False
        )
        self.http = aiohttp.ClientSession(connector=connector)
        bot = self.bot = Bot.connect(cfg, self.http, PgASStateStore(self.state_db))
        self.puppets = Puppets(bot.intent, pool)
        self.recovery = DatabaseRecovery(pool, bot)
        invites = Invites(pool, bot, self.puppets, cfg, self.directory)
        ingestor = Ingestor(pool, invites, self.directory, cfg)
        self.catch_up = CatchUp(pool, bot, ingestor, cfg.bridge.catch_up_window)
        ingestor.on_homeserver_reset = lambda: self.catch_up.schedule("signs of dropped events")
        if cfg.nats.enabled:
            self.publisher = PublisherProcess(db_url, cfg.nats, cfg.logging)
            ingestor.on_announced = self.publisher.wake
        self.commands = CommandRunner(pool, bot, self.puppets, cfg, self.directory, self.publisher)
        ingestor.on_commands = self.commands.submit
        web_api = AppserviceApi(
            cfg, ingestor, self.recovery.database_failed, self.is_ready, self.query_user
        )
        if cfg.api.service_token:

            async def index_event(txn_id: str, event: dict[str, Any]) -> None:
                await ingestor.handle_transaction(txn_id, [event])

            limiter = RateLimiter(cfg.api.agent_messages_per_hour)
            speaker = Speaker(pool, self.puppets, self.directory, limiter, index_event)
            api = AgentsApi(cfg.api.service_token, speaker, cfg.appservice.body_timeout)
            api.add_routes(web_api.app)
        if cfg.api.admin_token:
            admin = Admin(pool, bot, self.puppets, self.directory, cfg, ingestor)
            AdminApi(cfg.api.admin_token, admin).add_routes(web_api.app)

        # Listen before talking to the homeserver: its ping calls us back.
        self.runner = web.AppRunner(web_api.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, cfg.appservice.hostname, cfg.appservice.port)
        try:
            await site.start()
        except OSError as e:
            raise OperatorError(
                f"appservice.hostname/port {cfg.appservice.hostname}:{cfg.appservice.port}: "
                f"cannot listen ({e.strerror})"
            ) from None
        if cfg.metrics.enabled:
            self.metrics_server = metrics.serve(cfg.metrics.host, cfg.metrics.port)

        await self._wait_for_homeserver()
        await self._check_homeserver(bot)
        await self._apply_roster(cfg)
        if self.publisher is not None:
            self.publisher.start()
        self.tasks = [
            asyncio.create_task(
                maintenance.run_forever(pool, outbox_retention=cfg.nats.outbox_retention),
                name="maintenance",
            ),
            asyncio.create_task(
                maintenance.sweep_sessions_forever(pool, cfg.bridge.agent_session_idle_after),
                name="session sweep",
            ),
        ]
        self.started = True
        freeze_long_lived_objects()
        log.info(
            "Bridge ready in %.1f s: listening on %s:%d as %s",
            time.monotonic() - t0,
            cfg.appservice.hostname,
            cfg.appservice.port,
            cfg.bot_mxid,
        )
        await self._ping(bot)
        self.catch_up.schedule("start")

    async def _database_url(self) -> str:
        if not self.config.database.embedded:
            return self.config.database.url
        self.embedded = EmbeddedPostgres(self.config.database.embedded_dir)
        return await self.embedded.start()

    async def _start_database(self, url: str) -> None:
        cfg = self.config.database
        self.db, self.state_db = await open_database(
            url,
            min_size=cfg.pool_min_size,
            max_size=cfg.pool_max_size,
            where="database.url embedded" if cfg.embedded else None,
        )

    async def _wait_for_homeserver(self) -> None:
        assert self.http is not None
        address = self.config.homeserver.address
        deadline = time.monotonic() + self.config.homeserver.connect_timeout
        last = ""
        while True:
            try:
                async with self.http.get(f"{address}/_matrix/client/versions") as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                last = str(e) or type(e).__name__
            if time.monotonic() >= deadline:
                raise OperatorError(f"homeserver.address {address}: not reachable ({last})")
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

    async def _apply_roster(self, config: Config) -> None:
        assert self.pool is not None and self.bot is not None and self.puppets is not None
        try:
            report = await apply_roster(
                self.pool, config.roster, self.bot, self.puppets, self.directory
            )
        except MatrixRequestError as e:
            raise OperatorError(
                f"homeserver refused setting up the agents ({e.errcode}: {e.message}); "
                "is the registration from -g loaded and the homeserver restarted?"
            ) from None
        if report.leaving:
            task = asyncio.create_task(self._retire(report.leaving), name="retire puppets")
            self.retiring.append(task)
            task.add_done_callback(self.retiring.remove)

    async def _retire(self, leaving: list[tuple[str, list[str]]]) -> None:
        assert self.pool is not None and self.puppets is not None
        try:
            await retire_puppets(self.pool, self.puppets, leaving)
        except Exception as e:  # the next reload or start tries again
            log.error("Removed agents could not leave their rooms: %s", e or type(e).__name__)

    async def query_user(self, user_id: str) -> bool:
        """The homeserver asks whether a user in our namespace exists: the bot and the
        configured agents do (their puppet is registered before the answer)."""
        if user_id == self.config.bot_mxid:
            return True
        agent = self.directory.current.agents.get(user_id)
        if agent is None or self.puppets is None:
            return False
        await self.puppets.ensure_profile(agent)
        return True

    def request_reload(self) -> None:
        """SIGHUP: apply the config's microDAOs, blueprints and agents without a restart."""
        if not self.started:
            log.warning("Reload asked before the bridge was ready; ignored")
            return
        if self.reloading is not None and not self.reloading.done():
            log.warning("A reload is already running; send SIGHUP again when it is done")
            return
        self.reloading = asyncio.create_task(self.reload(), name="reload")

    async def reload(self) -> bool:
        try:
            # Off the event loop: a city's config takes a tenth of a second to parse,
            # and transactions keep coming meanwhile.
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

    async def stop(self) -> None:
        self.started = False
        if self.runner is not None:
            await self.runner.cleanup()
        if self.recovery is not None:
            await self.recovery.stop()
        if self.catch_up is not None:
            await self.catch_up.stop()
        if self.commands is not None:
            await self.commands.stop()
        if self.publisher is not None:
            await self.publisher.stop()
        for task in [*self.tasks, *self.retiring, self.reloading]:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        if self.http is not None:
            await self.http.close()
        if self.db is not None:
            await self.db.stop()
        if self.embedded is not None:
            await self.embedded.stop()
