"""The benchmark scripts stay scripts: they share only ``benchmarks/common.py``, and no test
outside ``tests/benchmarks`` loads one of them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))
NAMES = {path.stem for path in SCRIPTS}


def _imported(path: Path) -> set[str]:
    """Top-level names of the modules ``path`` imports (at any depth of its code)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_a_script_imports_no_other_script_than_common(script: Path) -> None:
    allowed = set() if script.stem == "common" else {"common"}
    assert _imported(script) & NAMES <= allowed


def test_no_test_helper_or_package_test_loads_a_benchmark_script() -> None:
    tests = ROOT / "tests"
    outside = [
        path
        for path in tests.rglob("*.py")
        if tests / "benchmarks" not in path.parents and path.name != "script_loader.py"
    ]
    loading = {path.name for path in outside if _imported(path) & (NAMES | {"script_loader"})}
    assert not loading
