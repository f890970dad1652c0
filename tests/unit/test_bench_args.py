"""The benchmark refuses counts it could not measure, in one line."""

from __future__ import annotations

import pytest

from bench.ingest import parse_args


@pytest.mark.parametrize("flag", ["--events", "--batch", "--single"])
def test_a_count_below_one_is_refused(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args([flag, "0"])
    assert exit_.value.code == 2
    assert f"{flag} must be at least 1" in capsys.readouterr().err


def test_defaults_measure_every_figure() -> None:
    args = parse_args([])
    assert (args.events, args.batch, args.single) == (100_000, 100, 500)


def test_pg_settings_become_postgresql_conf_lines() -> None:
    args = parse_args(
        ["--pg-setting", "max_wal_size=8GB", "--pg-setting", "checkpoint_timeout = 30min"]
    )
    assert args.pg_setting == ["max_wal_size = '8GB'", "checkpoint_timeout = '30min'"]


@pytest.mark.parametrize(
    "given", ["max_wal_size", "=8GB", "max_wal_size=", "bad name=1", "a=b\nc=d"]
)
def test_a_malformed_pg_setting_is_refused(given: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--pg-setting", given])
    assert exit_.value.code == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err


def test_pg_settings_are_for_the_embedded_server_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--pg-setting", "fsync=off", "--database-url", "postgresql://x/y"])
    assert "--pg-setting is for the embedded server" in capsys.readouterr().err
