"""The defaults of every key an admin may leave out, and the keys they may not.

The one place a default is written: the example config (`example.yaml`) and
docs/configuration.md are checked against it by tests/unit/test_config_docs.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# A token's value that asks `-g` to write a random one into the file.
GENERATE = "generate"
# The example config ships inside the package: the dev mode and Docker start from it.
EXAMPLE_CONFIG = Path(__file__).with_name("example.yaml")

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
        "max_room_members": 5000,
        "agent_session_idle_after": "30m",
        # null: the homeserver's own domain -> user (see parse.permissions)
        "permissions": None,
    },
    # A sub-section: `bridge.encryption.allow` in the file, under `bridge:`.
    "bridge.encryption": {
        "allow": True,
        "plaintext_previews": False,
        # None: no crypto store secrets can be kept, so encryption stays off.
        "pickle_key": None,
        # Where room keys wait while the database is down (relative to the config file).
        "spool_file": "./data/crypto-spool.jsonl",
    },
    # A subsection: its keys are bridge.backfill.<key> (a dotted section is a path).
    "bridge.backfill": {"max_messages": 1000, "max_age": "365d"},
    "metrics": {"enabled": False, "listen": "127.0.0.1:9333"},
    "nats": {
        "url": "",
        "stream": "DAARION",
        "subject_prefix": "",
        "duplicate_window": "2h",
        "outbox_retention": "7d",
        "invoke_agents": True,
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


def section_path(raw: dict[str, Any], section: str, create: bool = False) -> Any:
    """The mapping a section's keys are in: `bridge.backfill` is raw["bridge"]["backfill"].
    None when a level is missing (made, with `create`); a level that is no mapping is
    returned as it is, for the reader to refuse."""
    value: Any = raw
    for part in section.split("."):
        if not isinstance(value, dict):
            return value
        if part not in value or value[part] is None:
            if not create:
                return None
            value[part] = {}
        value = value[part]
    return value


def section_keys() -> list[tuple[str, str]]:
    """(section, key) of every key of the sections, defaulted or required."""
    return [
        (section, key)
        for section in DEFAULTS.keys() | REQUIRED.keys()
        for key in set(DEFAULTS.get(section, {})) | set(REQUIRED.get(section, ()))
    ]


def example_config_text() -> str:
    return EXAMPLE_CONFIG.read_text(encoding="utf-8")
