"""benchmarks/train_precision.py: both precisions train, alternately, and are timed per step."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from PIL import Image
from script_loader import loaded_script
from tiny_models import photo, tiny_backbone


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    with loaded_script("train_precision") as module:
        yield module


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    (tmp_path / "train").mkdir()
    Image.fromarray(photo(128, 128)).save(tmp_path / "train" / "0.png")
    config = {
        "task": "realesrgan-mor",
        "output_dir": "unused",
        "data": {"hr_dirs": [str(tmp_path / "train")], "patch_size": 128, "batch_size": 1},
        "model": {
            "backbone": str(tiny_backbone(tmp_path / "tiny.pth")),
            "mor": {
                "target_modules": "conv_last",
                "num_shared": 1,
                "num_routed": 2,
                "num_zero": 1,
                "top_k": 1,
            },
        },
        "degradation": {"preset": "bicubic", "scale": 4},
        "losses": {"l1": 1.0},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "tiny.yaml"


def test_each_precision_trains_in_turn_and_the_ratio_is_of_the_medians(
    bench: ModuleType, tiny_config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = [str(tiny_config), "--steps", "3", "--log-every", "1", "--rounds", "1", "-o", str(out)]
    assert bench.main(argv) == 0
    summary = yaml.safe_load((out / "summary.json").read_text())
    assert [r["precision"] for r in summary["runs"]] == ["no", "bf16"]
    assert all(r["seconds_per_step"] > 0 for r in summary["runs"])
    assert summary["ratio_bf16"] == pytest.approx(
        summary["median"]["bf16"] / summary["median"]["no"]
    )


def test_the_time_per_step_leaves_out_the_first_logged_step(
    bench: ModuleType, tmp_path: Path
) -> None:
    log = tmp_path / "log.csv"
    log.write_text("step,l1,seconds\n10,0.1,30.0\n20,0.1,40.0\n30,0.1,50.0\n")
    assert bench.seconds_per_step(log) == pytest.approx(1.0)


def test_a_run_too_short_to_log_twice_is_refused(bench: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        bench.main(["cfg.yaml", "--steps", "10", "--log-every", "10", "-o", str(tmp_path)])
