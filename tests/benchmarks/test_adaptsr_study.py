"""benchmarks/adaptsr_study.py end to end on a tiny compact backbone and tiny data."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
import yaml
from PIL import Image
from script_loader import loaded_script
from tiny_models import photo, tiny_compact_backbone

from mordasr.mor.allocate import params_per_rank, uniform_budget
from mordasr.nets.loaders import load_network


@pytest.fixture(scope="module")
def study() -> Iterator[ModuleType]:
    with loaded_script("adaptsr_study") as module:
        yield module


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("adaptsr_study_assets")
    for name in ("train", "lr", "hr"):
        (root / name).mkdir()
    for i in range(2):
        hr = photo(128, 128, seed=i)
        Image.fromarray(hr).save(root / "train" / f"{i}.png")
        Image.fromarray(hr).save(root / "hr" / f"img{i}_HR.png")
        Image.fromarray(hr).resize((32, 32), Image.BICUBIC).save(root / "lr" / f"img{i}_LR.png")
    backbone = tiny_compact_backbone(root / "compact.pth")
    convs = {
        name: params_per_rank(module, "1x1_kxk")
        for name, module in load_network(backbone).named_modules()
        if isinstance(module, torch.nn.Conv2d)
    }
    config = {
        "task": "realesrgan-mor",
        "output_dir": "unused",
        "checkpoint_every": 100,
        "ema_decay": 0.0,
        "data": {
            "hr_dirs": [str(root / "train")],
            "patch_size": 128,
            "batch_size": 2,
            "pool_size": 4,
        },
        "model": {
            "backbone": str(backbone),
            "variant": "lora",
            "mor": {
                "target_modules": r"body\.\d+",
                "num_shared": 16,
                "num_routed": 0,
                "num_zero": 0,
                "top_k": 0,
                "conv_variant": "1x1_kxk",
            },
            "allocate": {
                "budget": uniform_budget(convs, 8),
                "batches": 1,
                "max_rank": 16,
                "stability_batches": 2,
            },
        },
        "degradation": {"preset": "realesrgan", "scale": 4},
        "optim": {"lr": 1e-3, "milestones": [1]},
        "losses": {"l1": 1.0},
    }
    (root / "tiny.yaml").write_text(yaml.safe_dump(config))
    return root


def _argv(assets: Path, out: Path, steps: int = 2) -> list[str]:
    return [
        "--config", str(assets / "tiny.yaml"),
        "--variants", "uniform-8", "rank-aware", "full-finetune",
        "--references", "bicubic",
        "--seeds", "2",
        "--steps", str(steps),
        "--out", str(out),
        "--lr", str(assets / "lr"),
        "--hr", str(assets / "hr"),
        "--metrics", "psnr,lpips",
        "--quiet",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def finished(
    study: ModuleType, assets: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """A finished tiny study: its folder and the table it printed."""
    out = tmp_path_factory.mktemp("adaptsr") / "study"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert study.main(_argv(assets, out)) == 0
    return out, printed.getvalue()


def test_the_study_trains_scores_and_tabulates_every_variant(
    assets: Path, finished: tuple[Path, str]
) -> None:
    out, table = finished
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert set(rows) == {"uniform-8", "rank-aware", "full-finetune", "bicubic"}
    summary = json.loads((out / "summary.json").read_text())["variants"]
    assert summary["uniform-8"]["lpips_vs_baseline"]["mean"] == 0.0
    for name in ("rank-aware", "full-finetune", "bicubic"):
        paired = summary[name]["lpips_vs_baseline"]
        assert paired["ci_low"] <= paired["mean"] <= paired["ci_high"]
        assert paired["seeds"] == 2 and paired["images"] == 2
    full = sum(p.numel() for p in load_network(assets / "compact.pth").parameters())
    assert summary["full-finetune"]["trainable_parameters"] == full
    assert (
        summary["rank-aware"]["trainable_parameters"]
        <= summary["uniform-8"]["trainable_parameters"]
    )
    assert -1.0 <= summary["rank-aware"]["spearman_mean"] <= 1.0
    assert all(summary[name]["train_minutes"] > 0 for name in ("uniform-8", "rank-aware"))
    assert (out / "rank_heatmap.png").stat().st_size > 0


def test_a_finished_study_is_never_trained_or_scored_again(
    study: ModuleType,
    assets: Path,
    finished: tuple[Path, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, table = finished

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished run was done again")

    monkeypatch.setattr(study, "train", no_work)
    monkeypatch.setattr(study, "run_benchmark", no_work)
    assert study.main(_argv(assets, out)) == 0
    assert capsys.readouterr().out == table


def test_a_study_folder_refuses_another_budget(
    study: ModuleType, assets: Path, finished: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = finished
    monkeypatch.setattr(study, "train", lambda *args, **kwargs: pytest.fail("trained"))
    with pytest.raises(ValueError, match="steps"):
        study.main([*_argv(assets, out, steps=3), "--only-seeds", "0"])


def test_an_unknown_variant_is_refused(
    study: ModuleType, assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert study.main([*_argv(assets, tmp_path), "--variants", "uniform-3"]) == 2
    assert "uniform-3" in capsys.readouterr().err


def test_only_references_scores_the_references_and_trains_nothing(
    study: ModuleType, assets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(study, "train", lambda *args, **kwargs: pytest.fail("trained"))
    assert study.main([*_argv(assets, tmp_path / "out"), "--only-references"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bicubic", "study.json"]
    assert (tmp_path / "out" / "bicubic" / "results.json").is_file()


def test_another_baseline_pairs_every_variant_with_it_in_tables_of_its_own(
    study: ModuleType, assets: Path, finished: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, table = finished
    monkeypatch.setattr(study, "train", lambda *args, **kwargs: pytest.fail("trained"))
    assert study.main([*_argv(assets, out), "--baseline", "full-finetune"]) == 0
    summary = json.loads((out / "summary_vs_full-finetune.json").read_text())["variants"]
    assert summary["full-finetune"]["lpips_vs_baseline"]["mean"] == 0.0
    assert summary["uniform-8"]["lpips_vs_baseline"]["mean"] != 0.0
    assert "LPIPS vs full-finetune" in (out / "table_vs_full-finetune.md").read_text()
    assert (out / "table.md").read_text() == table
