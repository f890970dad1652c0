"""The validating parse of a config file: environment overrides, then every section.

The YAML keys are a contract with admins and deployment tools, so every key is
validated here and a mistake is reported as one line naming the file and the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from ..errors import ConfigError
from ..ids import ANY_USER_ID, DOMAIN, LOCALPART, MICRODAO_ID
from .defaults import DEFAULTS, section_keys, section_path
from .model import (
    PERMISSION_LEVELS,
    ApiConfig,
    AppserviceConfig,
    BackfillConfig,
    BridgeConfig,
    Config,
    DatabaseConfig,
    EncryptionConfig,
    HomeserverConfig,
    MetricsConfig,
    NatsConfig,
)
from .reader import SectionReader
from .roster import parse_roster
from .tokens import token_problem
from .yaml_io import read_yaml

ENV_PREFIX = "DAARION_BRIDGE_"
# {name} with something around it: a bare {name} would claim every user on the server.
AGENT_TEMPLATE = re.compile(
    r"^(?:[a-z0-9._=/+-]+\{name\}[a-z0-9._=/+-]*|[a-z0-9._=/+-]*\{name\}[a-z0-9._=/+-]+)$"
)
# {slug} is required (two channels of a microDAO never share an alias); {microdao} optional.
CHANNEL_ALIAS = re.compile(r"^(?=.*\{slug\})(?:[a-z0-9._=/+-]|\{slug\}|\{microdao\})+$")
APPSERVICE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
NATS_STREAM = re.compile(r"^[A-Za-z0-9_-]+$")
NATS_SUBJECT_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.$")


def env_name(section: str, key: str) -> str:
    """The environment variable that overrides `section.key`."""
    return f"{ENV_PREFIX}{section}_{key}".upper().replace(".", "_")


def apply_env(path: Path, raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """DAARION_BRIDGE_<SECTION>_<KEY>=value overrides a key.

    Values of keys whose default is not a string (ports, flags, null) are parsed as YAML
    scalars; strings (URLs, tokens) are taken verbatim so nothing in them is reinterpreted.
    """
    for section, key in section_keys():
        name = env_name(section, key)
        value = environ.get(name)
        if value is None:
            continue
        default = DEFAULTS.get(section, {}).get(key, "")
        try:
            parsed = value if isinstance(default, str) else YAML(typ="safe").load(value)
        except (YAMLError, ValueError):
            raise ConfigError(f"{path}: environment {name} is not a valid value") from None
        section_map = section_path(raw, section, create=True)
        if not isinstance(section_map, dict):
            raise ConfigError(f"{path}: {section} must be a mapping")
        section_map[key] = parsed


def encryption(e: SectionReader) -> EncryptionConfig:
    return EncryptionConfig(
        allow=e.bool("allow"),
        plaintext_previews=e.bool("plaintext_previews"),
        pickle_key=e.text("pickle_key", optional=True),
        spool_file=(e.path.parent / e.text("spool_file")).resolve(),
    )


def permissions(b: SectionReader, domain: str) -> dict[str, str]:
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


def _copied(raw: dict[str, Any]) -> dict[str, Any]:
    """The sections and subsections copied: environment overrides go into the copy."""
    return {k: (_copied(v) if isinstance(v, dict) else v) for k, v in raw.items()}


def backfill_config(r: SectionReader) -> BackfillConfig:
    return BackfillConfig(
        max_messages=r.int("max_messages", 0, 100_000),
        max_age=r.duration("max_age", 60, 3650 * 86400),
    )


def parse_config(path: Path, raw: Any, environ: dict[str, str] | None = None) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a YAML mapping of sections")
    raw = _copied(raw)
    apply_env(path, raw, dict(os.environ) if environ is None else environ)

    hs = SectionReader(path, raw, "homeserver")
    homeserver = HomeserverConfig(
        address=hs.url("address"),
        domain=hs.text("domain", DOMAIN),
        verify_ssl=hs.bool("verify_ssl"),
        connect_timeout=hs.number("connect_timeout", 0, 3600),
    )
    a = SectionReader(path, raw, "appservice")
    appservice = AppserviceConfig(
        address=a.url("address"),
        hostname=a.text("hostname"),
        port=a.int("port", 1, 65535),
        id=a.text("id", APPSERVICE_ID),
        bot_username=a.text("bot_username", LOCALPART),
        bot_displayname=a.text("bot_displayname"),
        as_token=a.text("as_token"),
        hs_token=a.text("hs_token"),
        ephemeral_events=a.bool("ephemeral_events"),
        max_body_size=a.int("max_body_size", 1024, 1 << 30),
        body_timeout=a.number("body_timeout", 0.1, 3600),
    )
    d = SectionReader(path, raw, "database")
    db_url = d.text("url")
    if db_url != "embedded":
        db_url = d.url("url", ("postgresql", "postgres"))
    pool_min = d.int("pool_min_size", 1, 100)
    database = DatabaseConfig(
        url=db_url,
        embedded_dir=(path.parent / d.text("embedded_dir")).resolve(),
        pool_min_size=pool_min,
        pool_max_size=d.int("pool_max_size", pool_min, 200),
    )
    b = SectionReader(path, raw, "bridge")
    bridge = BridgeConfig(
        preview_length=b.int("preview_length", 1, 10000),
        default_microdao=b.text("default_microdao", MICRODAO_ID, optional=True),
        allow_federated_invites=b.bool("allow_federated_invites"),
        agent_localpart_template=b.text("agent_localpart_template", AGENT_TEMPLATE),
        catch_up_window=b.number("catch_up_window", 0, 7 * 24 * 3600),
        agent_session_idle_after=b.duration("agent_session_idle_after", 1, 365 * 86400),
        max_room_members=b.int("max_room_members", 0, 10_000_000),
        permissions=permissions(b, homeserver.domain),
        encryption=encryption(SectionReader(path, raw, "bridge.encryption")),
        backfill=backfill_config(SectionReader(path, raw, "bridge.backfill")),
    )
    m = SectionReader(path, raw, "metrics")
    host, _, port = m.text("listen").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        m.fail("listen", f"must be host:port, got {m.values['listen']!r}")
    metrics = MetricsConfig(enabled=m.bool("enabled"), host=host.strip("[]"), port=int(port))
    n = SectionReader(path, raw, "nats")
    nats_url = n.values.get("url") or ""
    if nats_url:
        nats_url = n.url("url", ("nats", "tls", "ws", "wss"))
    nats = NatsConfig(
        url=nats_url,
        stream=n.text("stream", NATS_STREAM),
        subject_prefix=n.text("subject_prefix", NATS_SUBJECT_PREFIX)
        if n.values.get("subject_prefix")
        else "",
        duplicate_window=n.duration("duplicate_window", 1, 30 * 86400),
        outbox_retention=n.duration("outbox_retention", 60, 365 * 86400),
        invoke_agents=n.bool("invoke_agents"),
    )
    api_reader = SectionReader(path, raw, "api")
    api = ApiConfig(
        service_token=api_reader.text("service_token", optional=True),
        admin_token=api_reader.text("admin_token", optional=True),
        agent_messages_per_hour=api_reader.int("agent_messages_per_hour", 1, 1_000_000),
        channel_alias=api_reader.text("channel_alias"),
    )
    if not CHANNEL_ALIAS.fullmatch(api.channel_alias):
        api_reader.fail(
            "channel_alias",
            "must hold {slug}, may hold {microdao}, and otherwise only a-z 0-9 . _ = / + -, "
            f"got {api.channel_alias!r}",
        )
    weak = token_problem(
        {
            "appservice.as_token": appservice.as_token,
            "appservice.hs_token": appservice.hs_token,
            "api.service_token": api.service_token,
            "api.admin_token": api.admin_token,
            "bridge.encryption.pickle_key": bridge.encryption.pickle_key,
        }
    )
    if weak is not None:
        raise ConfigError(f"{path}: {weak[0]} {weak[1]}")
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


def load_config(path: Path, environ: dict[str, str] | None = None) -> Config:
    return parse_config(path, read_yaml(path, round_trip=False), environ)
