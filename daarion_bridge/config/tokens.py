"""`-g`: random tokens written into the config file in place of `generate`."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .defaults import GENERATE, section_path
from .yaml_io import existing_mode, read_yaml, write_yaml_atomic

TOKEN_KEYS = (
    ("appservice", "as_token"),
    ("appservice", "hs_token"),
    ("api", "service_token"),
    ("api", "admin_token"),
    ("bridge.encryption", "pickle_key"),
)


# A token shorter than this is guessable; `generate` makes 64 characters.
MIN_TOKEN_LENGTH = 16


def token_problem(tokens: dict[str, str | None]) -> tuple[str, str] | None:
    """The first weak or shared token, as (key, problem), never naming its value.

    `tokens` maps `section.key` to its value, in TOKEN_KEYS order; unset ones and
    `generate` (still to be made by -g) are not judged. Sharing a token would let one
    party act as another: the homeserver as an agent runtime, a runtime as an admin."""
    seen: dict[str, str] = {}
    for name, value in tokens.items():
        if value is None or value == GENERATE:
            continue
        if len(value) < MIN_TOKEN_LENGTH:
            return name, f"must be at least {MIN_TOKEN_LENGTH} characters (or generate)"
        if value in seen:
            return name, f"must differ from {seen[value]}"
        seen[value] = name
    return None


def token_value(config: Any, section: str, key: str) -> Any:
    """The parsed value of a TOKEN_KEYS entry: `bridge.encryption` is config.bridge.encryption."""
    for part in section.split("."):
        config = getattr(config, part)
    return getattr(config, key)


def generate_tokens(path: Path) -> bool:
    """Replace `generate` tokens with random ones in the file itself, comments kept.

    Returns True when the file changed.
    """
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a YAML mapping of sections")
    changed = False
    for section, key in TOKEN_KEYS:
        values = section_path(raw, section)
        if isinstance(values, dict) and values.get(key) == GENERATE:
            values[key] = secrets.token_urlsafe(48)
            changed = True
    if changed:
        # The file now holds secrets: never leave it readable by others.
        write_yaml_atomic(path, raw, mode=existing_mode(path) & 0o770)
    return changed
