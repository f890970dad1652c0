"""Unit tests for bridge.permissions (who may use the bot's commands): its default, its
one-line errors, and its environment override."""

from __future__ import annotations

from pathlib import Path

import pytest

from daarion_bridge.config import load_config
from tests.unit.test_config import AS_TOKEN, HS_TOKEN, config_error, copy_example, write_data


def minimal(tmp_path: Path, **bridge: object) -> Path:
    raw = {
        "homeserver": {"address": "http://localhost:8008", "domain": "Example.org"},
        "appservice": {
            "address": "http://localhost:29333",
            "as_token": AS_TOKEN,
            "hs_token": HS_TOKEN,
        },
        "bridge": bridge,
    }
    return write_data(tmp_path / "config.yaml", raw)


def test_default_is_the_homeservers_domain_as_user(tmp_path: Path) -> None:
    config = load_config(minimal(tmp_path), environ={})
    assert dict(config.bridge.permissions) == {"example.org": "user"}
    # null says the same
    config = load_config(minimal(tmp_path, permissions=None), environ={})
    assert dict(config.bridge.permissions) == {"example.org": "user"}


def test_example_config_documents_the_default(tmp_path: Path) -> None:
    path = copy_example(tmp_path)
    assert "permissions:" in path.read_text(encoding="utf-8")
    config = load_config(path, environ={})
    assert dict(config.bridge.permissions) == {"localhost": "user"}


def test_ids_domains_and_star(tmp_path: Path) -> None:
    permissions = {
        "@alice:example.org": "admin",
        "@Old_Style:example.org": "user",
        "Partner.ORG": "user",
        "localhost:8448": "admin",
        "*": "user",
    }
    config = load_config(minimal(tmp_path, permissions=permissions), environ={})
    assert dict(config.bridge.permissions) == {
        "@alice:example.org": "admin",
        "@Old_Style:example.org": "user",
        "partner.org": "user",
        "localhost:8448": "admin",
        "*": "user",
    }


def test_empty_mapping_turns_commands_off(tmp_path: Path) -> None:
    config = load_config(minimal(tmp_path, permissions={}), environ={})
    assert dict(config.bridge.permissions) == {}


@pytest.mark.parametrize(
    ("permissions", "needle"),
    [
        ("admin", "bridge.permissions must be a mapping"),
        (["@a:b"], "bridge.permissions must be a mapping"),
        ({"@alice:example.org": "root"}, "bridge.permissions['@alice:example.org'] must be"),
        ({"example.org": None}, "bridge.permissions['example.org'] must be admin or user"),
        ({"example.org": "Admin"}, "must be admin or user, got 'Admin'"),
        ({"alice": "admin", "@x y:z": "user"}, None),  # "alice" is a (local) domain name
        ({"@x y:z": "user"}, "bridge.permissions key '@x y:z' must be a Matrix id"),
        ({"@alice": "user"}, "bridge.permissions key '@alice' must be a Matrix id"),
        ({"exa mple.org": "user"}, "bridge.permissions key 'exa mple.org'"),
        ({"*.org": "user"}, "bridge.permissions key '*.org'"),
        ({5: "user"}, "bridge.permissions key 5"),
    ],
)
def test_mistakes_are_one_line_naming_the_key(
    tmp_path: Path, permissions: object, needle: str | None
) -> None:
    path = minimal(tmp_path, permissions=permissions)
    message = config_error(path)
    assert needle is None or needle in message, message
    assert "bridge.permissions" in message, message


def test_environment_override(tmp_path: Path) -> None:
    env = {"DAARION_BRIDGE_BRIDGE_PERMISSIONS": '{"@root:example.org": admin, "*": user}'}
    config = load_config(minimal(tmp_path), environ=env)
    assert dict(config.bridge.permissions) == {"@root:example.org": "admin", "*": "user"}
    env = {"DAARION_BRIDGE_BRIDGE_PERMISSIONS": "everyone"}
    assert "bridge.permissions must be a mapping" in config_error(minimal(tmp_path), env)
