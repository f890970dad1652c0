"""Typed, validating access to one section of the raw config, defaults filled in.

Every mistake is one ConfigError line naming the file and `section.key`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NoReturn

from yarl import URL

from ..errors import ConfigError
from ..redact import redact_url
from .defaults import DEFAULTS, REQUIRED, section_path

DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


class SectionReader:
    """Typed access to one section, with errors that name file and key."""

    def __init__(self, path: Path, raw: dict[str, Any], section: str) -> None:
        self.path = path
        self.section = section
        value = section_path(raw, section)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.fail(None, "must be a mapping")
        self.values = {**DEFAULTS.get(section, {}), **value}
        for key in REQUIRED.get(section, ()):
            if self.values.get(key) in (None, ""):
                self.fail(key, "is required")

    def fail(self, key: str | None, problem: str) -> NoReturn:
        name = f"{self.section}.{key}" if key else self.section
        raise ConfigError(f"{self.path}: {name} {problem}")

    def text(self, key: str, pattern: re.Pattern[str] | None = None, optional: bool = False) -> Any:
        value = self.values.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            self.fail(key, "must be a non-empty string")
        if pattern is not None and not pattern.fullmatch(value):
            self.fail(key, f"must match {pattern.pattern}, got {value!r}")
        return value

    def url(self, key: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
        value = self.text(key)
        try:
            url = URL(value)
            web = url.scheme in ("http", "https")
            valid = url.scheme in schemes and (bool(url.host) or not web)
            url.port  # noqa: B018  (parses the port: out of range raises)
        except ValueError:
            valid = False
        if not valid:
            shown = redact_url(value, user_is_secret=True)
            self.fail(key, f"must be a {' or '.join(schemes)} URL, got {shown!r}")
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
