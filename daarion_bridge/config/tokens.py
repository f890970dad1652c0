"""`-g`: random tokens written into the config file in place of `generate`."""

from __future__ import annotations

import secrets
from pathlib import Path

from ..errors import ConfigError
from .defaults import GENERATE
from .yaml_io import existing_mode, read_yaml, write_yaml_atomic

TOKEN_KEYS = (
    ("appservice", "as_token"),
    ("appservice", "hs_token"),
    ("api", "service_token"),
    ("api", "admin_token"),
)


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
        write_yaml_atomic(path, raw, mode=existing_mode(path) & 0o770)
    return changed
