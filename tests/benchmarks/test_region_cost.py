"""The region-routing cost benchmark (benchmarks/region_cost.py) on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from script_loader import loaded_script
from tiny_models import tiny_mor_model


def test_both_routings_are_timed_with_a_ratio(tmp_path: Path) -> None:
    model = tiny_mor_model(tmp_path / "model")
    out = tmp_path / "report.json"
    with loaded_script("region_cost") as script, pytest.MonkeyPatch.context() as patch:
        patch.setenv("MORDASR_CACHE", str(tmp_path / "cache"))
        script.main(["--model", str(model), "--side", "96", "--rounds", "2", "--json", str(out)])
    report = json.loads(out.read_text())
    assert [len(report["seconds"][name]) for name in ("image", "region")] == [2, 2]
    assert report["ratio_median"] > 0


def test_each_region_tile_side_is_timed_at_that_side(tmp_path: Path) -> None:
    model = tiny_mor_model(tmp_path / "model")
    out = tmp_path / "report.json"
    argv = ["--model", str(model), "--side", "96", "--rounds", "1", "--region-tiles", "80"]
    with loaded_script("region_cost") as script, pytest.MonkeyPatch.context() as patch:
        patch.setenv("MORDASR_CACHE", str(tmp_path / "cache"))
        script.main([*argv, "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["tiles"]["region-80"][1] <= 80 and len(report["seconds"]["region-80"]) == 1
    assert set(report["ratios"]) == {"image", "region", "region-80"}
