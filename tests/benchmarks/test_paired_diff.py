"""benchmarks/paired_diff.py: paired per-image differences of two models of one benchmark run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from script_loader import loaded_script


@pytest.fixture(scope="module")
def paired() -> Iterator[ModuleType]:
    with loaded_script("paired_diff") as module:
        yield module


def _results(images: int = 30) -> dict[str, dict]:
    rng = np.random.default_rng(0)
    lpips = rng.uniform(0.2, 0.4, images)
    psnr = rng.uniform(22.0, 28.0, images)
    names = [f"img{i}" for i in range(images)]
    return {
        "a": {"images": names, "per_image": {"lpips": list(lpips - 0.01), "psnr": list(psnr)}},
        "b": {"images": names, "per_image": {"lpips": list(lpips), "psnr": list(psnr + 0.5)}},
    }


def test_a_model_better_on_every_image_gets_an_interval_on_its_side(paired: ModuleType) -> None:
    rows = {r["metric"]: r for r in paired.paired_rows(_results(), "a", "b")}
    assert rows["lpips"]["mean"] == pytest.approx(-0.01)
    assert rows["lpips"]["ci"][1] < 0 and rows["lpips"]["a_better"] == 30
    assert rows["psnr"]["mean"] == pytest.approx(-0.5)
    assert rows["psnr"]["ci"][0] < 0 > rows["psnr"]["ci"][1] and rows["psnr"]["a_better"] == 0


def test_unknown_models_and_different_images_are_refused(paired: ModuleType) -> None:
    results = _results()
    with pytest.raises(ValueError, match="no model 'c'"):
        paired.paired_rows(results, "a", "c")
    results["b"]["images"] = results["b"]["images"][::-1]
    with pytest.raises(ValueError, match="different images"):
        paired.paired_rows(results, "a", "b")


def test_main_prints_a_table_and_a_missing_file_is_a_one_line_error(
    paired: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results()))
    assert paired.main([str(path), "a", "b"]) == 0
    assert "| lpips | -0.0100" in capsys.readouterr().out
    assert paired.main([str(tmp_path / "missing.json"), "a", "b"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("paired_diff:") and "\n" not in error
