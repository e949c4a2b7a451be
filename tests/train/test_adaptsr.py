"""AdaptSR in the SR task (issue 31): full fine-tuning, the step schedule, the allocation report
and the compact recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_models import photo, tiny_compact_backbone

from mordasr.mor.allocate import params_per_rank, uniform_budget
from mordasr.nets.loaders import load_network
from mordasr.nets.srvgg import SRVGGNetCompact
from mordasr.sr import PlainSR, load_sr_model
from mordasr.train.checkpoint import list_checkpoints, load_checkpoint
from mordasr.train.config import ConfigError, TrainConfig, from_dict
from mordasr.train.trainer import build_task, make_accelerator, train

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "adaptsr_compact.yaml"


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("adaptsr_assets")
    (root / "hr").mkdir()
    for i in range(2):
        Image.fromarray(photo(128, 128, seed=i)).save(root / "hr" / f"{i}.png")
    tiny_compact_backbone(root / "compact.pth")
    return root


def _config(assets: Path, out: Path, **changes: object) -> TrainConfig:
    data: dict[str, object] = {
        "output_dir": str(out),
        "total_steps": 2,
        "checkpoint_every": 1,
        "ema_decay": 0.0,
        "data": {"hr_dirs": [str(assets / "hr")], "patch_size": 128, "batch_size": 2},
        "model": {
            "backbone": str(assets / "compact.pth"),
            "variant": "lora",
            "mor": {
                "target_modules": r"body\.\d+",
                "num_shared": 4,
                "num_routed": 0,
                "num_zero": 0,
                "top_k": 0,
                "conv_variant": "1x1_kxk",
            },
        },
        "degradation": {"preset": "realesrgan", "scale": 4},
        "optim": {"lr": 1e-3},
        "losses": {"l1": 1.0},
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            data[section] = {**data[section], name: value}  # type: ignore[dict-item]
        else:
            data[key] = value
    return from_dict(TrainConfig, data)


def test_full_finetuning_trains_the_backbone_and_exports_a_plain_model(
    assets: Path, tmp_path: Path
) -> None:
    config = _config(assets, tmp_path / "ft", model__full_finetune=True)
    train(config, progress=False)
    checkpoint = load_checkpoint(list_checkpoints(config.output_dir)[-1]).tensors
    assert set(checkpoint["backbone"]) == set(load_network(assets / "compact.pth").state_dict())
    model = load_sr_model(tmp_path / "ft" / "final")
    assert isinstance(model, PlainSR)
    before = load_network(assets / "compact.pth").state_dict()
    after = model.backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_full_finetuning_refuses_a_rank_allocation(assets: Path, tmp_path: Path) -> None:
    config = _config(assets, tmp_path, model__full_finetune=True, model__allocate={"budget": 1000})
    with pytest.raises(ConfigError, match="full_finetune"):
        build_task(config, make_accelerator(config, cpu=True))


def test_milestones_cut_the_rate_by_gamma_each(assets: Path, tmp_path: Path) -> None:
    config = _config(assets, tmp_path, optim={"lr": 1.0, "milestones": [2, 4], "gamma": 0.5})
    task = build_task(config, make_accelerator(config, cpu=True))
    assert [task._set_lr(step) for step in range(6)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert task.optimizer_g.param_groups[0]["lr"] == 0.25


@pytest.mark.parametrize(
    ("optim", "message"),
    [({"milestones": [4, 2]}, "milestones"), ({"gamma": 0.0}, "gamma")],
)
def test_a_bad_schedule_is_refused(
    assets: Path, tmp_path: Path, optim: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(assets, tmp_path, optim=optim)


def test_the_allocation_report_records_ranks_importance_and_stability(
    assets: Path, tmp_path: Path
) -> None:
    allocate = {"budget": 400, "batches": 1, "stability_batches": 3, "scorer": "taylor"}
    config = _config(assets, tmp_path / "alloc", model__allocate=allocate)
    build_task(config, make_accelerator(config, cpu=True))
    report = json.loads((tmp_path / "alloc" / "allocation.json").read_text())
    assert report["scorer"] == "taylor"
    assert set(report["layers"]) == {"body.0", "body.2", "body.4", "body.6"}
    spent = sum(layer["rank"] * layer["cost_per_rank"] for layer in report["layers"].values())
    assert spent == report["spent"] <= 400
    assert report["stability"]["batches"] == 3
    assert -1.0 <= report["stability"]["spearman_min"] <= report["stability"]["spearman_mean"] <= 1


def test_the_compact_recipe_spends_the_cost_of_uniform_rank_8_on_every_convolution() -> None:
    config = TrainConfig.from_yaml(RECIPE)
    net = SRVGGNetCompact()
    mor = config.model.mor
    convs = {n: m for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert [n for n in convs if mor.matches(n)] == list(convs)
    cost = {n: params_per_rank(m, mor.conv_variant) for n, m in convs.items()}
    assert config.model.allocate.budget == uniform_budget(cost, 8)
    assert config.model.backbone == "realesr-animevideov3"
    assert config.optim.milestones and max(config.optim.milestones) < config.total_steps
