"""What an installed wheel carries: the example config the dev mode and Docker start from."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_wheel_ships_the_example_config(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        timeout=240,
    )
    (wheel,) = tmp_path.glob("daarion_bridge-*.whl")
    with zipfile.ZipFile(wheel) as built:
        names = set(built.namelist())
        assert "daarion_bridge/config/example.yaml" in names
        shipped = built.read("daarion_bridge/config/example.yaml").decode()
    assert shipped == (REPO / "daarion_bridge" / "config" / "example.yaml").read_text()
