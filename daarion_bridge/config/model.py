"""The parsed config: frozen dataclasses, one per section, built by parse.parse_config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .defaults import DEFAULTS, GENERATE
from .roster import Roster

ADMIN_LEVEL, USER_LEVEL = "admin", "user"
PERMISSION_LEVELS = (ADMIN_LEVEL, USER_LEVEL)


@dataclass(frozen=True)
class HomeserverConfig:
    address: str
    domain: str
    verify_ssl: bool
    connect_timeout: float


@dataclass(frozen=True)
class AppserviceConfig:
    address: str
    hostname: str
    port: int
    id: str
    bot_username: str
    bot_displayname: str
    as_token: str
    hs_token: str
    ephemeral_events: bool
    max_body_size: int
    body_timeout: float

    @property
    def tokens_generated(self) -> bool:
        return GENERATE not in (self.as_token, self.hs_token)


@dataclass(frozen=True)
class DatabaseConfig:
    url: str
    embedded_dir: Path
    pool_min_size: int
    pool_max_size: int

    @property
    def embedded(self) -> bool:
        return self.url == "embedded"


@dataclass(frozen=True)
class EncryptionConfig:
    allow: bool = DEFAULTS["bridge.encryption"]["allow"]
    # False: the index and NATS keep `[encrypted]` for encrypted rooms' messages.
    plaintext_previews: bool = DEFAULTS["bridge.encryption"]["plaintext_previews"]
    # Encrypts the crypto store's secrets at rest; None: encryption cannot be on.
    pickle_key: str | None = DEFAULTS["bridge.encryption"]["pickle_key"]
    # Room keys that came while the database was down, kept until it is back.
    spool_file: Path = Path(DEFAULTS["bridge.encryption"]["spool_file"])

    @property
    def enabled(self) -> bool:
        return self.allow and self.pickle_key not in (None, GENERATE)


@dataclass(frozen=True)
class BackfillConfig:
    """bridge.backfill: the earlier history a room brings when it becomes a channel."""

    max_messages: int = DEFAULTS["bridge.backfill"]["max_messages"]  # 0: off
    max_age: float = 365 * 86400.0  # seconds before the bot's join

    @property
    def enabled(self) -> bool:
        return self.max_messages > 0


@dataclass(frozen=True)
class BridgeConfig:
    preview_length: int
    default_microdao: str | None
    allow_federated_invites: bool
    agent_localpart_template: str
    catch_up_window: float
    agent_session_idle_after: float
    # A room with more joined members is not bridged (0: no limit).
    max_room_members: int = 5000
    # Who may use the bot's commands: Matrix id, domain or `*` -> `admin` | `user`.
    permissions: Mapping[str, str] = field(default_factory=dict)
    encryption: EncryptionConfig = field(default_factory=EncryptionConfig)
    backfill: BackfillConfig = field(default_factory=BackfillConfig)


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool
    host: str
    port: int


@dataclass(frozen=True)
class NatsConfig:
    url: str  # empty: no events are published (and no outbox rows written)
    stream: str
    subject_prefix: str
    duplicate_window: float
    outbox_retention: float
    # False: never publish router.invoke.agent, for a platform whose own agent-filter and
    # router invoke agents from messaging.message.created (else every mention is
    # answered twice). Sessions and activity are kept either way.
    invoke_agents: bool = True

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def subject(self, name: str) -> str:
        return f"{self.subject_prefix}{name}"


@dataclass(frozen=True)
class ApiConfig:
    service_token: str | None  # None: the agent post endpoint is off
    admin_token: str | None  # None: the admin API is off
    agent_messages_per_hour: int
    # Localpart of the alias of rooms the admin API creates: {slug}, {microdao} (the
    # part of the microDAO's platform id after `microdao:`).
    channel_alias: str = DEFAULTS["api"]["channel_alias"]

    def alias_localpart(self, slug: str, microdao_external_id: str) -> str:
        name = microdao_external_id.split(":", 1)[-1]
        return self.channel_alias.replace("{slug}", slug).replace("{microdao}", name)


@dataclass(frozen=True)
class Config:
    path: Path
    homeserver: HomeserverConfig
    appservice: AppserviceConfig
    database: DatabaseConfig
    bridge: BridgeConfig
    metrics: MetricsConfig
    logging: dict[str, Any] | None = field(default=None, compare=False)
    roster: Roster = field(default_factory=Roster)
    # The fallbacks of a Config built in code; test_config_docs checks they are what
    # parse_config makes of DEFAULTS.
    nats: NatsConfig = field(
        default_factory=lambda: NatsConfig("", "DAARION", "", 7200.0, 7 * 86400.0)
    )
    api: ApiConfig = field(default_factory=lambda: ApiConfig(None, None, 10))

    @property
    def bot_mxid(self) -> str:
        return f"@{self.appservice.bot_username}:{self.homeserver.domain}"
