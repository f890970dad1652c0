"""The defaults are written once, in daarion_bridge/config/defaults.py. The example
config (daarion_bridge/config/example.yaml) and docs/configuration.md say the same:
these tests fail, naming the key and the file, when one of them drifts.

What "the keys the code knows" are: the sections' keys (DEFAULTS and REQUIRED), the
top-level keys the parser reads besides them (TOP_LEVEL, checked against the parser
below), and the keys of the roster's list entries (read from the parser's own
"unknown key" message).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from daarion_bridge.config import (
    DEFAULTS,
    EXAMPLE_CONFIG,
    REQUIRED,
    ApiConfig,
    BackfillConfig,
    Config,
    env_name,
    parse_config,
)
from daarion_bridge.config.defaults import section_keys, section_path
from daarion_bridge.config.reader import DURATION, UNIT_SECONDS
from daarion_bridge.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "configuration.md"
DOCS_NAME = "docs/configuration.md"
EXAMPLE_NAME = "daarion_bridge/config/example.yaml"
CONFIG_PATH = Path("/etc/daarion/config.yaml")

# Top-level keys the parser reads besides the sections, with what it makes of a missing
# one (test_top_level_keys_are_read_by_the_parser holds these to the parser).
TOP_LEVEL: dict[str, Any] = {"logging": None, "microdaos": [], "blueprints": [], "agents": []}
ROSTER_LISTS = ("microdaos", "blueprints", "agents")

# The keys the example deliberately sets to something other than the code's default.
# Keep this short: every other key of the example shows its default.
EXAMPLE_OVERRIDES = {
    # `generate`, so that -g makes the tokens and the agent endpoint and admin API are on
    # in a fresh deployment; left out, they are off.
    "api.service_token",
    "api.admin_token",
    # `generate`, so that -g makes the pickle key and encryption is on in a fresh
    # deployment; left out (null), encryption is off.
    "bridge.encryption.pickle_key",
    # Spelled out as a dictConfig to edit; left out, the same INFO lines go to stderr.
    "logging",
}

MINIMAL: dict[str, Any] = {
    "homeserver": {"address": "http://localhost:8008", "domain": "localhost"},
    "appservice": {
        "address": "http://localhost:29333",
        "as_token": "as-token-for-the-docs-test",
        "hs_token": "hs-token-for-the-docs-test",
    },
}


# --- what the code knows ---------------------------------------------------------


def roster_entry_keys(section: str) -> list[str]:
    """The keys an entry of a roster list may have, as the parser itself lists them."""
    raw = {**copy.deepcopy(MINIMAL), section: [{"no_such_key": 1}]}
    with pytest.raises(ConfigError) as info:
        parse_config(CONFIG_PATH, raw, environ={})
    found = re.search(r"unknown key 'no_such_key' \(known: ([^)]*)\)", str(info.value))
    assert found, f"the parser's message for an unknown {section} key changed: {info.value}"
    return [f"{section}[].{key}" for key in found.group(1).split(", ")]


@functools.cache
def code_keys() -> frozenset[str]:
    keys = {f"{section}.{key}" for section, key in section_keys()} | set(TOP_LEVEL)
    for section in ROSTER_LISTS:
        keys |= set(roster_entry_keys(section))
    return frozenset(keys)


# What code_default gives for a key the admin must set (REQUIRED): it has no default.
REQUIRED_MARK = object()


def code_default(key: str) -> Any:
    """The code's default of a key, or REQUIRED_MARK for a required one."""
    if key in TOP_LEVEL:
        return TOP_LEVEL[key]
    section, name = key.rsplit(".", 1)
    if name in REQUIRED.get(section, ()):
        return REQUIRED_MARK
    return DEFAULTS[section][name]


