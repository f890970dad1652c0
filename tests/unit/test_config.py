"""Unit tests for the config, the registration and the CLI's operator errors.

Only temp files; the environment is passed to load_config explicitly.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from daarion_bridge import cli
from daarion_bridge.config import EXAMPLE_CONFIG, Config, generate_tokens, load_config
from daarion_bridge.errors import ConfigError
from daarion_bridge.matrix.registration import (
    PLACEHOLDER_TOKEN,
    build_registration,
    check_registration,
    write_registration,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = EXAMPLE_CONFIG
AS_TOKEN = "as-token-0123456789abcdefghijklmnopqrstuvwxyz"
HS_TOKEN = "hs-token-0123456789abcdefghijklmnopqrstuvwxyz"


# --- helpers ---------------------------------------------------------------------


def copy_example(tmp_path: Path, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    shutil.copyfile(EXAMPLE, path)
    return path


def replace_once(path: Path, old: str, new: str) -> Path:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not exactly once in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


def with_tokens(path: Path, as_token: str = AS_TOKEN, hs_token: str = HS_TOKEN) -> Path:
    replace_once(path, "  as_token: generate\n", f"  as_token: {as_token}\n")
    replace_once(
        path, "  service_token: generate\n", "  service_token: service-secret-0123456789\n"
    )
    replace_once(path, "  admin_token: generate\n", "  admin_token: admin-secret-0123456789\n")
    replace_once(path, "    pickle_key: generate\n", "    pickle_key: pickle-secret-0123456789\n")
    return replace_once(path, "  hs_token: generate\n", f"  hs_token: {hs_token}\n")


def read_data(path: Path) -> Any:
    return YAML(typ="safe").load(path)


def write_data(path: Path, data: Any) -> Path:
    YAML(typ="safe").dump(data, path)
    return path


def config_with_tokens(tmp_path: Path) -> Config:
    return load_config(with_tokens(copy_example(tmp_path)), environ={})


def config_error(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={} if environ is None else environ)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    return message.replace(str(path), "<path>")  # so a key is never found in the path


# --- the example config ----------------------------------------------------------


def test_example_config_loads_with_documented_defaults(tmp_path: Path) -> None:
    path = copy_example(tmp_path)
    config = load_config(path, environ={})
    assert config.path == path
    assert config.homeserver.address == "http://localhost:8008"
    assert config.homeserver.domain == "localhost"
    assert config.homeserver.verify_ssl is True
    assert config.homeserver.connect_timeout == 30
    assert config.appservice.address == "http://localhost:29333"
    assert config.appservice.hostname == "127.0.0.1"
    assert config.appservice.port == 29333
    assert config.appservice.id == "daarion"
    assert config.appservice.bot_username == "daarion"
    assert config.appservice.as_token == "generate"
    assert config.appservice.hs_token == "generate"
    assert config.appservice.tokens_generated is False
    assert config.appservice.ephemeral_events is True
    assert config.database.url == "embedded"
    assert config.database.embedded is True
    assert (config.database.pool_min_size, config.database.pool_max_size) == (1, 5)
    assert config.bridge.preview_length == 500
    assert config.bridge.default_microdao is None
    assert config.bridge.allow_federated_invites is False
    assert config.bridge.agent_localpart_template == "agent-{name}"
    assert config.metrics.enabled is False
    assert (config.metrics.host, config.metrics.port) == ("127.0.0.1", 9333)
    assert isinstance(config.logging, dict)
    assert config.logging["version"] == 1
    assert config.bot_mxid == "@daarion:localhost"


def test_defaults_apply_when_keys_are_left_out(tmp_path: Path) -> None:
    minimal = {
        "homeserver": {"address": "http://localhost:8008", "domain": "localhost"},
        "appservice": {
            "address": "http://localhost:29333",
            "as_token": AS_TOKEN,
            "hs_token": HS_TOKEN,
        },
    }
    config = load_config(write_data(tmp_path / "min.yaml", minimal), environ={})
    assert config.appservice.port == 29333
    assert config.database.url == "embedded"
    assert config.bridge.preview_length == 500
    assert config.bridge.default_microdao is None
    assert config.bridge.agent_localpart_template == "agent-{name}"
    assert config.metrics.enabled is False
    assert config.logging is None


def test_embedded_dir_is_relative_to_the_config_file(tmp_path: Path, monkeypatch) -> None:
    config_dir = tmp_path / "etc" / "daarion"
    config_dir.mkdir(parents=True)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(copy_example(config_dir), environ={})
    assert config.database.embedded_dir == (config_dir / "data" / "postgres").resolve()
    assert config.database.embedded_dir.is_absolute()


# --- operator mistakes -----------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    config_error(tmp_path / "nope" / "config.yaml")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = replace_once(copy_example(tmp_path), "  domain: localhost\n", "  domain: local: host\n")
    lines = path.read_text(encoding="utf-8").splitlines()
    bad_line = lines.index("  domain: local: host") + 1
    assert f"line {bad_line}" in config_error(path)


def test_invalid_yaml_mapping_value_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("homeserver:\n  address: http://x\n  domain: a: b\n", encoding="utf-8")
    assert "line 3" in config_error(path)


@pytest.mark.parametrize("text", ["- a\n- list\n", "just a string\n", "42\n", ""])
def test_top_level_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    config_error(path)


def _drop_logging(text: str) -> str:
    head, sep, _ = text.partition("\nlogging:\n")
    assert sep
    return head + "\nlogging: verbose\n"


def _sub(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert text.count(old) == 1, old
        return text.replace(old, new)

    return edit


MISTAKES = [
    ("homeserver.domain", _sub("  domain: localhost\n", "")),
    ("homeserver.domain", _sub("  domain: localhost\n", '  domain: ""\n')),
    ("appservice.port", _sub("  port: 29333\n", '  port: "abc"\n')),
    ("appservice.port", _sub("  port: 29333\n", "  port: abc\n")),
    ("appservice.port", _sub("  port: 29333\n", "  port: 70000\n")),
    ("appservice.port", _sub("  port: 29333\n", "  port: 0\n")),
    ("homeserver.address", _sub("address: http://localhost:8008", "address: localhost:8008")),
    ("homeserver.address", _sub("address: http://localhost:8008", "address: ftp://localhost")),
    ("appservice.address", _sub("address: http://localhost:29333", "address: ws://x:29333")),
    ("database.url", _sub("  url: embedded\n", "  url: mysql://u:p@localhost/db\n")),
    ("bridge.default_microdao", _sub("default_microdao: null", 'default_microdao: "dao7"')),
    ("bridge.default_microdao", _sub("default_microdao: null", "default_microdao: user:93")),
    ("bridge.preview_length", _sub("preview_length: 500", "preview_length: 0")),
    ("bridge.preview_length", _sub("preview_length: 500", "preview_length: 20000")),
    ("bridge.backfill.max_messages", _sub("max_messages: 1000", "max_messages: -1")),
    ("bridge.backfill.max_age", _sub("max_age: 365d", "max_age: a year")),
    ("bridge.backfill", _sub("  backfill:\n", "  backfill: 5\n  old_backfill:\n")),
    ("metrics.listen", _sub("listen: 127.0.0.1:9333", "listen: nope")),
    ("metrics.listen", _sub("listen: 127.0.0.1:9333", "listen: 127.0.0.1:99999")),
    ("metrics.enabled", _sub("  enabled: false\n", "  enabled: maybe\n")),
    (
        "appservice.hs_token",
        _sub(
            "as_token: generate\n  hs_token: generate",
            "as_token: same-token-0123456789\n  hs_token: same-token-0123456789",
        ),
    ),
    ("bridge", _sub("bridge:\n  # Characters", "bridge: [1, 2]\nx:\n  # Characters")),
    ("logging", _drop_logging),
]


@pytest.mark.parametrize(
    ("key", "mistake"), MISTAKES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(MISTAKES)]
)
def test_operator_mistake_names_file_and_key(
    tmp_path: Path, key: str, mistake: Callable[[str], str]
) -> None:
    path = copy_example(tmp_path)
    path.write_text(mistake(path.read_text(encoding="utf-8")), encoding="utf-8")
    message = config_error(path)
    assert key in message, message


@pytest.mark.parametrize(
    ("key", "mistake"),
    [
        ("homeserver.address", _sub("http://localhost:8008", "http://localhost:99999")),
        ("homeserver.address", _sub("http://localhost:8008", "http://[::1")),
        ("database.url", _sub("  url: embedded\n", '  url: "postgresql://[db"\n')),
    ],
    ids=["port-out-of-range", "unclosed-ipv6", "db-unclosed-ipv6"],
)
def test_malformed_url_is_a_config_error(
    tmp_path: Path, key: str, mistake: Callable[[str], str]
) -> None:
    path = copy_example(tmp_path)
    path.write_text(mistake(path.read_text(encoding="utf-8")), encoding="utf-8")
    assert key in config_error(path)


# --- environment overrides -------------------------------------------------------


def test_env_database_url_kept_verbatim(tmp_path: Path) -> None:
    url = "postgresql://u:p@h/db"
    config = load_config(copy_example(tmp_path), {"DAARION_BRIDGE_DATABASE_URL": url})
    assert config.database.url == url
    assert config.database.embedded is False


def test_env_port_is_parsed_to_int(tmp_path: Path) -> None:
    config = load_config(copy_example(tmp_path), {"DAARION_BRIDGE_APPSERVICE_PORT": "1234"})
    assert config.appservice.port == 1234


def test_env_default_microdao(tmp_path: Path) -> None:
    env = {"DAARION_BRIDGE_BRIDGE_DEFAULT_MICRODAO": "microdao:x"}
    assert load_config(copy_example(tmp_path), env).bridge.default_microdao == "microdao:x"


def test_backfill_defaults_and_subsection_from_the_environment(tmp_path: Path) -> None:
    """bridge.backfill is a subsection: its keys default on their own and are overridden
    as DAARION_BRIDGE_BRIDGE_BACKFILL_<KEY>."""
    minimal = {
        "homeserver": {"address": "http://localhost:8008", "domain": "localhost"},
        "appservice": {"address": "http://x:1", "as_token": AS_TOKEN, "hs_token": HS_TOKEN},
        "bridge": {"backfill": {"max_age": "2h"}},
    }
    config = load_config(write_data(tmp_path / "min.yaml", minimal), environ={})
    assert (config.bridge.backfill.max_messages, config.bridge.backfill.max_age) == (1000, 7200)
    assert config.bridge.backfill.enabled
    env = {"DAARION_BRIDGE_BRIDGE_BACKFILL_MAX_MESSAGES": "0"}
    off = load_config(copy_example(tmp_path), env).bridge.backfill
    assert (off.max_messages, off.enabled, off.max_age) == (0, False, 365 * 86400)


def test_env_metrics_enabled(tmp_path: Path) -> None:
    env = {"DAARION_BRIDGE_METRICS_ENABLED": "true"}
    assert load_config(copy_example(tmp_path), env).metrics.enabled is True


def test_env_tokens_are_kept_as_strings(tmp_path: Path) -> None:
    env = {
        "DAARION_BRIDGE_APPSERVICE_AS_TOKEN": "12345678901234567890",
        "DAARION_BRIDGE_APPSERVICE_HS_TOKEN": "0x1234567890abcdef",
    }
    config = load_config(copy_example(tmp_path), env)
    tokens = (config.appservice.as_token, config.appservice.hs_token)
    assert tokens == ("12345678901234567890", "0x1234567890abcdef")


def test_env_only_for_the_prefix(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql://u:p@h/db", "APPSERVICE_PORT": "1234"}
    config = load_config(copy_example(tmp_path), env)
    assert config.database.url == "embedded"
    assert config.appservice.port == 29333


def test_env_bad_value_is_a_config_error(tmp_path: Path) -> None:
    env = {"DAARION_BRIDGE_APPSERVICE_PORT": "abc"}
    assert "appservice.port" in config_error(copy_example(tmp_path), env)


def test_env_value_that_is_not_yaml_is_a_config_error(tmp_path: Path) -> None:
    env = {"DAARION_BRIDGE_APPSERVICE_PORT": "["}
    message = config_error(copy_example(tmp_path), env)
    assert "appservice.port" in message or "DAARION_BRIDGE_APPSERVICE_PORT" in message


# --- generate_tokens -------------------------------------------------------------


def comment_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip().startswith("#")]


def test_generate_tokens(tmp_path: Path) -> None:
    path = copy_example(tmp_path)
    os.chmod(path, 0o644)
    before = path.read_text(encoding="utf-8")

    assert generate_tokens(path) is True

    after = path.read_text(encoding="utf-8")
    data_before, data_after = read_data(EXAMPLE), read_data(path)
    as_token = data_after["appservice"].pop("as_token")
    hs_token = data_after["appservice"].pop("hs_token")
    api_tokens = [data_after["api"].pop(k) for k in ("service_token", "admin_token")]
    pickle_key = data_after["bridge"]["encryption"].pop("pickle_key")
    tokens = [as_token, hs_token, *api_tokens, pickle_key]
    assert all(isinstance(t, str) and len(t) >= 32 for t in tokens)
    assert len(set(tokens)) == 5
    assert "generate" not in tokens
    assert not any(t in before for t in tokens)
    del data_before["appservice"]["as_token"], data_before["appservice"]["hs_token"]
    del data_before["api"]["service_token"], data_before["api"]["admin_token"]
    del data_before["bridge"]["encryption"]["pickle_key"]
    assert data_after == data_before
    assert comment_lines(after) == comment_lines(before)
    assert len(comment_lines(before)) > 20  # the example really is commented

    config = load_config(path, environ={})
    assert (config.appservice.as_token, config.appservice.hs_token) == (as_token, hs_token)
    assert config.appservice.tokens_generated
    assert config.bridge.encryption.pickle_key == pickle_key
    assert config.bridge.encryption.enabled


def test_generate_tokens_is_random(tmp_path: Path) -> None:
    one, two = copy_example(tmp_path, "one.yaml"), copy_example(tmp_path, "two.yaml")
    generate_tokens(one)
    generate_tokens(two)
    tokens_one = load_config(one, environ={}).appservice
    tokens_two = load_config(two, environ={}).appservice
    assert tokens_one.as_token != tokens_two.as_token
    assert tokens_one.hs_token != tokens_two.hs_token


def test_generate_tokens_second_call_changes_nothing(tmp_path: Path) -> None:
    path = copy_example(tmp_path)
    assert generate_tokens(path) is True
    written = path.read_bytes()
    assert generate_tokens(path) is False
    assert path.read_bytes() == written


def test_generate_tokens_keeps_real_tokens(tmp_path: Path) -> None:
    path = with_tokens(copy_example(tmp_path))
    before = path.read_bytes()
    assert generate_tokens(path) is False
    assert path.read_bytes() == before


def test_generate_tokens_only_replaces_the_generate_one(tmp_path: Path) -> None:
    path = replace_once(
        copy_example(tmp_path), "  as_token: generate\n", f"  as_token: {AS_TOKEN}\n"
    )
    assert generate_tokens(path) is True
    config = load_config(path, environ={})
    assert config.appservice.as_token == AS_TOKEN
    assert config.appservice.hs_token not in ("generate", AS_TOKEN)


def test_generate_tokens_file_is_not_world_readable(tmp_path: Path) -> None:
    path = copy_example(tmp_path)
    os.chmod(path, 0o644)
    generate_tokens(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    assert not mode & stat.S_IROTH, oct(mode)
    assert mode & stat.S_IRUSR, oct(mode)  # still readable by its owner


# --- registration ----------------------------------------------------------------

GOOD_USERS = ["@daarion:localhost", "@agent-sofia:localhost", "@agent-a.b_c=d/e+f-g:localhost"]
BAD_USERS = [
    "@daarion:localhost.evil.org",
    "@agent-sofia:otherserver",
    "@agent-sofia:localhost.evil.org",
    "@alice:localhost",
    "@xdaarion:localhost",
    "@daarionx:localhost",
    "@agent-:localhost",
    "@agentXsofia:localhost",
    "@xagent-sofia:localhost",
]


def test_build_registration(tmp_path: Path) -> None:
    config = config_with_tokens(tmp_path)
    reg = build_registration(config)
    assert reg["id"] == "daarion"
    assert reg["url"] == config.appservice.address == "http://localhost:29333"
    assert reg["as_token"] == AS_TOKEN
    assert reg["hs_token"] == HS_TOKEN
    assert reg["sender_localpart"] == "daarion"
    assert "rate_limited" in reg and reg["rate_limited"] is False
    assert reg["receive_ephemeral"] is True
    assert reg["de.sorunome.msc2409.push_ephemeral"] is True


def test_build_registration_follows_ephemeral_events(tmp_path: Path) -> None:
    path = with_tokens(copy_example(tmp_path))
    replace_once(path, "  ephemeral_events: true\n", "  ephemeral_events: false\n")
    replace_once(path, "    allow: true\n", "    allow: false\n")
    reg = build_registration(load_config(path, environ={}))
    assert reg["receive_ephemeral"] is False
    assert reg["de.sorunome.msc2409.push_ephemeral"] is False
    assert "org.matrix.msc3202" not in reg


def test_build_registration_asks_for_what_encryption_needs(tmp_path: Path) -> None:
    """Room keys come as to-device messages with the ephemeral events (MSC2409), key
    counts and device lists with MSC3202: encryption turns both on."""
    path = with_tokens(copy_example(tmp_path))
    replace_once(path, "  ephemeral_events: true\n", "  ephemeral_events: false\n")
    reg = build_registration(load_config(path, environ={}))
    assert reg["receive_ephemeral"] is True
    assert reg["org.matrix.msc3202"] is True


def test_encryption_keys_from_the_environment(tmp_path: Path) -> None:
    path = with_tokens(copy_example(tmp_path))
    env = {
        "DAARION_BRIDGE_BRIDGE_ENCRYPTION_ALLOW": "false",
        "DAARION_BRIDGE_BRIDGE_ENCRYPTION_PLAINTEXT_PREVIEWS": "true",
    }
    encryption = load_config(path, environ=env).bridge.encryption
    assert (encryption.allow, encryption.plaintext_previews) == (False, True)
    assert not encryption.enabled


def test_weak_pickle_key_is_refused(tmp_path: Path) -> None:
    path = with_tokens(copy_example(tmp_path))
    replace_once(path, "    pickle_key: pickle-secret-0123456789\n", "    pickle_key: short\n")
    assert "bridge.encryption.pickle_key must be at least" in config_error(path)


def test_registration_user_namespaces(tmp_path: Path) -> None:
    users = build_registration(config_with_tokens(tmp_path))["namespaces"]["users"]
    assert users
    assert all(entry["exclusive"] is True for entry in users)
    regexes = [entry["regex"] for entry in users]
    for user_id in GOOD_USERS:
        assert any(re.match(r, user_id) for r in regexes), user_id
    for user_id in BAD_USERS:
        assert not any(re.match(r, user_id) for r in regexes), user_id


def test_committed_registration_matches_the_example(tmp_path: Path) -> None:
    committed = REPO / "registration.yaml"
    assert committed.is_file(), f"{committed} must be committed"
    config = load_config(copy_example(tmp_path), environ={})
    placeholder = dataclasses.replace(
        config,
        appservice=dataclasses.replace(
            config.appservice, as_token=PLACEHOLDER_TOKEN, hs_token=PLACEHOLDER_TOKEN
        ),
    )
    assert read_data(committed) == build_registration(placeholder)


def test_check_registration_in_step(tmp_path: Path) -> None:
    config = config_with_tokens(tmp_path)
    reg = tmp_path / "registration.yaml"
    write_registration(config, reg)
    assert check_registration(config, reg) == []


@pytest.mark.parametrize("key", ["as_token", "hs_token"])
def test_check_registration_token_mismatch(tmp_path: Path, key: str) -> None:
    config = config_with_tokens(tmp_path)
    reg = tmp_path / "registration.yaml"
    data = build_registration(config)
    data[key] = "a-different-token-from-an-older-run-of-g"
    write_data(reg, data)
    with pytest.raises(ConfigError) as info:
        check_registration(config, reg)
    message = str(info.value)
    assert str(reg) in message
    assert key in message
    assert "\n" not in message


def test_check_registration_url_mismatch_warns(tmp_path: Path) -> None:
    config = config_with_tokens(tmp_path)
    reg = tmp_path / "registration.yaml"
    data = build_registration(config)
    data["url"] = "http://bridge.internal:29333"
    write_data(reg, data)
    warnings = check_registration(config, reg)
    assert isinstance(warnings, list) and len(warnings) == 1
    assert isinstance(warnings[0], str)
    assert "url" in warnings[0]
    assert str(reg) in warnings[0]


def test_check_registration_missing_file_warns(tmp_path: Path) -> None:
    config = config_with_tokens(tmp_path)
    reg = tmp_path / "nope.yaml"
    warnings = check_registration(config, reg)
    assert len(warnings) == 1
    assert str(reg) in warnings[0]


# --- CLI -------------------------------------------------------------------------


@pytest.fixture
def no_bridge_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads os.environ; make sure a developer's DAARION_BRIDGE_* does not leak in."""
    for name in list(os.environ):
        if name.startswith("DAARION_BRIDGE_"):
            monkeypatch.delenv(name)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("daarion-bridge: error:"), err
    assert "Traceback" not in err
    return lines[0]


