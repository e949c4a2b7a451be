"""Load a benchmark script (``benchmarks/<name>.py``) as a module for its tests."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextmanager
def loaded_script(name: str) -> Iterator[ModuleType]:
    """``benchmarks/<name>.py`` imported as module ``name``: registered in ``sys.modules`` (its
    dataclasses look their module up) with the benchmarks folder on the path (scripts import
    ``benchmarks/common.py``), both undone afterwards."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))
        del sys.modules[name]
