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
