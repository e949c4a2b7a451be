"""The study runner (benchmarks/study.py) end to end on a tiny backbone and tiny data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import yaml
from PIL import Image
from script_loader import loaded_script
from tiny_models import photo, tiny_backbone


@pytest.fixture(scope="module")
def study() -> Iterator[ModuleType]:
    with loaded_script("study") as module:
        yield module


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study_assets")
    for name in ("train", "lr", "hr", "analysis"):
        (root / name).mkdir()
    for i in range(2):
        hr = photo(128, 128, seed=i)
        Image.fromarray(hr).save(root / "train" / f"{i}.png")
        Image.fromarray(hr).save(root / "analysis" / f"{i}.png")
        Image.fromarray(hr).save(root / "hr" / f"img{i}_HR.png")
        Image.fromarray(hr).resize((32, 32), Image.BICUBIC).save(root / "lr" / f"img{i}_LR.png")
    tiny_backbone(root / "tiny.pth")
    config = {
        "task": "realesrgan-mor",
        "output_dir": "unused",
        "checkpoint_every": 100,
        "log_every": 1,
        "ema_decay": 0.0,
        "data": {"hr_dirs": [str(root / "train")], "patch_size": 128, "batch_size": 2},
        "model": {
            "backbone": str(root / "tiny.pth"),
            "mor": {
                "target_modules": "conv_(body|up1|up2|hr)",
                "num_shared": 2,
                "num_routed": 6,
                "num_zero": 2,
                "top_k": 2,
            },
        },
        "degradation": {"preset": ["mordasr-mild", "mordasr-severe"], "scale": 4},
        "optim": {"lr": 1e-3},
        "losses": {"l1": 1.0, "balance": 0.01},
    }
    (root / "tiny.yaml").write_text(yaml.safe_dump(config))
    return root


def _argv(assets: Path, out: Path, steps: int = 2) -> list[str]:
    return [
        "--config", str(assets / "tiny.yaml"),
        "--variants", "lora", "mor",
        "--seeds", "2",
        "--steps", str(steps),
        "--out", str(out),
        "--lr", str(assets / "lr"),
        "--hr", str(assets / "hr"),
        "--metrics", "psnr,ssim,lpips",
        "--analysis-images", str(assets / "analysis"),
        "--analysis-crop", "128",
        "--quiet",
    ]  # fmt: skip


def test_study_trains_evaluates_and_resumes_without_redoing_runs(
    study: ModuleType, assets: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    out = tmp_path / "study"
    assert study.main(_argv(assets, out)) == 0
    table = capsys.readouterr().out
    assert "| lora | 2 |" in table and "| mor | 2 |" in table
    for variant in ("lora", "mor"):
        for seed in (0, 1):
            result = json.loads((out / variant / f"seed{seed}" / "results.json").read_text())
            assert len(result["per_image"]["lpips"]) == 2
            assert ("routing" in result) == (variant == "mor")
    routing = json.loads((out / "mor" / "seed0" / "results.json").read_text())["routing"]
    assert set(routing["real_experts"]) == {"mordasr-mild", "mordasr-severe"}
    assert routing["swap_change_p99"] >= 0 and routing["swap_change_mean"] >= 0

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(study, "train", no_training)
    monkeypatch.setattr(study, "run_benchmark", no_training)
    assert study.main(_argv(assets, out)) == 0
    assert capsys.readouterr().out.splitlines()[-3:] == table.splitlines()[-3:]


def test_only_seeds_runs_just_those_seeds_and_rejects_unknown_ones(
    study: ModuleType, assets: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "study"
    assert study.main([*_argv(assets, out, steps=1), "--only-seeds", "1"]) == 0
    assert "| lora | 1 |" in capsys.readouterr().out
    assert (out / "lora" / "seed1" / "results.json").is_file()
    assert not (out / "lora" / "seed0").exists()
    assert study.main([*_argv(assets, out, steps=1), "--only-seeds", "2"]) == 2
    assert "--only-seeds" in capsys.readouterr().err


def test_a_study_folder_refuses_another_budget(
    study: ModuleType, assets: Path, tmp_path: Path
) -> None:
    out = tmp_path / "study"
    study.pin_settings(
        out, study.StudySettings("c", "d", 2, (), "l", "h", None, ("lpips",), "a", None, 8)
    )
    other = study.StudySettings("c", "d", 3, (), "l", "h", None, ("lpips",), "a", None, 8)
    with pytest.raises(ValueError, match="steps"):
        study.pin_settings(out, other)


def test_a_study_folder_refuses_a_config_edited_since_its_first_call(
    study: ModuleType, assets: Path, tmp_path: Path
) -> None:
    config = tmp_path / "recipe.yaml"
    config.write_text((assets / "tiny.yaml").read_text())
    first = study.config_digest(config)
    config.write_text(config.read_text().replace("balance: 0.01", "balance: 0.3"))
    assert study.config_digest(config) != first
    out = tmp_path / "study"
    settings = study.StudySettings("c", first, 2, (), "l", "h", None, ("lpips",), "a", None, 8)
    study.pin_settings(out, settings)
    edited = study.StudySettings(
        "c", study.config_digest(config), 2, (), "l", "h", None, ("lpips",), "a", None, 8
    )
    with pytest.raises(ValueError, match="config_digest"):
        study.pin_settings(out, edited)


def test_a_missing_config_is_a_one_line_error_and_creates_no_study_folder(
    study: ModuleType, assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _argv(assets, tmp_path / "study", steps=1)
    argv[argv.index("--config") + 1] = str(tmp_path / "missing.yaml")
    assert study.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("study: cannot read") and "missing.yaml" in error
    assert "\n" not in error and not (tmp_path / "study").exists()


def test_paired_lpips_test_detects_a_consistent_improvement(study: ModuleType) -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.4, 30)
    better = base - 0.02 + rng.normal(0, 0.005, 30)

    def runs(values: np.ndarray) -> list[dict]:
        return [{"images": list(range(30)), "per_image": {"lpips": values.tolist()}}]

    test = study.paired_lpips(runs(better), runs(base))
    assert test["ci_low"] < test["mean"] < test["ci_high"] < 0
    assert test["wilcoxon_p"] < 1e-4
    same = study.paired_lpips(runs(base), runs(base))
    assert same["wilcoxon_p"] == 1.0 and same["ci_low"] == same["ci_high"] == 0
