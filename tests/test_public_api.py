"""The public API is what the README shows: every import in its Python examples works, and
every function of its API table is exported from the top-level package."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import mordasr

README = (Path(__file__).parents[1] / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def test_every_import_in_the_readme_examples_resolves() -> None:
    imports = [
        line
        for block in python_blocks()
        for line in block.splitlines()
        if line.startswith("from mordasr")
    ]
    assert imports
    for line in imports:
        module, names = re.fullmatch(r"from (\S+) import (.+)", line).groups()  # type: ignore[union-attr]
        for name in (n.strip() for n in names.split("#")[0].split(",")):
            target = importlib.import_module(module)
            found = hasattr(target, name) or importlib.util.find_spec(f"{module}.{name}")
            assert found, f"README: {line!r}: {module} has no {name}"


def test_every_function_of_the_mor_api_table_is_exported_from_mordasr() -> None:
    table = README[README.index("| API | what it does |") :].split("\n\n")[0]
    names = set(re.findall(r"`(?:with )?([a-z_]+)\(", table))
    assert names and names <= set(mordasr.__all__), names - set(mordasr.__all__)


def test_the_classes_the_readme_names_are_importable_from_mordasr() -> None:
    for name in ("Upscaler", "OneStepSR", "MoRSuperResolver", "MoRConfig", "load_sr_model"):
        assert name in mordasr.__all__ and hasattr(mordasr, name)