def test_cli_missing_config(tmp_path: Path, capsys, no_bridge_env) -> None:
    missing = tmp_path / "missing.yaml"
    assert cli.main(["-c", str(missing), "-r", str(tmp_path / "reg.yaml")]) != 0
    assert str(missing) in one_error_line(capsys)


def test_cli_tokens_not_generated(tmp_path: Path, capsys, no_bridge_env) -> None:
    path = copy_example(tmp_path)
    reg = tmp_path / "reg.yaml"
    assert cli.main(["-c", str(path), "-r", str(reg)]) != 0
    line = one_error_line(capsys)
    assert "-g" in line
    assert str(path) in line
    assert not reg.exists()


def test_cli_placeholder_tokens_refused(tmp_path: Path, capsys, no_bridge_env) -> None:
    path = with_tokens(copy_example(tmp_path), PLACEHOLDER_TOKEN, HS_TOKEN)
    assert cli.main(["-c", str(path), "-r", str(tmp_path / "reg.yaml")]) != 0
    assert "-g" in one_error_line(capsys)


def test_cli_generate(tmp_path: Path, capsys, no_bridge_env) -> None:
    path = copy_example(tmp_path)
    reg = tmp_path / "reg.yaml"
    assert cli.main(["-g", "-c", str(path), "-r", str(reg)]) == 0
    assert capsys.readouterr().err == ""
    config = load_config(path, environ={})
    assert config.appservice.tokens_generated
    assert config.appservice.as_token != config.appservice.hs_token
    assert reg.is_file()
    assert read_data(reg) == build_registration(config)
    assert not stat.S_IMODE(reg.stat().st_mode) & stat.S_IROTH


