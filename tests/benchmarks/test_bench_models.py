"""The per-model speed benchmark (benchmarks/bench_models.py) on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from script_loader import loaded_script
from tiny_models import tiny_backbone, tiny_mor_model


def test_every_model_gets_a_row_with_its_ratio_to_the_first(tmp_path: Path) -> None:
    models = [str(tiny_mor_model(tmp_path / "mor")), str(tiny_backbone(tmp_path / "plain.pth"))]
    out = tmp_path / "report.json"
    with loaded_script("bench_models") as script, pytest.MonkeyPatch.context() as patch:
        patch.setenv("MORDASR_CACHE", str(tmp_path / "cache"))
        script.main(["--models", *models, "--size", "24x16", "--rounds", "2", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [row["model"] for row in rows] == models
    assert rows[0]["ratio"] == 1.0 and rows[1]["ratio"] > 0
