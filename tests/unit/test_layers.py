"""The package's layers: a package imports only packages below it, never above or beside.

Read from the source with ast, so a new import that makes a back edge fails here, with
the module and the import named, before it becomes a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "daarion_bridge"

# Lower first. A module may import its own package and any package of a lower rank.
RANKS = {
    "errors": 0,
    "redact": 0,
    "ids": 0,
    "metrics": 0,
    "process": 1,
    "config": 2,
    "translate": 3,
    "policy": 3,
    "db": 4,
    "matrix": 5,
    "bus": 6,
    "crypto": 6,
    "ingest": 7,
    "agents": 8,
    "commands": 8,
    "admin": 8,
    "web": 9,
    "app": 10,
    "cli": 11,
    "__main__": 12,
    "devtools": 12,
}


def _unit(module: str) -> str:
    """The top-level part of `daarion_bridge.x.y`: `x`."""
    return module.split(".")[1]


def _imports(path: Path, source: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every daarion_bridge import in a module's source."""
    package = list(path.relative_to(PACKAGE.parent).parts[:-1])
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                if not node.module:  # `from . import x`: x may be a module of its own
                    found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
                    continue
            else:
                target = node.module or ""
            found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in found if m.startswith("daarion_bridge.")]


def _modules() -> list[Path]:
    return sorted(
        p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE
    )


def test_every_top_level_part_has_a_rank() -> None:
    units = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _modules()}
    assert units <= set(RANKS), f"give these a rank in RANKS: {sorted(units - set(RANKS))}"


def _back_edges(path: Path, source: str) -> list[str]:
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    return [
        f"{path.relative_to(PACKAGE)}:{line} imports {module}"
        for line, module in _imports(path, source)
        if _unit(module) != own and _unit(module) in RANKS and RANKS[_unit(module)] >= RANKS[own]
    ]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_back_edges(path: Path) -> None:
    wrong = _back_edges(path, path.read_text(encoding="utf-8"))
    assert not wrong, "imports up or sideways: " + "; ".join(wrong)


def test_the_check_sees_back_and_side_edges() -> None:
    """The check itself, on made-up modules: up from translate/, sideways between peers,
    and a package's own modules and lower layers allowed."""
    translate = PACKAGE / "translate" / "probe.py"
    assert _back_edges(translate, "from ..commands.parse import parse\n") == [
        "translate/probe.py:1 imports daarion_bridge.commands.parse"
    ]
    agents = PACKAGE / "agents" / "probe.py"
    assert _back_edges(agents, "import daarion_bridge.commands.run\n") == [
        "agents/probe.py:1 imports daarion_bridge.commands.run"
    ]
    assert _back_edges(agents, "from . import sync\nfrom ..db import users\n") == []


MAX_LINES = 500  # a product file one reads in one sitting; split it by concern past this


def test_no_product_file_is_over_the_line_limit() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines, split by concern: {long}"
