"""The appservice registration the homeserver loads, generated from the config."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..config import Config, read_yaml, write_yaml_atomic
from ..errors import ConfigError
from ..ids import LOCALPART_CHARS

# Tokens in the registration committed to the repository: a homeserver must never load it.
PLACEHOLDER_TOKEN = "PLACEHOLDER-do-not-load-run-daarion-bridge-g"


def user_namespace_regexes(config: Config) -> list[str]:
    """Exclusive regexes for the bot and agent puppets, pinned to our server at the end.

    Synapse matches from the start of the id only, so `$` is what stops
    `@daarion:localhost.evil.example` from matching. Agents whose `localpart` falls
    outside the template get one entry each.
    """
    domain = re.escape(config.homeserver.domain)
    bot = re.escape(config.appservice.bot_username)
    agent_prefix, _, agent_suffix = config.bridge.agent_localpart_template.partition("{name}")
    agents = f"{re.escape(agent_prefix)}{LOCALPART_CHARS}+{re.escape(agent_suffix)}"
    regexes = [f"^@{bot}:{domain}$", f"^@{agents}:{domain}$"]
    for agent in config.roster.agents:
        if not any(re.match(r, agent.matrix_id) for r in regexes):
            regexes.append(f"^@{re.escape(agent.localpart)}:{domain}$")
    return regexes


def alias_namespace_regexes(config: Config) -> list[str]:
    """The aliases of rooms the admin API creates (api.channel_alias), when it is on.

    Synapse lets an appservice create only aliases its registration reserves. The entry
    is not exclusive: people may still create such aliases. Synapse also pushes the
    events of any room with a matching alias; the bridge ignores rooms that are not
    channels."""
    if not config.api.admin_token:
        return []
    domain = re.escape(config.homeserver.domain)
    parts = re.split(r"(\{slug\}|\{microdao\})", config.api.channel_alias)
    body = "".join("[a-z0-9-]+" if p in ("{slug}", "{microdao}") else re.escape(p) for p in parts)
    return [f"^#{body}:{domain}$"]


def uncovered_users(config: Config, registration: Any) -> list[str]:
    """The bot and agents no exclusive users regex of this registration matches."""
    namespaces = registration.get("namespaces") if isinstance(registration, dict) else None
    entries = namespaces.get("users") if isinstance(namespaces, dict) else None
    patterns = []
    for entry in entries if isinstance(entries, list) else []:
        if (
            isinstance(entry, dict)
            and entry.get("exclusive")
            and isinstance(entry.get("regex"), str)
        ):
            try:
                patterns.append(re.compile(entry["regex"]))
            except re.error:
                continue
    wanted = [(f"the bot {config.bot_mxid}", config.bot_mxid)] + [
        (f"agent {a.external_id} ({a.matrix_id})", a.matrix_id) for a in config.roster.agents
    ]
    return [label for label, mxid in wanted if not any(p.match(mxid) for p in patterns)]


def build_registration(config: Config) -> dict[str, Any]:
    a = config.appservice
    encryption = config.bridge.encryption.allow
    # To-device messages (room keys) come with the ephemeral events (MSC2409).
    ephemeral = a.ephemeral_events or encryption
    registration: dict[str, Any] = {
        "id": a.id,
        "url": a.address,
        "as_token": a.as_token,
        "hs_token": a.hs_token,
        "sender_localpart": a.bot_username,
        "namespaces": {
            "users": [
                {"exclusive": True, "regex": regex} for regex in user_namespace_regexes(config)
            ],
            "aliases": [
                {"exclusive": False, "regex": regex} for regex in alias_namespace_regexes(config)
            ],
            "rooms": [],
        },
        # Synapse throttles puppets when this key is missing.
        "rate_limited": False,
        "receive_ephemeral": ephemeral,
        "de.sorunome.msc2409.push_ephemeral": ephemeral,
    }
    if encryption:
        # MSC3202: one-time-key counts, fallback keys and device-list changes of the
        # puppets' devices come in transactions (an appservice user cannot /sync).
        registration["org.matrix.msc3202"] = True
    return registration


def write_registration(config: Config, path: Path) -> dict[str, Any]:
    registration = build_registration(config)
    write_yaml_atomic(path, registration, mode=0o600)
    return registration


def check_registration(config: Config, path: Path) -> list[str]:
    """Compare a registration on disk with the config.

    Raises on a mismatch that breaks the bridge (the homeserver would reject every
    request or push with the wrong token). Returns warnings for the rest.
    """
    if not path.exists():
        return [f"{path}: registration file not found; cannot check it against the config"]
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a registration mapping")
    expected = build_registration(config)
    for key in ("as_token", "hs_token"):
        if raw.get(key) != expected[key]:
            raise ConfigError(
                f"{path}: {key} differs from appservice.{key} in {config.path}; "
                "run -g again and reload the homeserver"
            )
    missing = uncovered_users(config, raw)
    if missing:
        raise ConfigError(
            f"{path}: no exclusive users namespace covers {missing[0]}; "
            "run -g again and restart the homeserver"
        )
    warnings = []
    for key in ("id", "url", "sender_localpart", "rate_limited", "namespaces"):
        if raw.get(key) != expected[key]:
            warnings.append(
                f"{path}: {key} differs from what {config.path} gives; "
                "run -g again and restart the homeserver"
            )
    return warnings
