"""Configuration: defaults, validation and environment overrides.

The YAML keys are a contract with admins and deployment tools, so every key is
validated here and a mistake is reported as one line naming the file and the key.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from yarl import URL

from ..errors import ConfigError
from ..ids import ANY_USER_ID, DOMAIN, LOCALPART, MICRODAO_ID
from .roster import Roster, parse_roster

GENERATE = "generate"
# The example config ships inside the package: the dev mode and Docker start from it.
EXAMPLE_CONFIG = Path(__file__).with_name("example.yaml")
ENV_PREFIX = "DAARION_BRIDGE_"
DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# {name} with something around it: a bare {name} would claim every user on the server.
AGENT_TEMPLATE = re.compile(
    r"^(?:[a-z0-9._=/+-]+\{name\}[a-z0-9._=/+-]*|[a-z0-9._=/+-]*\{name\}[a-z0-9._=/+-]+)$"
)
# {slug} is required (two channels of a microDAO never share an alias); {microdao} optional.
CHANNEL_ALIAS = re.compile(r"^(?=.*\{slug\})(?:[a-z0-9._=/+-]|\{slug\}|\{microdao\})+$")
TOKEN_KEYS = (
    ("appservice", "as_token"),
    ("appservice", "hs_token"),
    ("api", "service_token"),
    ("api", "admin_token"),
)

# Defaults for keys an admin may leave out. Keys absent from here are required.
DEFAULTS: dict[str, dict[str, Any]] = {
    "homeserver": {"verify_ssl": True, "connect_timeout": 30},
    "appservice": {
        "hostname": "127.0.0.1",
        "port": 29333,
        "id": "daarion",
        "bot_username": "daarion",
        "bot_displayname": "DAARION",
        "ephemeral_events": True,
        "max_body_size": 20 * 1024 * 1024,
        "body_timeout": 30,
    },
    "database": {
        "url": "embedded",
        "embedded_dir": "./data/postgres",
        "pool_min_size": 1,
        "pool_max_size": 5,
    },
    "bridge": {
        "preview_length": 500,
        "default_microdao": None,
        "allow_federated_invites": False,
        "agent_localpart_template": "agent-{name}",
        "catch_up_window": 600,
        "agent_session_idle_after": "30m",
        # null: the homeserver's own domain -> user (see _permissions)
        "permissions": None,
    },
    "metrics": {"enabled": False, "listen": "127.0.0.1:9333"},
    "nats": {
        "url": "",
        "stream": "DAARION",
        "subject_prefix": "",
        "duplicate_window": "2h",
        "outbox_retention": "7d",
    },
    "api": {
        "service_token": None,
        "admin_token": None,
        "agent_messages_per_hour": 10,
        "channel_alias": "{slug}-{microdao}",
    },
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "homeserver": ("address", "domain"),
    "appservice": ("address", "as_token", "hs_token"),
}


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
class BridgeConfig:
    preview_length: int
    default_microdao: str | None
    allow_federated_invites: bool
    agent_localpart_template: str
    catch_up_window: float
    agent_session_idle_after: float
    # Who may use the bot's commands: Matrix id, domain or `*` -> `admin` | `user`.
    permissions: Mapping[str, str] = field(default_factory=dict)


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
    channel_alias: str = "{slug}-{microdao}"

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
    nats: NatsConfig = field(
        default_factory=lambda: NatsConfig("", "DAARION", "", 7200.0, 7 * 86400.0)
    )
    api: ApiConfig = field(default_factory=lambda: ApiConfig(None, None, 10))

    @property
    def bot_mxid(self) -> str:
        return f"@{self.appservice.bot_username}:{self.homeserver.domain}"


def round_trip_yaml() -> YAML:
    yaml = YAML()  # round-trip mode keeps comments when -g writes tokens back
    yaml.preserve_quotes = True
    # Keep `null` as written instead of an empty value.
    yaml.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return yaml


def read_yaml(path: Path, *, round_trip: bool = True) -> Any:
    """The file's YAML. Round trip keeps comments for writing it back; without, the C
    parser (ruamel.yaml.clib) reads a config with a thousand agents about six times
    faster, with the same YAML 1.2 values."""
    yaml = round_trip_yaml() if round_trip else YAML(typ="safe", pure=False)
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a config file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied reading the config file") from None
    except YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{where}: {problem}") from None
    except ValueError as e:  # a tag such as !!int on a value that is not one
        raise ConfigError(f"{path}: invalid value: {e}") from None


def write_yaml_atomic(path: Path, data: Any, mode: int | None = None) -> None:
    """Write via a temp file and rename so a crash never leaves half a config."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            round_trip_yaml().dump(data, fh)
        os.chmod(tmp, mode if mode is not None else _existing_mode(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _existing_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return 0o600


def _apply_env(path: Path, raw: dict[str, Any], environ: dict[str, str]) -> None:
    """DAARION_BRIDGE_<SECTION>_<KEY>=value overrides a key.

    Values of keys whose default is not a string (ports, flags, null) are parsed as YAML
    scalars; strings (URLs, tokens) are taken verbatim so nothing in them is reinterpreted.
    """
    for section in DEFAULTS.keys() | REQUIRED.keys():
        defaults = DEFAULTS.get(section, {})
        for key in set(defaults) | set(REQUIRED.get(section, ())):
            value = environ.get(f"{ENV_PREFIX}{section}_{key}".upper())
            if value is None:
                continue
            default = defaults.get(key, "")
            name = f"{ENV_PREFIX}{section}_{key}".upper()
            try:
                parsed = value if isinstance(default, str) else YAML(typ="safe").load(value)
            except (YAMLError, ValueError):
                raise ConfigError(f"{path}: environment {name} is not a valid value") from None
            section_map = raw.get(section)
            if not isinstance(section_map, dict):
                raw[section] = section_map = {}
            section_map[key] = parsed


class _Reader:
    """Typed access to one section, with errors that name file and key."""

    def __init__(self, path: Path, raw: dict[str, Any], section: str) -> None:
        self.path = path
        self.section = section
        value = raw.get(section)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.fail(None, "must be a mapping")
        self.values = {**DEFAULTS.get(section, {}), **value}
        for key in REQUIRED.get(section, ()):
            if self.values.get(key) in (None, ""):
                self.fail(key, "is required")

    def fail(self, key: str | None, problem: str) -> None:
        name = f"{self.section}.{key}" if key else self.section
        raise ConfigError(f"{self.path}: {name} {problem}")

    def str(self, key: str, pattern: re.Pattern[str] | None = None, optional: bool = False) -> Any:
        value = self.values.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            self.fail(key, "must be a non-empty string")
        if pattern is not None and not pattern.fullmatch(value):
            self.fail(key, f"must match {pattern.pattern}, got {value!r}")
        return value

    def url(self, key: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
        value = self.str(key)
        try:
            url = URL(value)
            web = url.scheme in ("http", "https")
            valid = url.scheme in schemes and (bool(url.host) or not web)
            url.port  # noqa: B018  (parses the port: out of range raises)
        except ValueError:
            valid = False
        if not valid:
            self.fail(key, f"must be a {' or '.join(schemes)} URL, got {value!r}")
        return value.rstrip("/")

    def bool(self, key: str) -> bool:
        value = self.values.get(key)
        if not isinstance(value, bool):
            self.fail(key, "must be true or false")
        return value

    def int(self, key: str, low: int, high: int) -> int:
        value = self.values.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(key, f"must be an integer from {low} to {high}")
        return value

    def number(self, key: str, low: float, high: float) -> float:
        value = self.values.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, "must be a number")
        if not low <= value <= high:
            self.fail(key, f"must be from {low} to {high}")
        return float(value)

    def duration(self, key: str, low: float, high: float) -> float:
        """Seconds, from a number or a string such as `30m`, `1h30m`, `45s`, `1d`."""
        value = self.values.get(key)
        if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
            value = float(value)  # from the environment, where every value is a string
        if isinstance(value, str):
            text = value.replace(" ", "")
            parts = DURATION.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                self.fail(key, f"must be a duration such as 30s, 30m or 2h, got {value!r}")
            value = sum(float(n) * UNIT_SECONDS[u] for n, u in parts)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, "must be a duration such as 30s, 30m or 2h")
        if not low <= value <= high:
            self.fail(key, f"must be from {low:g} s to {high:g} s")
        return float(value)


ADMIN_LEVEL, USER_LEVEL = "admin", "user"
PERMISSION_LEVELS = (ADMIN_LEVEL, USER_LEVEL)


def _permissions(b: _Reader, domain: str) -> dict[str, str]:
    """bridge.permissions: Matrix id, domain or `*` -> admin | user. Left out (null): the
    homeserver's own domain may use the user commands and nobody is admin. `{}`: nobody
    may use the commands."""
    value = b.values.get("permissions")
    if value is None:
        return {domain.lower(): "user"}
    if not isinstance(value, dict):
        b.fail("permissions", "must be a mapping of Matrix id, domain or * to admin or user")
    found: dict[str, str] = {}
    for key, level in value.items():
        if not isinstance(key, str) or not (
            key == "*" or ANY_USER_ID.fullmatch(key) or DOMAIN.fullmatch(key)
        ):
            b.fail("permissions", f"key {key!r} must be a Matrix id (@user:server), a domain or *")
        if level not in PERMISSION_LEVELS:
            b.fail(f"permissions[{key!r}]", f"must be admin or user, got {level!r}")
        found[key if key.startswith("@") else key.lower()] = level
    return found


def parse_config(path: Path, raw: Any, environ: dict[str, str] | None = None) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a YAML mapping of sections")
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    _apply_env(path, raw, dict(os.environ) if environ is None else environ)

    hs = _Reader(path, raw, "homeserver")
    homeserver = HomeserverConfig(
        address=hs.url("address"),
        domain=hs.str("domain", DOMAIN),
        verify_ssl=hs.bool("verify_ssl"),
        connect_timeout=hs.number("connect_timeout", 0, 3600),
    )
    a = _Reader(path, raw, "appservice")
    appservice = AppserviceConfig(
        address=a.url("address"),
        hostname=a.str("hostname"),
        port=a.int("port", 1, 65535),
        id=a.str("id", re.compile(r"^[A-Za-z0-9_.-]+$")),
        bot_username=a.str("bot_username", LOCALPART),
        bot_displayname=a.str("bot_displayname"),
        as_token=a.str("as_token"),
        hs_token=a.str("hs_token"),
        ephemeral_events=a.bool("ephemeral_events"),
        max_body_size=a.int("max_body_size", 1024, 1 << 30),
        body_timeout=a.number("body_timeout", 0.1, 3600),
    )
    if appservice.as_token == appservice.hs_token and appservice.as_token != GENERATE:
        a.fail("hs_token", "must differ from appservice.as_token")
    d = _Reader(path, raw, "database")
    db_url = d.str("url")
    if db_url != "embedded":
        db_url = d.url("url", ("postgresql", "postgres"))
    pool_min = d.int("pool_min_size", 1, 100)
    database = DatabaseConfig(
        url=db_url,
        embedded_dir=(path.parent / d.str("embedded_dir")).resolve(),
        pool_min_size=pool_min,
        pool_max_size=d.int("pool_max_size", pool_min, 200),
    )
    b = _Reader(path, raw, "bridge")
    bridge = BridgeConfig(
        preview_length=b.int("preview_length", 1, 10000),
        default_microdao=b.str("default_microdao", MICRODAO_ID, optional=True),
        allow_federated_invites=b.bool("allow_federated_invites"),
        agent_localpart_template=b.str("agent_localpart_template", AGENT_TEMPLATE),
        catch_up_window=b.number("catch_up_window", 0, 7 * 24 * 3600),
        agent_session_idle_after=b.duration("agent_session_idle_after", 1, 365 * 86400),
        permissions=_permissions(b, homeserver.domain),
    )
    m = _Reader(path, raw, "metrics")
    host, _, port = m.str("listen").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        m.fail("listen", f"must be host:port, got {m.values['listen']!r}")
    metrics = MetricsConfig(enabled=m.bool("enabled"), host=host.strip("[]"), port=int(port))
    n = _Reader(path, raw, "nats")
    nats_url = n.values.get("url") or ""
    if nats_url:
        nats_url = n.url("url", ("nats", "tls", "ws", "wss"))
    nats = NatsConfig(
        url=nats_url,
        stream=n.str("stream", re.compile(r"^[A-Za-z0-9_-]+$")),
        subject_prefix=n.str("subject_prefix", re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.$"))
        if n.values.get("subject_prefix")
        else "",
        duplicate_window=n.duration("duplicate_window", 1, 30 * 86400),
        outbox_retention=n.duration("outbox_retention", 60, 365 * 86400),
    )
    api_reader = _Reader(path, raw, "api")
    api = ApiConfig(
        service_token=api_reader.str("service_token", optional=True),
        admin_token=api_reader.str("admin_token", optional=True),
        agent_messages_per_hour=api_reader.int("agent_messages_per_hour", 1, 1_000_000),
        channel_alias=api_reader.str("channel_alias"),
    )
    if not CHANNEL_ALIAS.fullmatch(api.channel_alias):
        api_reader.fail(
            "channel_alias",
            "must hold {slug}, may hold {microdao}, and otherwise only a-z 0-9 . _ = / + -, "
            f"got {api.channel_alias!r}",
        )
    log_config = raw.get("logging")
    if log_config is not None and not isinstance(log_config, dict):
        raise ConfigError(f"{path}: logging must be a logging.dictConfig mapping")
    roster = parse_roster(
        path,
        raw,
        domain=homeserver.domain,
        template=bridge.agent_localpart_template,
        bot_localpart=appservice.bot_username,
    )
    return Config(
        path, homeserver, appservice, database, bridge, metrics, log_config, roster, nats, api
    )


def example_config_text() -> str:
    return EXAMPLE_CONFIG.read_text(encoding="utf-8")


def load_config(path: Path, environ: dict[str, str] | None = None) -> Config:
    return parse_config(path, read_yaml(path, round_trip=False), environ)


def generate_tokens(path: Path) -> bool:
    """Replace `generate` tokens with random ones in the file itself, comments kept.

    Returns True when the file changed.
    """
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a YAML mapping of sections")
    changed = False
    for section, key in TOKEN_KEYS:
        values = raw.get(section)
        if isinstance(values, dict) and values.get(key) == GENERATE:
            values[key] = secrets.token_urlsafe(48)
            changed = True
    if changed:
        # The file now holds secrets: never leave it readable by others.
        write_yaml_atomic(path, raw, mode=_existing_mode(path) & 0o770)
    return changed
