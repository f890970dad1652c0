"""Operator mistakes: the CLI exits non-zero with one line on stderr that names the file,
key or URL at fault, and never a traceback."""

from __future__ import annotations

import pytest

from tests.e2e.helpers import CliResult, run_cli

pytestmark = pytest.mark.e2e

CLOSED = "127.0.0.1:1"  # nothing listens on port 1


def assert_one_line_error(result: CliResult, *needles: str) -> str:
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode != 0, output
    assert "Traceback" not in result.stdout + result.stderr, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly one line on stderr\n{output}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not named in the error\n{output}"
    return lines[0]


async def test_missing_config_file(e2e, tmp_path):
    missing = tmp_path / "nope" / "config.yaml"
    result = await run_cli("-c", str(missing), "-r", str(e2e.registration))
    assert_one_line_error(result, str(missing))


async def test_config_missing_key(e2e):
    def drop_domain(cfg):
        del cfg["homeserver"]["domain"]

    config = e2e.derived_config("config-no-domain", drop_domain)
    result = await run_cli("-c", str(config), "-r", str(e2e.registration))
    assert_one_line_error(result, str(config), "homeserver.domain")


async def test_database_unreachable(e2e):
    secret = "e2e-db-secret"
    url = f"postgresql://x:{secret}@{CLOSED}/x"

    def closed_db(cfg):
        cfg["database"]["url"] = url

    config = e2e.derived_config("config-closed-db", closed_db)
    result = await run_cli("-c", str(config), "-r", str(e2e.registration), timeout=120)
    assert_one_line_error(result, CLOSED)
    assert secret not in result.stdout + result.stderr, "the database password was printed"


async def test_homeserver_unreachable(e2e):
    address = f"http://{CLOSED}"

    def closed_hs(cfg):
        cfg["homeserver"]["address"] = address
        cfg["homeserver"]["connect_timeout"] = 2

    config = e2e.derived_config("config-closed-hs", closed_hs)
    result = await run_cli("-c", str(config), "-r", str(e2e.registration), timeout=60)
    assert_one_line_error(result, CLOSED)
    assert result.seconds < 30, f"connect_timeout 2 but it took {result.seconds:.0f} s"