def render(value: Any) -> str:
    """A default as the docs write it: YAML's spelling, strings bare, empty as ""."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return '""'
    if value == []:
        return "[]"
    return str(value)


# --- what the docs say -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    line: int
    key: str
    default: str
    environment: str
    allowed: str

    @property
    def where(self) -> str:
        return f"{DOCS_NAME}:{self.line}"


@functools.cache
def doc_rows() -> tuple[Row, ...]:
    rows = []
    for number, line in enumerate(DOCS.read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        assert len(cells) == 5, (
            f"{DOCS_NAME}:{number}: a key's row needs 5 cells "
            f"(key, default, environment, allowed values, meaning), has {len(cells)}"
        )
        rows.append(Row(number, cells[0].strip("`"), cells[1], cells[2], cells[3]))
    assert rows, f"{DOCS_NAME}: no table rows of keys found"
    return tuple(rows)


def doc_row(key: str) -> Row:
    found = [row for row in doc_rows() if row.key == key]
    assert found, f"{DOCS_NAME}: `{key}` has no row (the code knows it)"
    return found[0]


def section_and_top_level_keys() -> list[str]:
    return sorted({f"{s}.{k}" for s, k in section_keys()} | set(TOP_LEVEL))


# --- the docs page ---------------------------------------------------------------


def test_docs_document_every_key_the_code_knows() -> None:
    documented = {row.key for row in doc_rows()}
    missing = sorted(code_keys() - documented)
    assert not missing, f"{DOCS_NAME}: no row for {', '.join(missing)} (the code knows them)"


def test_docs_document_no_key_the_code_does_not_know() -> None:
    unknown = [f"`{row.key}` ({row.where})" for row in doc_rows() if row.key not in code_keys()]
    assert not unknown, "documented, but the code does not know: " + ", ".join(unknown)


def test_docs_mention_no_unknown_key_in_the_text() -> None:
    """A `section.key` in the prose, too, is one the code knows."""
    names = sorted(DEFAULTS.keys() | REQUIRED.keys() | set(ROSTER_LISTS), key=len, reverse=True)
    sections = "|".join(re.escape(name) for name in names)  # bridge.backfill before bridge
    mention = re.compile(rf"`((?:{sections})(?:\[\])?\.[a-z_]+)`")
    unknown = []
    for number, line in enumerate(DOCS.read_text(encoding="utf-8").splitlines(), 1):
        unknown += [
            f"`{m}` ({DOCS_NAME}:{number})" for m in mention.findall(line) if m not in code_keys()
        ]
    assert not unknown, "mentioned, but the code does not know: " + ", ".join(unknown)


def test_docs_document_each_key_once() -> None:
    seen: dict[str, Row] = {}
    for row in doc_rows():
        assert row.key not in seen, f"`{row.key}` has two rows: {seen[row.key].where}, {row.where}"
        seen[row.key] = row


@pytest.mark.parametrize("key", section_and_top_level_keys())
def test_docs_default_is_the_codes(key: str) -> None:
    row = doc_row(key)
    default = code_default(key)
    if default is REQUIRED_MARK:
        assert row.default == "required", (
            f"{row.where}: `{key}` is required in the code (REQUIRED), the docs say {row.default!r}"
        )
        return
    expected = f"`{render(default)}`"
    assert row.default == expected or row.default.startswith(expected + " "), (
        f"{row.where}: `{key}` default is {row.default!r}, the code's is {expected} "
        "(daarion_bridge/config/defaults.py)"
    )


@pytest.mark.parametrize("key", section_and_top_level_keys())
def test_docs_environment_variable_is_the_codes(key: str) -> None:
    row = doc_row(key)
    expected = "none" if key in TOP_LEVEL else f"`{env_name(*key.rsplit('.', 1))}`"
    assert row.environment == expected, (
        f"{row.where}: `{key}` environment variable is {row.environment!r}, the code reads "
        f"{expected}"
    )


def test_docs_roster_entries_have_no_environment_variable() -> None:
    for row in doc_rows():
        if "[]." in row.key:
            assert row.environment == "none", f"{row.where}: `{row.key}` has no override"


@pytest.mark.parametrize("key", section_and_top_level_keys())
def test_docs_flags_are_true_or_false(key: str) -> None:
    if isinstance(code_default(key), bool):
        row = doc_row(key)
        assert "`true` or `false`" in row.allowed, f"{row.where}: `{key}` is a flag"


# --- ranges: what the docs allow is what the parser allows -----------------------

RANGE = re.compile(r"\b(integer|number|duration) from (\S+) to (\S+?)(?:,|$|\s)")


def as_seconds(text: str) -> float:
    parts = DURATION.findall(text)
    assert parts and "".join(n + u for n, u in parts) == text, text
    return sum(float(n) * UNIT_SECONDS[u] for n, u in parts)


def parse_error(key: str, value: Any) -> str | None:
    """The parser's error with `key` set to `value` in a minimal config, or None."""
    section, name = key.rsplit(".", 1)
    raw = copy.deepcopy(MINIMAL)
    section_path(raw, section, create=True)[name] = value
    try:
        parse_config(CONFIG_PATH, raw, environ={})
    except ConfigError as e:
        return str(e)
    return None


def numeric_keys() -> list[str]:
    """Keys whose value is a number or a duration, by the code's default."""
    keys = []
    for section, name in section_keys():
        default = DEFAULTS.get(section, {}).get(name)
        number = isinstance(default, int | float) and not isinstance(default, bool)
        if number or (isinstance(default, str) and DURATION.fullmatch(default)):
            keys.append(f"{section}.{name}")
    return sorted(keys)


@pytest.mark.parametrize("key", numeric_keys())
def test_docs_range_is_the_parsers(key: str) -> None:
    row = doc_row(key)
    found = RANGE.search(row.allowed)
    assert found, (
        f"{row.where}: `{key}` needs its range: 'an integer|a number|a duration from A to B'"
    )
    kind, low, high = found.group(1), found.group(2).strip("`"), found.group(3).strip("`")
    # Just outside each bound: one below the low one, one above the high one.
    step = 1 if kind == "integer" else 0.01
    for bound, outside in ((low, -step), (high, step)):
        if kind == "duration":
            value: float = as_seconds(bound)
        elif re.fullmatch(r"\d+(\.\d+)?", bound):
            value = int(bound) if kind == "integer" else float(bound)
        else:
            continue  # a bound named by another key, e.g. `database.pool_min_size`
        error = parse_error(key, bound if kind == "duration" else value)
        # Refused for another key's sake (pool_min_size 100 > pool_max_size 5) is fine.
        assert error is None or f"{key} " not in error, (
            f"{row.where}: `{key}` allows {bound}, the parser refuses it: {error}"
        )
        error = parse_error(key, value + outside)
        assert error is not None and f"{key} " in error, (
            f"{row.where}: `{key}` allows from {low} to {high}, "
            f"the parser accepts {value + outside}"
        )


