"""`mordasr analyze --spatial IMAGE` on a tiny MoR model: the per-region expert map and the
uncertainty map."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_models import photo

from mordasr.cli import main
from mordasr.eval.spatial import EXPERTS_FILE, UNCERTAINTY_FILE, spatial_maps
from mordasr.mor import mor_config, route
from mordasr.sr import MoRSuperResolver


def test_spatial_analysis_writes_the_expert_and_uncertainty_pictures(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.fromarray(photo(64, 128)).save(tmp_path / "photo.png")
    out = tmp_path / "spatial"
    args = ["analyze", "--model", str(model_dir), "--spatial", str(tmp_path / "photo.png")]
    assert main([*args, "-o", str(out)]) == 0
    for name in (EXPERTS_FILE, UNCERTAINTY_FILE):
        with Image.open(out / name) as figure:
            figure.load()
            assert figure.format == "PNG" and min(figure.size) > 100
    assert "regions keep" in capsys.readouterr().out


def test_each_regions_expert_count_is_what_its_own_scores_route_to(model_dir: Path) -> None:
    model = MoRSuperResolver.from_pretrained(model_dir)
    lr = torch.from_numpy(photo(64, 128)).permute(2, 0, 1).float()[None] / 255
    maps = spatial_maps(model, lr)
    assert maps.real_experts.shape == maps.regions.grid.shape == (1, 2)
    assert maps.uncertainty.shape == (256, 512)
    top_k = mor_config(model.backbone).top_k
    for col in range(2):
        plan = route(model.backbone, maps.regions.scores[:, :, 0, col])
        expected = top_k - plan.mean_zero_experts()
        assert maps.real_experts[0, col].item() == pytest.approx(expected, abs=1e-6)


def test_spatial_analysis_refuses_a_model_that_routes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.fromarray(photo(32, 32)).save(tmp_path / "photo.png")
    args = ["analyze", "--model", "bicubic", "--spatial", str(tmp_path / "photo.png")]
    assert main([*args, "-o", str(tmp_path / "out")]) == 1
    assert "not a feed-forward MoR model" in capsys.readouterr().err


def test_analyze_needs_images_or_an_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["analyze", "-o", str(tmp_path)]) == 1
    assert "--spatial IMAGE" in capsys.readouterr().err
