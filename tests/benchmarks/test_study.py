"""The study runner (benchmarks/study.py) end to end on a tiny backbone and tiny data."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from script_loader import loaded_script
from tiny_models import photo, tiny_backbone

from mordasr.train.config import TrainConfig


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


def test_the_allocation_switches_at_their_defaults_keep_the_digest_of_earlier_study_folders(
    study: ModuleType, assets: Path, tmp_path: Path
) -> None:
    config = tmp_path / "recipe.yaml"
    recipe = yaml.safe_load((assets / "tiny.yaml").read_text())
    recipe["model"]["allocate"] = {"budget": 1000}
    config.write_text(yaml.safe_dump(recipe))
    first = study.config_digest(config)
    recipe["model"]["allocate"].update(scorer="gradient", stability_batches=0)
    config.write_text(yaml.safe_dump(recipe))
    assert study.config_digest(config) == first
    recipe["model"]["allocate"]["scorer"] = "taylor"
    config.write_text(yaml.safe_dump(recipe))
    assert study.config_digest(config) != first


def test_the_window_scores_switch_at_its_default_keeps_the_digest_of_earlier_study_folders(
    study: ModuleType, assets: Path, tmp_path: Path
) -> None:
    config = tmp_path / "recipe.yaml"
    config.write_text((assets / "tiny.yaml").read_text())
    resolved = TrainConfig.from_yaml(config).to_dict()
    del resolved["model"]["router_scores_from"]  # what the digest read before the keys existed
    del resolved["model"]["full_finetune"], resolved["optim"]["milestones"]
    del resolved["optim"]["gamma"]
    text = json.dumps(resolved, sort_keys=True, default=str)
    assert study.config_digest(config) == hashlib.sha256(text.encode()).hexdigest()[:16]
    first = study.config_digest(config)
    recipe = yaml.safe_load(config.read_text())
    recipe["model"]["router_scores_from"] = "windows"
    config.write_text(yaml.safe_dump(recipe))
    assert study.config_digest(config) != first


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


# The mixed-set study -------------------------------------------------------------------------

MIXED_GROUPS = ("mild", "severe")


@pytest.fixture(scope="module")
def mixed_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mixed set in ``make_mixed_set.py``'s layout: 2 validation and 3 test crops (64 px), each
    in 2 groups (LR 16 px: plain downscaling, then noise for ``severe``)."""
    root = tmp_path_factory.mktemp("mixed")
    crops = [("val", "a"), ("val", "b"), ("test", "a"), ("test", "b"), ("test", "c")]
    ids, lines = [], []
    for index, (folder, name) in enumerate(crops):
        image_id = f"{folder}-{name}-0"
        ids.append(image_id)
        hr = Image.fromarray(photo(64, 64, seed=10 + index))
        (root / "HR").mkdir(exist_ok=True)
        hr.save(root / "HR" / f"{image_id}.png")
        lr = np.asarray(hr.resize((16, 16), Image.BICUBIC), dtype=np.int16)
        noise = np.random.default_rng(index).integers(-30, 31, lr.shape)
        for group, pixels in zip(MIXED_GROUPS, (lr, np.clip(lr + noise, 0, 255)), strict=True):
            (root / "LR" / group).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(root / "LR" / group / f"{image_id}.png")
            lines.append(json.dumps({"id": image_id, "group": group, "source": f"{folder}/{name}"}))
    (root / "params.jsonl").write_text("\n".join(lines) + "\n")
    manifest = {"groups": [*MIXED_GROUPS, "mixed-halves"], "folders": ["val", "test"], "ids": ids}
    (root / "set.json").write_text(json.dumps(manifest))
    return root


