"""`mordasr benchmark`: pairing, one table for several models, JSON and saved outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tiny_models import photo, tiny_backbone, tiny_mor_model

from mordasr.cli import main
from mordasr.eval.benchmark import (
    comparison_grid,
    detail_box,
    pair_key,
    pair_lr_hr,
    run_benchmark,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("set")
    (root / "LR").mkdir()
    (root / "HR").mkdir()
    for i in range(2):
        hr = torch.from_numpy(photo(128, 128, seed=i)).permute(2, 0, 1).float()[None] / 255
        lr = F.interpolate(hr, scale_factor=0.25, mode="area")
        for image, folder, tag in ((hr, "HR", "HR"), (lr, "LR", "LR")):
            array = (image[0].permute(1, 2, 0) * 255).round().byte().numpy()
            Image.fromarray(array).save(root / folder / f"img{i}_SRF_4_{tag}.png")
    tiny_mor_model(root / "models")
    tiny_backbone(root / "models" / "plain.pth")
    return root


def test_lr_and_hr_tags_are_ignored_when_pairing() -> None:
    assert pair_key("baby_SRF_4_LR") == pair_key("baby_SRF_4_HR") == "baby_SRF_4"
    assert pair_key("0001") == "0001"


def test_benchmark_scores_every_model_in_one_table(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = [str(dataset / "models" / "mor"), str(dataset / "models" / "plain.pth"), "bicubic"]
    status = main(
        [
            "benchmark",
            "--lr",
            str(dataset / "LR"),
            "--hr",
            str(dataset / "HR"),
            "--models",
            *models,
            "--reference",
            models[1],
            "--metrics",
            "psnr,ssim",
            "-o",
            str(tmp_path / "report"),
        ]
    )
    assert status == 0
    table = capsys.readouterr().out
    assert len(table.strip().splitlines()) == 2 + len(models)
    assert "bicubic" in table and "PSNR ↑" in table
    data = json.loads((tmp_path / "report" / "results.json").read_text())
    assert data[models[1]]["time_ratio_vs_reference"] == pytest.approx(1.0)
    assert data["bicubic"]["images"] == 2
    assert data["bicubic"]["mean"]["psnr"] > 20
    assert len(list((tmp_path / "report" / "images" / "bicubic").iterdir())) == 2


def test_report_holds_the_table_and_the_comparison_figure(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = ["benchmark", "--lr", str(dataset / "LR"), "--hr", str(dataset / "HR")]
    assert main([*args, "--models", "bicubic", "--metrics", "psnr", "-o", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "| bicubic (bicubic) |" in report
    assert "![side-by-side crops](comparison.png)" in report
    with Image.open(out / "comparison.png") as figure:
        assert figure.format == "PNG" and figure.width > figure.height


def test_comparison_grid_has_lr_every_model_and_hr_per_kept_image(dataset: Path) -> None:
    pairs = pair_lr_hr(dataset / "LR", dataset / "HR")
    models = [str(dataset / "models" / "mor"), "bicubic"]
    runs = run_benchmark(pairs, models, ("psnr",), progress=False, keep=1)
    grid, columns = comparison_grid(pairs, runs, size=64)
    assert columns == ["LR (nearest x4)", "mor", "bicubic", "HR"]
    assert len(grid) == 1 and len(grid[0]) == len(columns)
    assert {crop.shape for crop in grid[0]} == {(64, 64, 3)}


def test_detail_box_picks_the_textured_part_of_the_image() -> None:
    hr = torch.zeros(3, 64, 128)
    hr[:, :, 64:] = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    top, left, side = detail_box(hr, 48, multiple=4)
    assert side == 48 and left >= 64 and top % 4 == 0
