"""Developer tools: a local Synapse harness and the one-command dev setup.

These need the ``dev`` extra (``matrix-synapse``); nothing in the bridge imports them.
"""

import sys
from pathlib import Path


def bridge_command(config: Path, registration: Path) -> list[str]:
    """How dev mode, the tests and the benchmark run the real bridge process."""
    return [sys.executable, "-m", "daarion_bridge", "-c", str(config), "-r", str(registration)]
