"""The tile-overlap benchmark (benchmarks/tile_overlap.py) on a tiny model: one row per overlap,
more computed pixels for more overlap, and differences from the untiled output."""

from __future__ import annotations

import json

import pytest
from script_loader import loaded_script
from tiny_models import tiny_mor_model


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("overlap")
    model = tiny_mor_model(root / "model")
    out = root / "report.json"
    with loaded_script("tile_overlap") as script, pytest.MonkeyPatch.context() as patch:
        patch.setenv("MORDASR_CACHE", str(root / "cache"))
        argv = ["--model", str(model), "--tile", "32", "--size", "96x48", "--overlaps", "2", "12"]
        script.main([*argv, "--json", str(out)])
    return json.loads(out.read_text())


def test_every_overlap_gets_a_row_after_the_untiled_one(report: dict[str, object]) -> None:
    assert [row["overlap"] for row in report["rows"]] == [None, 2, 12]


def test_more_overlap_computes_more_pixels(report: dict[str, object]) -> None:
    shares = [row["computed_share"] for row in report["rows"]]
    assert shares[0] == 1.0 < shares[1] < shares[2]


def test_differences_are_reported_in_levels(report: dict[str, object]) -> None:
    for row in report["rows"][1:]:
        assert 0 <= row["seam_p999_levels"] <= row["seam_max_levels"] <= row["max_levels"]


def test_the_seam_mask_marks_bands_in_the_middle_of_shared_strips() -> None:
    with loaded_script("tile_overlap") as script:
        mask = script.seam_mask(16, 40, tile=24, overlap=4, scale=1)
    assert mask[:, 20].all() and not mask[:, 0].any()