def _mixed_argv(assets: Path, mixed_set: Path, out: Path) -> list[str]:
    return [
        "--mixed", str(mixed_set),
        "--validation-folder", "val",
        "--config", str(assets / "tiny.yaml"),
        "--set", "data.pool_size=4",
        "--variants", "lora", "mor", "mor-frozen", "mor-spatial", "mor-region", "mor-tiled",
        "--seeds", "2",
        "--steps", "1",
        "--lr-grid", "1", "4",
        "--ceilings",
        "--realsr", "--lr", str(assets / "lr"), "--hr", str(assets / "hr"),
        "--metrics", "lpips,psnr",
        "--out", str(out),
        "--quiet",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def mixed_study(
    study: ModuleType, assets: Path, mixed_set: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """A finished tiny mixed-set study: its folder and the table it printed."""
    out = tmp_path_factory.mktemp("mixed_study") / "out"
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        assert study.main(_mixed_argv(assets, mixed_set, out)) == 0
    return out, table.getvalue()


def test_mixed_study_table_has_every_variant_group_and_ceiling(mixed_study) -> None:
    out, printed = mixed_study
    table = (out / "table.md").read_text()
    assert table.strip() in printed
    for variant in ("lora", "mor", "mor-frozen", "mor-spatial", "mor-region"):
        for group in ("pooled", *MIXED_GROUPS, "RealSR"):
            assert f"| {variant} | {group} | 2 |" in table
    for group in MIXED_GROUPS:
        assert f"| {group} | mordasr-{group} | 1 |" in table
    summary = json.loads((out / "summary.json").read_text())
    verdicts = summary["variants"]["mor"]["vs_lora"]
    assert set(verdicts) == {"pooled", *MIXED_GROUPS, "RealSR"}
    assert all(
        v["verdict"] in ("equivalent", "better", "worse", "inconclusive") for v in verdicts.values()
    )


def test_region_routed_variants_are_also_compared_with_per_image_mor(mixed_study) -> None:
    out, printed = mixed_study
    summary = json.loads((out / "summary.json").read_text())
    for variant in ("mor-spatial", "mor-region"):
        versus = summary["variants"][variant]["vs_mor"]
        assert set(versus) == {"pooled", *MIXED_GROUPS, "RealSR"}
        assert f"| {variant} | pooled | {versus['pooled']['mean']:+.4f}" in printed
    assert "vs_mor" not in summary["variants"]["mor-frozen"]


def test_region_routed_variants_are_compared_with_mor_tiled_and_it_with_mor(mixed_study) -> None:
    out, printed = mixed_study
    summary = json.loads((out / "summary.json").read_text())
    for variant in ("mor-spatial", "mor-region"):
        versus = summary["variants"][variant]["vs_tiled"]
        assert set(versus) == {"pooled", *MIXED_GROUPS, "RealSR"}
    assert "ΔLPIPS vs mor-tiled [95% CI]" in printed
    tiled = summary["variants"]["mor-tiled"]
    assert set(tiled["vs_mor"]) == {"pooled", *MIXED_GROUPS, "RealSR"}
    assert "vs_tiled" not in tiled


def test_mixed_runs_score_every_test_image_of_every_group(mixed_study) -> None:
    out, _ = mixed_study
    for variant in ("lora", "mor", "mor-frozen", "mor-spatial", "mor-region", "mor-tiled"):
        result = json.loads((out / variant / "seed1" / "results.json").read_text())
        assert result["images"] == ["test-a-0", "test-b-0", "test-c-0"]
        assert set(result["groups"]) == set(MIXED_GROUPS)
        for group in result["groups"].values():
            assert len(group["per_image"]["lpips"]) == 3 and len(group["per_image"]["psnr"]) == 3
            assert ("real_experts" in group) == (variant != "lora")
        assert ("swap_change" in result) == (variant == "mor")
        realsr = json.loads((out / variant / "seed1" / "realsr.json").read_text())
        assert len(realsr["per_image"]["lpips"]) == 2
        assert result["eval_seconds"] >= 0 and result["train_seconds"] is not None
        assert result["host"]["torch_threads"] >= 1
    assert not (out / "lora" / "seed0" / "train").exists()  # the tuning run of the chosen rate
    specialist = json.loads((out / "specialist-mild" / "seed0" / "results.json").read_text())
    assert list(specialist["groups"]) == ["mild"] and specialist["preset"] == "mordasr-mild"


def test_a_specialists_training_time_is_reported_in_minutes(mixed_study) -> None:
    out, _ = mixed_study
    run = json.loads((out / "specialist-mild" / "seed0" / "results.json").read_text())
    row = json.loads((out / "summary.json").read_text())["specialists"]["mild"]
    assert row["train_minutes"] == pytest.approx(run["train_seconds"] / 60)
    assert f"| {row['train_minutes']:.1f} |" in (out / "table.md").read_text()


def test_a_finished_mixed_study_reruns_without_training_or_scoring(
    study: ModuleType, assets: Path, mixed_set: Path, mixed_study, capsys, monkeypatch
) -> None:
    out, _ = mixed_study
    calls = []
    monkeypatch.setattr(study, "train", lambda *args, **kwargs: calls.append("train"))
    monkeypatch.setattr(study, "score_group", lambda *args, **kwargs: calls.append("score"))
    assert study.main(_mixed_argv(assets, mixed_set, out)) == 0
    assert calls == []
    assert capsys.readouterr().out.strip() == (out / "table.md").read_text().strip()


def test_mor_frozen_routes_every_image_by_the_mean_training_pool_input(
    study: ModuleType, assets: Path, mixed_set: Path, mixed_study, tmp_path: Path, monkeypatch
) -> None:
    out, _ = mixed_study
    frozen = json.loads((out / "mor-frozen" / "seed0" / "results.json").read_text())
    (pool,) = (out / "pools" / "seed0").glob("pool-*.safetensors")
    assert frozen["frozen_source"].startswith(f"training pool {pool.name}")
    expected = load_file(pool)["scores"].float().mean(dim=0)
    assert torch.allclose(torch.tensor(frozen["frozen_scores"]), expected)
    shutil.copytree(out, tmp_path / "out")
    for name in ("results.json", "realsr.json"):
        (tmp_path / "out" / "mor-frozen" / "seed0" / name).unlink()
    seen = []
    forward = study.MoRSuperResolver.forward

    def spy(self, lr, scores=None):
        seen.append(scores)
        return forward(self, lr, scores)

    monkeypatch.setattr(study.MoRSuperResolver, "forward", spy)
    assert study.main(_mixed_argv(assets, mixed_set, tmp_path / "out")) == 0
    assert len(seen) == 2 * 3 + 2  # the test images of both groups, then RealSR
    assert all(torch.equal(s, expected[None]) for s in seen)


def test_mor_spatial_trains_on_window_scores_in_pools_of_its_own(mixed_study) -> None:
    out, _ = mixed_study
    config = json.loads((out / "mor-spatial" / "seed0" / "train" / "config.json").read_text())
    assert (config["model"]["variant"], config["model"]["router_scores_from"]) == ("mor", "windows")
    assert len(list((out / "pools" / "mor-spatial-seed0").glob("pool-*.safetensors"))) == 1
    assert not (out / "mor-region" / "seed0" / "train").exists()  # scores the mor run


def test_mor_spatial_also_trains_on_crops_with_a_degradation_border(mixed_study) -> None:
    out, _ = mixed_study
    spatial = json.loads((out / "mor-spatial" / "seed0" / "train" / "config.json").read_text())
    plain = json.loads((out / "mor" / "seed0" / "train" / "config.json").read_text())
    presets = spatial["degradation"]["preset"]
    assert presets == [*plain["degradation"]["preset"], "mordasr-halves"]


def test_mor_spatial_and_mor_region_are_scored_with_region_routing_only(
    study: ModuleType, assets: Path, mixed_set: Path, mixed_study, tmp_path: Path, monkeypatch
) -> None:
    out, _ = mixed_study
    shutil.copytree(out, tmp_path / "out")
    for variant in ("mor-spatial", "mor-region"):
        for seed in (0, 1):
            for name in ("results.json", "realsr.json"):
                (tmp_path / "out" / variant / f"seed{seed}" / name).unlink()
    routings, forwards = [], []
    prepare, forward = study.MoRSuperResolver.prepare, study.MoRSuperResolver.forward

    def prepare_spy(self, lr, scores=None, *, routing="image", region_window=64):
        routings.append((routing, region_window))
        return prepare(self, lr, scores, routing=routing, region_window=region_window)

    def forward_spy(self, lr, scores=None):
        forwards.append(scores)
        return forward(self, lr, scores)

    monkeypatch.setattr(study.MoRSuperResolver, "prepare", prepare_spy)
    monkeypatch.setattr(study.MoRSuperResolver, "forward", forward_spy)
    monkeypatch.setattr(study, "train", lambda *args, **kwargs: pytest.fail("trained again"))
    assert study.main(_mixed_argv(assets, mixed_set, tmp_path / "out")) == 0
    window = study.REGION_GRID["region_window"]
    assert routings == [("region", window)] * 2 * 2 * (2 * 3 + 2)  # 2 x 3 test images, 2 RealSR
    assert forwards == []
    for variant in ("mor-spatial", "mor-region"):
        result = json.loads((tmp_path / "out" / variant / "seed0" / "results.json").read_text())
        assert result["routing"] == "region" and "swap_change" not in result
        assert result["region_grid"] == study.REGION_GRID


def test_mor_tiled_routes_the_mor_run_per_image_on_the_region_grids_tiles(
    study: ModuleType, assets: Path, mixed_set: Path, mixed_study, tmp_path: Path, monkeypatch
) -> None:
    out, _ = mixed_study
    shutil.copytree(out, tmp_path / "out")
    for seed in (0, 1):
        for name in ("results.json", "realsr.json"):
            (tmp_path / "out" / "mor-tiled" / f"seed{seed}" / name).unlink()
    made = []
    upscaler = study.Upscaler

    def spy(model, **kwargs):
        made.append((kwargs["routing"], kwargs["tile"], kwargs["tile_overlap"]))
        return upscaler(model, **kwargs)

    monkeypatch.setattr(study, "Upscaler", spy)
    monkeypatch.setattr(study, "train", lambda *args, **kwargs: pytest.fail("trained again"))
    assert study.main(_mixed_argv(assets, mixed_set, tmp_path / "out")) == 0
    grid = study.REGION_GRID
    assert made and set(made) == {("image", grid["tile"], grid["tile_overlap"])}
    result = json.loads((tmp_path / "out" / "mor-tiled" / "seed0" / "results.json").read_text())
    assert (result["routing"], result["tiled"]) == ("image", True)
    assert "swap_change" not in result
    assert not (tmp_path / "out" / "mor-tiled" / "seed0" / "train").exists()


def test_lr_grid_keeps_the_best_validation_rate_for_every_plain_lora_run(
    study: ModuleType, assets: Path, mixed_set: Path, tmp_path: Path, monkeypatch
) -> None:
    validation = {"lora-lr1": 0.30, "lora-lr4": 0.20, "lora-lr16": 0.25}
    trained = {}

    def fake_train(config, run_dir, progress):
        trained[str(run_dir.relative_to(tmp_path))] = config.optim.lr
        return run_dir / "train" / "final"

    monkeypatch.setattr(study, "train_run", fake_train)
    monkeypatch.setattr(
        study, "validation_lpips", lambda model_dir, mixed: validation[model_dir.parents[2].name]
    )
    monkeypatch.setattr(study, "evaluate_mixed", lambda *args, **kwargs: {"eval_seconds": 0})
    settings = study.MixedSettings(
        str(assets / "tiny.yaml"), "d", 1, (), str(mixed_set), "val", None, ("lpips",),
        (1.0, 4.0, 16.0),
    )  # fmt: skip
    mixed = study.load_mixed_set(mixed_set, "val")
    runner = study.MixedStudy(settings, mixed, tmp_path, progress=False)
    for variant, seed in (("lora", 0), ("lora", 1), ("mor", 1)):
        runner.run(variant, seed)
    assert json.loads((tmp_path / "lr_grid.json").read_text())["lora"]["best"] == 4.0
    assert trained == {
        "lora-lr1/seed0": pytest.approx(1e-3),
        "lora-lr4/seed0": pytest.approx(4e-3),
        "lora-lr16/seed0": pytest.approx(16e-3),
        "lora/seed1": pytest.approx(4e-3),
        "mor/seed1": pytest.approx(1e-3),
    }
    lora0 = json.loads((tmp_path / "lora" / "seed0" / "results.json").read_text())
    assert lora0["lr_multiplier"] == 4.0


def test_lora_bf16_trains_lora_under_bfloat16_at_its_rate_on_the_same_pool(
    study: ModuleType, assets: Path, mixed_set: Path, tmp_path: Path, monkeypatch
) -> None:
    trained = {}

    def fake_train(config, run_dir, progress):
        trained[run_dir.parent.name] = config
        return run_dir / "train" / "final"

    monkeypatch.setattr(study, "train_run", fake_train)
    monkeypatch.setattr(study, "validation_lpips", lambda model_dir, mixed: 0.5)
    monkeypatch.setattr(study, "evaluate_mixed", lambda *args, **kwargs: {"eval_seconds": 0})
    settings = study.MixedSettings(
        str(assets / "tiny.yaml"), "d", 1, (), str(mixed_set), "val", None, ("lpips",),
        (4.0,),
    )  # fmt: skip
    runner = study.MixedStudy(settings, study.load_mixed_set(mixed_set, "val"), tmp_path, False)
    for variant in ("lora", "lora-bf16"):
        runner.run(variant, 1)
    plain, bf16 = trained["lora"], trained["lora-bf16"]
    assert (plain.mixed_precision, bf16.mixed_precision) == ("no", "bf16")
    assert bf16.model.variant == "lora" and bf16.optim.lr == pytest.approx(plain.optim.lr)
    assert bf16.data.pool_cache == plain.data.pool_cache


def test_the_lr_grid_trains_what_no_other_process_holds_and_waits_for_the_rest(
    study: ModuleType, assets: Path, mixed_set: Path, tmp_path: Path, monkeypatch
) -> None:
    trained = []
    monkeypatch.setattr(
        study, "train_run", lambda config, run_dir, progress: trained.append(run_dir)
    )
    monkeypatch.setattr(study, "validation_lpips", lambda model_dir, mixed: 0.5)
    settings = study.MixedSettings(
        str(assets / "tiny.yaml"), "d", 1, (), str(mixed_set), "val", None, ("lpips",),
        (1.0, 4.0),
    )  # fmt: skip
    runner = study.MixedStudy(settings, study.load_mixed_set(mixed_set, "val"), tmp_path, False)
    held = tmp_path / "lora-lr1" / "seed0"
    held.mkdir(parents=True)
    (held / ".lock").write_text(str(os.getppid()))
    with pytest.raises(study.Busy, match="lora-lr1"):
        runner.tune_lr()
    assert trained == [tmp_path / "lora-lr4" / "seed0"]
    assert not (tmp_path / "lr_grid.json").exists()


def test_only_variants_must_be_among_the_variants(
    study: ModuleType, assets: Path, mixed_set: Path, tmp_path: Path, capsys
) -> None:
    argv = [*_mixed_argv(assets, mixed_set, tmp_path / "out"), "--only-variants", "mor-no-zero"]
    assert study.main(argv) == 2
    assert "--only-variants" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_the_mixed_set_splits_validation_and_test_by_source_folder(
    study: ModuleType, mixed_set: Path
) -> None:
    mixed = study.load_mixed_set(mixed_set, "val", limit=2)
    assert mixed.validation == ("val-a-0", "val-b-0")
    assert mixed.test == ("test-a-0", "test-b-0")
    assert mixed.groups == MIXED_GROUPS
    with pytest.raises(ValueError, match="validation folder"):
        study.load_mixed_set(mixed_set, "Set14-HR")


def test_a_run_folder_held_by_a_live_process_is_busy_and_a_stale_lock_is_taken_over(
    study: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / ".lock").write_text(str(os.getppid()))
    with pytest.raises(study.Busy), study.claimed(tmp_path):
        pass
    (tmp_path / ".lock").write_text("999999999")
    with study.claimed(tmp_path):
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
    assert not (tmp_path / ".lock").exists()


def test_the_strength_ceiling_hook_appends_that_scripts_report(
    study: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "summary.md").write_text("| group | best strength |\n|---|---|\n| blur | 0.5 |\n")
    (tmp_path / "settings.json").write_text(json.dumps({"model": "default"}))
    found, section = study.strength_ceiling(tmp_path)
    assert found["settings"] == {"model": "default"}
    assert section.endswith("| blur | 0.5 |") and str(tmp_path) in section
    assert "no summary.md" in study.strength_ceiling(tmp_path / "missing")[1]


def test_the_shipped_model_and_its_backbone_are_scored_once_for_every_seed(
    study: ModuleType, assets: Path, mixed_set: Path, mixed_study, tmp_path: Path
) -> None:
    out, _ = mixed_study
    shutil.copytree(out, tmp_path / "out")
    shipped = out / "mor" / "seed0" / "train" / "final"
    argv = _mixed_argv(assets, mixed_set, tmp_path / "out")
    at = argv.index("--variants") + 1
    argv[at:at] = ["default", "backbone"]
    assert study.main([*argv, "--shipped", str(shipped)]) == 0
    for variant, strength in (("default", 1.0), ("backbone", 0.0)):
        assert sorted(p.name for p in (tmp_path / "out" / variant).iterdir()) == ["seed0"]
        result = json.loads((tmp_path / "out" / variant / "seed0" / "results.json").read_text())
        assert result["strength"] == strength and result["model_dir"] == str(shipped)
        assert ("real_experts" in result["groups"]["mild"]) == (variant == "default")
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| default | pooled | fixed |" in table and "| backbone | RealSR | fixed |" in table
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["variants"]["backbone"]["vs_lora"]["pooled"]["seeds"] == 2
    assert set(summary["shipping"]["variants"]) >= {"default", "lora", "mor", "backbone"}


def test_the_shipping_rule_takes_the_lowest_pooled_lpips_that_breaks_no_limit(
    study: ModuleType,
) -> None:
    def row(lpips: float, pooled: str, worst: float, psnr: float) -> dict:
        test = {"mean": lpips - 0.30, "verdict": pooled}
        return {
            "metrics": {"pooled": {"lpips": lpips}, "RealSR": {"psnr": psnr}},
            "vs_default": {"pooled": test, "noise": {"mean": worst}, "blur": {"mean": 0.0}},
        }

    summary = {
        "groups": ["noise", "blur"],
        "variants": {
            "default": {"metrics": {"pooled": {"lpips": 0.30}, "RealSR": {"psnr": 26.0}}},
            "backbone": row(0.31, "worse", 0.01, 25.7),
            "a": row(0.28, "better", 0.003, 26.0),  # a group worse by more than the margin
            "b": row(0.285, "better", 0.001, 25.5),  # RealSR 0.2 dB below the backbone
            "c": row(0.29, "inconclusive", 0.002, 25.65),
        },
    }
    shipping = study.shipping_rule(summary)
    assert {v: r["eligible"] for v, r in shipping["variants"].items()} == {
        "default": True, "backbone": False, "a": False, "b": False, "c": True,
    }  # fmt: skip
    assert shipping["winner"] == "c"


def test_a_study_folder_pinned_with_the_retired_realsr_setting_still_takes_calls(
    study: ModuleType, mixed_study, tmp_path: Path
) -> None:
    out, _ = mixed_study
    pinned = json.loads((out / "study.json").read_text())
    (tmp_path / "study.json").write_text(json.dumps({**pinned, "realsr": None}))
    settings = study.MixedSettings(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in pinned.items()}
    )
    study.pin_settings(tmp_path, settings)
    (tmp_path / "study.json").write_text(json.dumps({**pinned, "realsr": ["LR", "HR"]}))
    with pytest.raises(ValueError, match="realsr"):
        study.pin_settings(tmp_path, settings)


def test_the_seed_to_ship_is_chosen_on_validation_and_checked_alone(study: ModuleType) -> None:
    groups = ("noise", "blur")

    def run(seed: int, noise: float, psnr: float) -> dict:
        per_image = {"noise": [noise] * 8, "blur": [0.30] * 8}
        return {
            "seed": seed,
            "model_dir": f"m{seed}",
            "images": ["a"],
            "groups": {
                g: {"per_image": {"lpips": v}, "means": {"lpips": v[0]}}
                for g, v in per_image.items()
            },
            "realsr": {"per_image": {"lpips": [0.2] * 4}, "means": {"lpips": 0.2, "psnr": psnr}},
        }

    shipped = [run(s, 0.30, 26.0) for s in (0, 1)]
    runs = [run(0, 0.28, 26.0), run(1, 0.305, 26.0)]  # seed 1 is worse on the test split
    ship = study.seed_to_ship(runs, shipped, groups, {0: 0.31, 1: 0.29}, 25.7)
    assert (ship["seed"], ship["model_dir"]) == (1, "m1")
    assert ship["worst_group"] == "noise" and ship["worst_group_delta"] == pytest.approx(0.005)
    assert not ship["meets_rule"]
    assert study.seed_to_ship(runs, shipped, groups, {0: 0.29, 1: 0.31}, 25.7)["meets_rule"]
