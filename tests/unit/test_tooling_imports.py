"""The tooling's shape, read from the source with ast: the benchmark stands on
``daarion_bridge`` alone (never on ``tests``), and long-running children are started by one
harness, ``daarion_bridge/devtools/process.py``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HARNESS = "daarion_bridge/devtools/process.py"
SPAWNERS = {"Popen", "create_subprocess_exec", "create_subprocess_shell"}

# (file, function) -> why it may start a child itself. One-shot commands that run to the
# end in a line or two are fine; a child that lives on goes through the harness.
ALLOWED = {
    ("daarion_bridge/bus/process.py", "_run_child"): (
        "the product's own publisher child (a pipe protocol, restarted when it dies); "
        "the product never imports devtools"
    ),
    ("tests/db/test_publisher_process.py", "test_started_by_hand_it_says_why_in_one_line"): (
        "one-shot, its standard input is the point of the test"
    ),
}


def _tests_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        found += [
            f"{path.relative_to(ROOT)}:{node.lineno} imports {n}"
            for n in names
            if n == "tests" or n.startswith("tests.")
        ]
    return found


def test_the_benchmark_imports_nothing_from_the_tests() -> None:
    found = [hit for path in sorted((ROOT / "bench").glob("*.py")) for hit in _tests_imports(path)]
    assert not found, f"bench/ may import daarion_bridge.* only (devtools for harness): {found}"


def _spawns(path: Path) -> list[tuple[str, int]]:
    """(enclosing function, line) of each call that starts a child process."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in SPAWNERS:
                found.append((function, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, "<module>")
    return found


def _all_spawns() -> dict[tuple[str, str], list[int]]:
    spawns: dict[tuple[str, str], list[int]] = {}
    for top in ("daarion_bridge", "tests", "bench", "scripts"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            for function, line in _spawns(path):
                spawns.setdefault((rel, function), []).append(line)
    return spawns


def test_children_are_started_by_the_one_harness() -> None:
    spawns = _all_spawns()
    elsewhere = [
        f"{rel}:{lines[0]} in {function}"
        for (rel, function), lines in spawns.items()
        if rel != HARNESS and (rel, function) not in ALLOWED
    ]
    assert not elsewhere, (
        f"start children with {HARNESS} (ChildProcess, or run_to_end for a one-shot "
        f"command), not by hand: {elsewhere}"
    )
    assert any(rel == HARNESS for rel, _ in spawns), "the harness itself was not found"


def test_every_exception_is_still_there() -> None:
    stale = sorted(set(ALLOWED) - set(_all_spawns()))
    assert not stale, f"remove from ALLOWED, they start nothing any more: {stale}"
