"""Weak or shared tokens are refused in one line that names the key, never the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_config import AS_TOKEN, HS_TOKEN, config_error, copy_example, with_tokens

ENV = "DAARION_BRIDGE_"
SERVICE = "service-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"


def env(**tokens: str) -> dict[str, str]:
    keys = {
        "as_token": "APPSERVICE_AS_TOKEN",
        "hs_token": "APPSERVICE_HS_TOKEN",
        "service_token": "API_SERVICE_TOKEN",
        "admin_token": "API_ADMIN_TOKEN",
    }
    base = {"as_token": AS_TOKEN, "hs_token": HS_TOKEN, "service_token": SERVICE}
    base |= {"admin_token": ADMIN} | tokens
    return {ENV + keys[k]: v for k, v in base.items()}


@pytest.mark.parametrize(
    ("tokens", "key", "problem"),
    [
        ({"as_token": "short"}, "appservice.as_token", "at least 16 characters"),
        ({"hs_token": "x" * 15}, "appservice.hs_token", "at least 16 characters"),
        ({"admin_token": "s3cr3t"}, "api.admin_token", "at least 16 characters"),
        ({"hs_token": AS_TOKEN}, "appservice.hs_token", "must differ from appservice.as_token"),
        ({"service_token": HS_TOKEN}, "api.service_token", "must differ from appservice.hs_token"),
        ({"admin_token": SERVICE}, "api.admin_token", "must differ from api.service_token"),
        ({"admin_token": AS_TOKEN}, "api.admin_token", "must differ from appservice.as_token"),
    ],
)
def test_a_weak_or_shared_token_is_refused(
    tmp_path: Path, tokens: dict[str, str], key: str, problem: str
) -> None:
    message = config_error(with_tokens(copy_example(tmp_path)), environ=env(**tokens))
    assert f"{key} " in message and problem in message
    for value in tokens.values():
        assert value not in message


def test_strong_distinct_tokens_are_accepted(tmp_path: Path) -> None:
    from daarion_bridge.config import load_config

    config = load_config(with_tokens(copy_example(tmp_path)), environ=env())
    assert (config.api.service_token, config.api.admin_token) == (SERVICE, ADMIN)


def test_tokens_still_to_generate_are_not_judged(tmp_path: Path) -> None:
    from daarion_bridge.config import load_config

    config = load_config(copy_example(tmp_path), environ={})
    assert config.appservice.as_token == config.appservice.hs_token == "generate"
