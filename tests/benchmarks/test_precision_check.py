"""The quality criterion benchmark (benchmarks/precision_check.py) on a tiny model: paired
differences against eager float32, the verdict, and nothing redone on a second run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from script_loader import loaded_script
from tiny_models import photo, tiny_mor_model

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("precision")
    for folder, side in (("LR", 16), ("HR", 64)):
        (root / folder).mkdir()
        for seed in range(2):
            Image.fromarray(photo(side, side, seed)).save(root / folder / f"{seed}.png")
    model = tiny_mor_model(root / "model")
    configs = ["openvino-float32", "torch-bfloat16-float32-ends"]
    argv = ["-o", str(root / "out"), "--lr", str(root / "LR"), "--hr", str(root / "HR")]
    with loaded_script("precision_check") as script, pytest.MonkeyPatch.context() as patch:
        patch.setenv("MORDASR_CACHE", str(root / "cache"))
        script.main([*argv, "--model", str(model), "--configs", *configs])
    return root / "out"


def test_every_configuration_is_compared_with_float32(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    names = [s["name"] for s in summary["summaries"]]
    assert names == ["openvino-float32", "torch-bfloat16-float32-ends"]
    assert all(s["images"] == 2 for s in summary["summaries"])


def test_float32_on_openvino_meets_the_criterion_with_the_same_experts(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    exact = summary["summaries"][0]
    assert exact["meets"] and exact["other_experts"] == 0 and exact["max_levels"] <= 1


def test_the_kept_float32_layers_are_named(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    assert "float32: conv_first" in summary["summaries"][1]["configuration"]


def test_a_finished_configuration_is_read_back_not_redone(run: Path) -> None:
    first = (run / "openvino-float32.json").read_text()
    with loaded_script("precision_check") as script:
        assert script.cached(run / "openvino-float32.json", lambda: {}) == json.loads(first)