# --- the parser reads the top-level keys the docs list ---------------------------


@pytest.mark.parametrize("key", sorted(TOP_LEVEL))
def test_top_level_keys_are_read_by_the_parser(key: str) -> None:
    config = parse_config(CONFIG_PATH, copy.deepcopy(MINIMAL), environ={})
    found = config.logging if key == "logging" else list(getattr(config.roster, key))
    assert found == TOP_LEVEL[key], f"left out, `{key}` is {found!r}, TOP_LEVEL says otherwise"
    raw = {**copy.deepcopy(MINIMAL), key: "neither a list nor a mapping"}
    with pytest.raises(ConfigError, match=re.escape(f"{key} must be")):
        parse_config(CONFIG_PATH, raw, environ={})


# --- the example config ----------------------------------------------------------


@functools.cache
def example() -> dict[str, Any]:
    return YAML(typ="safe").load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))


def example_keys() -> dict[str, Any]:
    """Dotted key -> value of every key the example sets; a sub-section's keys
    (`bridge.encryption.allow`) by their full name."""
    found: dict[str, Any] = {}

    def add(name: str, value: Any) -> None:
        if name in DEFAULTS or name in REQUIRED:  # a section, or a subsection
            assert isinstance(value, dict), f"{EXAMPLE_NAME}: {name} must be a mapping"
            for key, v in value.items():
                add(f"{name}.{key}", v)
        else:
            found[name] = value

    for top, value in example().items():
        add(top, value)
    return found


def test_example_sets_only_keys_the_code_knows() -> None:
    unknown = sorted(set(example_keys()) - code_keys())
    assert not unknown, f"{EXAMPLE_NAME} sets keys the code does not know: {', '.join(unknown)}"


def test_example_lists_every_key() -> None:
    """Its header says every key is listed with its default."""
    missing = sorted(set(section_and_top_level_keys()) - set(example_keys()))
    assert not missing, f"{EXAMPLE_NAME} leaves out {', '.join(missing)}"


@pytest.mark.parametrize("key", section_and_top_level_keys())
def test_example_carries_the_codes_default(key: str) -> None:
    default = code_default(key)
    if key in EXAMPLE_OVERRIDES or default is REQUIRED_MARK:
        return
    value = example_keys().get(key)
    assert value == default and type(value) is type(default), (
        f"{EXAMPLE_NAME}: `{key}` is {value!r}, the code's default is {default!r} "
        "(daarion_bridge/config/defaults.py); change one, or list the key in "
        "EXAMPLE_OVERRIDES with why"
    )


def test_example_overrides_are_real() -> None:
    """A key stays in EXAMPLE_OVERRIDES only while the example really differs."""
    for key in sorted(EXAMPLE_OVERRIDES):
        assert key in code_keys(), f"EXAMPLE_OVERRIDES: the code does not know `{key}`"
        assert example_keys().get(key) != code_default(key), (
            f"{EXAMPLE_NAME}: `{key}` is the code's default now: drop it from EXAMPLE_OVERRIDES"
        )


def test_example_documents_its_overrides_in_the_docs() -> None:
    """The docs name what the example sets for the keys it overrides in a section."""
    for key in sorted(EXAMPLE_OVERRIDES - set(TOP_LEVEL)):
        row = doc_row(key)
        value = render(example_keys()[key])
        assert f"(the example: `{value}`)" in row.default, (
            f"{row.where}: `{key}` should say (the example: `{value}`)"
        )


# --- the dataclasses' own fallbacks agree with DEFAULTS --------------------------


def test_dataclass_fallbacks_are_the_parsed_defaults() -> None:
    """A Config built in code without nats or api gets what parse_config makes of the
    defaults, so the fallbacks in config/model.py are no second set of defaults."""
    parsed = parse_config(CONFIG_PATH, copy.deepcopy(MINIMAL), environ={})
    fields = {f.name: f for f in dataclasses.fields(Config)}
    for name in ("nats", "api"):
        fallback = fields[name].default_factory()  # type: ignore[misc]
        assert fallback == getattr(parsed, name), (
            f"daarion_bridge/config/model.py: Config.{name} falls back to {fallback}, the "
            f"parsed default is {getattr(parsed, name)}"
        )
    assert BackfillConfig() == parsed.bridge.backfill
    alias = {f.name: f for f in dataclasses.fields(ApiConfig)}["channel_alias"].default
    assert alias == parsed.api.channel_alias
