"""URLs in logs and error messages keep no credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from daarion_bridge.redact import redact_url

from .test_config import config_error, copy_example, with_tokens


@pytest.mark.parametrize(
    ("url", "secret_user", "expected"),
    [
        ("postgresql://bridge:pw@db/x", False, "postgresql://bridge:***@db/x"),
        ("postgresql://bridge@db/x", False, "postgresql://bridge@db/x"),
        ("nats://user:pw@n:4222", True, "nats://user:***@n:4222"),
        ("nats://tok@n:4222", True, "nats://***@n:4222"),
        ("nats://n:4222", True, "nats://n:4222"),
        ("embedded", False, "embedded"),
    ],
)
def test_redact_url(url: str, secret_user: bool, expected: str) -> None:
    assert redact_url(url, user_is_secret=secret_user) == expected


def test_a_url_that_cannot_be_parsed_loses_its_user_part() -> None:
    shown = redact_url("postgresql://bridge:pw@[not-a-host/x")
    assert "pw" not in shown and "bridge" not in shown
    assert shown.startswith("postgresql://***@")


@pytest.mark.parametrize(
    ("env", "value", "secret"),
    [
        ("DAARION_BRIDGE_DATABASE_URL", "postgresql://bridge:s3cret@db:99999999/x", "s3cret"),
        ("DAARION_BRIDGE_DATABASE_URL", "postgresql://bridge:s3cret@[oops/x", "s3cret"),
        ("DAARION_BRIDGE_NATS_URL", "nats://t0ken@nats:99999999", "t0ken"),
    ],
)
def test_a_bad_url_in_the_config_is_named_without_its_secret(
    tmp_path: Path, env: str, value: str, secret: str
) -> None:
    message = config_error(with_tokens(copy_example(tmp_path)), environ={env: value})
    assert "url" in message
    assert secret not in message
