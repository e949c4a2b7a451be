"""The ablation switches of the training config (paper Tables 2 and 8-12): what each builds."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_models import photo, tiny_backbone

from mordasr.mor import MoRConfig, MoRLayer, mor_layers, route
from mordasr.nets.rrdbnet import RRDBNet
from mordasr.sr.mor_sr import MoRSuperResolver
from mordasr.train.config import TrainConfig, from_dict
from mordasr.train.data import step_generator
from mordasr.train.tasks.sr import RealESRGANMoRTask, adapter_layout
from mordasr.train.trainer import build_task, make_accelerator, train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
WEIGHTS = Path(__file__).resolve().parents[2] / "mordasr" / "weights"
SHIPPED = WEIGHTS / "default"
TEMPLATE = {
    "target_modules": r"conv_(body|up1|up2|hr)",
    "num_shared": 2,
    "num_routed": 8,
    "num_zero": 2,
    "top_k": 4,
}


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ablation_assets")
    (root / "hr").mkdir()
    for i in range(2):
        Image.fromarray(photo(128, 128, seed=i)).save(root / "hr" / f"{i}.png")
    tiny_backbone(root / "tiny.pth")
    return root


def _config(assets: Path, out: Path, **model: object) -> TrainConfig:
    mor = {**TEMPLATE, **model.pop("mor", {})}
    return from_dict(
        TrainConfig,
        {
            "output_dir": str(out),
            "total_steps": 1,
            "checkpoint_every": 1,
            "ema_decay": 0.0,
            "data": {"hr_dirs": [str(assets / "hr")], "patch_size": 128, "batch_size": 2},
            "model": {"backbone": str(assets / "tiny.pth"), "mor": mor, **model},
            "degradation": {"preset": ["mordasr-mild", "mordasr-severe"], "scale": 4},
            "losses": {"l1": 1.0, "balance": 0.01},
        },
    )


def _task(assets: Path, out: Path, **model: object) -> RealESRGANMoRTask:
    config = _config(assets, out, **model)
    return build_task(config, make_accelerator(config, cpu=True))


def _layers(task: RealESRGANMoRTask) -> list[MoRLayer]:
    layers = [layer for _, layer in mor_layers(task.net_g)]
    assert len(layers) == 4
    return layers


def test_default_variant_builds_the_configured_mor(assets: Path, tmp_path: Path) -> None:
    task = _task(assets, tmp_path)
    assert task.degradation_aware
    for layer in _layers(task):
        assert (layer.config.num_real, layer.config.num_zero, layer.config.top_k) == (6, 2, 4)
        assert layer.routed_A.shape[0] == 6 and layer.router.gate.weight.shape == (8, 7)


def test_mor_without_zero_experts_has_only_real_routed_experts(
    assets: Path, tmp_path: Path
) -> None:
    for layer in _layers(_task(assets, tmp_path, variant="mor-no-zero")):
        assert layer.config.num_zero == 0
        assert layer.routed_A.shape[0] == 8 and layer.router.gate.weight.shape[0] == 8


def test_lora_moe_routes_whole_lora_experts(assets: Path, tmp_path: Path) -> None:
    task = _task(assets, tmp_path, variant="lora-moe", expert_rank=2)
    for layer in _layers(task):
        assert (layer.config.expert_rank, layer.config.num_zero, layer.config.top_k) == (2, 0, 2)
        assert layer.router.gate.weight.shape[0] == 4
        assert layer.routed_A.shape[0] == 8


def test_plain_lora_has_no_router(assets: Path, tmp_path: Path) -> None:
    for layer in _layers(_task(assets, tmp_path, variant="lora")):
        assert layer.router is None
        assert layer.shared_A.shape[0] == 2 + 6


def test_lora_16_has_the_mor_active_ranks(assets: Path, tmp_path: Path) -> None:
    for layer in _layers(_task(assets, tmp_path, variant="lora-16")):
        assert layer.router is None
        assert layer.shared_A.shape[0] == 2 + 4


@pytest.mark.parametrize(("variant", "aware"), [("mor", True), ("mor-standard-balance", False)])
def test_the_task_trains_with_the_balance_loss_of_its_variant(
    assets: Path, tmp_path: Path, variant: str, aware: bool
) -> None:
    task = _task(assets, tmp_path, variant=variant)
    batch = task._draw(step_generator(0, 0))
    with torch.no_grad(), task._routed(batch):
        losses = task._generator_losses(task._generate(batch), batch["gt"], batch["scores"])
    assert task.last_plan is not None
    wanted = task.last_plan.balance_loss(alpha=0.01, degradation_aware=aware)
    other = task.last_plan.balance_loss(alpha=0.01, degradation_aware=not aware)
    torch.testing.assert_close(losses["balance"], wanted)
    assert not torch.allclose(losses["balance"], other)


@pytest.mark.parametrize(("router_input", "dim"), [("blur-noise", 2), ("lr-features", 1920)])
def test_router_input_sets_what_the_routers_see(
    assets: Path, tmp_path: Path, router_input: str, dim: int
) -> None:
    task = _task(assets, tmp_path, router_input=router_input)
    batch = task._draw(step_generator(0, 0))
    assert batch["route"].shape == (2, dim)
    assert batch["scores"].shape == (2, 7)
    for layer in _layers(task):
        assert layer.config.score_dim == dim
        assert layer.router.gate.in_features == dim


def test_blur_noise_routing_keeps_the_blur_and_noise_scores(assets: Path, tmp_path: Path) -> None:
    batch = _task(assets, tmp_path, router_input="blur-noise")._draw(step_generator(0, 0))
    assert torch.equal(batch["route"], batch["scores"][:, [1, 2]])


def test_window_scores_route_a_pair_as_region_routing_routes_a_tile_of_the_crop(
    assets: Path, tmp_path: Path
) -> None:
    task = _task(assets, tmp_path, router_scores_from="windows")
    lr = torch.from_numpy(photo(96, 96, seed=3)).permute(2, 0, 1)[None].float() / 255
    items = task._scored(lr, lr)
    regions = MoRSuperResolver(task.net_g, task.estimator, task.spec).region_scores(lr)
    assert regions.scores.shape[-2:] == (2, 2)  # 64-px windows 32 px apart over 96 px
    torch.testing.assert_close(items["scores"], regions.for_box((0, 0, 96, 96)))
    whole = _task(assets, tmp_path)._scored(lr, lr)["scores"]
    assert not torch.allclose(items["scores"], whole, atol=1e-3)


def test_window_scores_of_a_crop_under_a_window_side_are_the_whole_crop_scores(
    assets: Path, tmp_path: Path
) -> None:
    lr = torch.from_numpy(photo(32, 32, seed=4)).permute(2, 0, 1)[None].float() / 255
    windows = _task(assets, tmp_path, router_scores_from="windows")._scored(lr, lr)["scores"]
    torch.testing.assert_close(windows, _task(assets, tmp_path)._scored(lr, lr)["scores"])


def test_window_scores_get_a_pool_of_their_own_and_leave_the_default_pool_key_alone(
    assets: Path, tmp_path: Path
) -> None:
    image = _task(assets, tmp_path)
    assert "router_scores_from" not in image.pool_key_parts()["model"]
    assert _task(assets, tmp_path, router_scores_from="windows").pool_key() != image.pool_key()


def test_yaml_zero_experts_and_top_k_reach_every_layer(assets: Path, tmp_path: Path) -> None:
    task = _task(assets, tmp_path, mor={"num_zero": 5, "top_k": 3})
    batch = task._draw(step_generator(0, 0))
    plan = route(task.net_g, batch["scores"])
    for name, layer in mor_layers(task.net_g):
        assert layer.config.num_real == 3
        decision = plan.layers[name].routing
        assert decision is not None and decision.indices.shape == (2, 3)


@pytest.mark.parametrize(
    "model",
    [
        {"variant": "lora"},
        {"variant": "lora-moe", "expert_rank": 2},
        {"variant": "mor-no-zero"},
        {"variant": "mor-standard-balance"},
        {"router_input": "blur-noise"},
        {"router_input": "lr-features"},
        {"mor": {"router_bias": True}},
        {"router_scores_from": "windows"},
    ],
    ids=[
        "lora",
        "lora-moe",
        "mor-no-zero",
        "mor-v2",
        "blur-noise",
        "lr-features",
        "bias",
        "windows",
    ],
)
def test_every_ablation_trains_a_step_and_exports_a_loadable_model(
    assets: Path, tmp_path: Path, model: dict[str, object]
) -> None:
    out = train(_config(assets, tmp_path / "run", **model), progress=False)
    exported = MoRSuperResolver.from_pretrained(out / "final")
    with torch.no_grad():
        sr = exported(torch.rand(1, 3, 32, 32))
    assert sr.shape == (1, 3, 128, 128) and torch.isfinite(sr).all()


def _ablation(name: str) -> TrainConfig:
    return TrainConfig.from_yaml(CONFIGS / "ablations" / f"{name}.yaml")


@pytest.mark.parametrize(
    ("name", "layout", "aware"),
    [
        ("mor_full", (8, 32, 4, 8, 1), True),
        ("lora", (36, 0, 0, 0, 1), True),
        ("lora_moe", (8, 8, 0, 2, 4), True),
        ("mor_v1_no_zero", (8, 32, 0, 8, 1), True),
        ("mor_v2_standard_balance", (8, 32, 4, 8, 1), False),
        ("zero_8", (8, 32, 8, 8, 1), True),
        ("rank_20", (4, 16, 2, 4, 1), True),
        ("rank_60", (12, 48, 6, 12, 1), True),
        ("topk_4", (8, 32, 4, 4, 1), True),
        ("topk_16", (8, 32, 4, 16, 1), True),
    ],
)
def test_ablation_configs_build_the_layout_of_their_table_row(
    name: str, layout: tuple[int, ...], aware: bool
) -> None:
    config = _ablation(name)
    mor, degradation_aware = adapter_layout(config.model)
    assert (mor.num_shared, mor.num_routed, mor.num_zero, mor.top_k, mor.expert_rank) == layout
    assert degradation_aware == aware
    assert config.model.allocate is None
    assert Path(config.output_dir).name == name


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("router_lr_features", "router_input", "lr-features"),
        ("router_blur_noise", "router_input", "blur-noise"),
        ("router_clip", "estimator", "clip"),
    ],
)
def test_router_ablation_configs_change_only_the_router_input(
    name: str, key: str, value: str
) -> None:
    config = _ablation(name)
    assert getattr(config.model, key) == value
    assert adapter_layout(config.model) == adapter_layout(_ablation("mor_full").model)


ROUTER_RECIPE = (
    "router_bias",
    "router_scores",
    "renormalize_gates",
    "gate_scale",
    "severity_range",
)


def test_routed_recipe_differs_from_the_default_only_in_the_routing_recipe() -> None:
    routed = TrainConfig.from_yaml(CONFIGS / "realesrgan_mor_routed.yaml")
    default = TrainConfig.from_yaml(CONFIGS / "realesrgan_mor.yaml")
    mor, default_mor = routed.model.mor, default.model.mor
    assert (mor.router_bias, mor.router_scores, mor.gate_scale) == (True, "centred", 8.0)
    assert replace(mor, **{f: getattr(default_mor, f) for f in ROUTER_RECIPE}) == default_mor
    assert Path(routed.model.estimator_weights).name == "learned_estimator_v2.safetensors"
    assert (routed.optim.router_lr_scale, routed.losses.balance) == (100.0, 0.3)
    assert (routed.data, routed.total_steps) == (default.data, default.total_steps)


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("router_bias", "router_bias", True),
        ("router_centred", "router_scores", "centred"),
        ("router_log_odds", "router_scores", "log-odds"),
    ],
)
def test_router_switch_configs_change_one_router_switch_of_mor_full(
    name: str, field: str, value: object
) -> None:
    mor, aware = adapter_layout(_ablation(name).model)
    full, full_aware = adapter_layout(_ablation("mor_full").model)
    assert getattr(mor, field) == value != getattr(full, field)
    assert (replace(mor, **{field: getattr(full, field)}), aware) == (full, full_aware)


@pytest.mark.parametrize(
    ("recipe", "shipped"), [("default.yaml", "default"), ("study_mixed.yaml", "mor-dasr")]
)
def test_each_shipped_model_is_the_layout_its_recipe_builds(recipe: str, shipped: str) -> None:
    config = TrainConfig.from_yaml(CONFIGS / recipe)
    mor, _ = adapter_layout(config.model)
    folder = WEIGHTS / shipped
    stored = MoRConfig.from_dict(json.loads((folder / "mor_config.json").read_text()))
    fields = ("num_shared", "num_routed", "num_zero", "top_k", "conv_variant")
    for field in fields + ROUTER_RECIPE:
        assert getattr(mor, field) == getattr(stored, field), field
    names = [name for name, _ in RRDBNet(num_block=23).named_modules() if name]
    assert [n for n in names if mor.matches(n)] == [n for n in names if stored.matches(n)]
    spec = json.loads((folder / "model.json").read_text())
    assert spec.get("router_input", "scores") == config.model.router_input


def test_ablations_without_allocation_adapt_the_shipped_default_layers() -> None:
    mor, _ = adapter_layout(_ablation("mor_full").model)
    shipped = MoRConfig.from_dict(json.loads((SHIPPED / "mor_config.json").read_text()))
    names = [name for name, _ in RRDBNet(num_block=23).named_modules() if name]
    assert [n for n in names if mor.matches(n)] == [n for n in names if shipped.matches(n)]
    assert not shipped.layer_overrides