# --- the admin API ----------------------------------------------------------------


def test_channel_alias_default_and_rendering(tmp_path: Path) -> None:
    config = config_with_tokens(tmp_path)
    assert config.api.admin_token == "admin-secret-0123456789"
    assert config.api.channel_alias == "{slug}-{microdao}"
    assert config.api.alias_localpart("general", "microdao:7") == "general-7"


def test_channel_alias_custom(tmp_path: Path) -> None:
    path = with_tokens(copy_example(tmp_path))
    replace_once(path, 'channel_alias: "{slug}-{microdao}"', 'channel_alias: "city_{slug}"')
    config = load_config(path, environ={})
    assert config.api.alias_localpart("news", "microdao:core") == "city_news"


@pytest.mark.parametrize(
    "template", ['"{microdao}"', '"{slug}:{microdao}"', '"{slug}-{name}"', '"Big-{slug}"', '""']
)
def test_channel_alias_mistakes(tmp_path: Path, template: str) -> None:
    path = with_tokens(copy_example(tmp_path))
    replace_once(path, 'channel_alias: "{slug}-{microdao}"', f"channel_alias: {template}")
    assert "api.channel_alias" in config_error(path)


def test_registration_reserves_channel_aliases_only_with_the_admin_api(tmp_path: Path) -> None:
    config = config_with_tokens(tmp_path)
    aliases = build_registration(config)["namespaces"]["aliases"]
    assert aliases == [{"exclusive": False, "regex": "^#[a-z0-9-]+\\-[a-z0-9-]+:localhost$"}]
    regex = re.compile(aliases[0]["regex"])
    assert regex.match("#general-7:localhost")
    assert not regex.match("#general-7:localhost.evil.example")
    assert not regex.match("#general:localhost")
    off = dataclasses.replace(config, api=dataclasses.replace(config.api, admin_token=None))
    assert build_registration(off)["namespaces"]["aliases"] == []
    city = dataclasses.replace(
        config, api=dataclasses.replace(config.api, channel_alias="city_{slug}")
    )
    regex = re.compile(build_registration(city)["namespaces"]["aliases"][0]["regex"])
    assert regex.match("#city_news:localhost") and not regex.match("#cityxnews:localhost")
