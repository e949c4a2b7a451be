"""Task ``sd21-mor`` on a tiny SD: losses, alternation, resume, export, two processes."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from accelerate.state import AcceleratorState
from checkpoint_helpers import assert_same_tensors
from launch_helpers import accelerate_launch
from PIL import Image

from mordasr.mor import mor_layers, mor_named_parameters
from mordasr.sr.sd.sr_model import OneStepSR
from mordasr.train.checkpoint import list_checkpoints, load_checkpoint
from mordasr.train.cli import apply_overrides
from mordasr.train.config import TrainConfig, from_dict
from mordasr.train.data import step_generator
from mordasr.train.trainer import build_task, make_accelerator, train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory, sd_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("sd_assets")
    images = root / "hr"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        smooth = np.kron(rng.random((4, 4, 3)), np.ones((16, 16, 1)))
        pixels = (255 * (smooth + 0.1 * rng.random((64, 64, 3))).clip(0, 1)).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"{i}.png")
    (root / "sd").symlink_to(sd_dir, target_is_directory=True)
    return root


def _data(assets: Path, out: Path, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "task": "sd21-mor",
        "output_dir": str(out),
        "seed": 3,
        "total_steps": 2,
        "checkpoint_every": 1,
        "keep_checkpoints": 5,
        "log_every": 1,
        "ema_decay": 0.9,
        "data": {"hr_dirs": [str(assets / "hr")], "patch_size": 32, "batch_size": 2},
        "optim": {"lr": 1e-3, "lr_discriminator": 1e-3},
        "model": {
            "base_model": str(assets / "sd"),
            "prompt": "a photo",
            "negative_prompt": "blurry",
            "unet_mor": {"num_shared": 2, "num_routed": 6, "num_zero": 2, "top_k": 2},
            "vae_lora_rank": 2,
            "vsd": {"lora_rank": 2},
            "discriminator": {"hidden": 8},
        },
        "degradation": {"preset": "realesrgan", "scale": 4},
        "losses": {"l2": 1.0, "vsd": 1.0, "gan": 0.1, "balance": 0.01},
    }
    data.update(changes)
    return data


def _config(assets: Path, out: Path, **changes: Any) -> TrainConfig:
    return from_dict(TrainConfig, _data(assets, out, **changes))


def _task(config: TrainConfig) -> Any:
    torch.manual_seed(config.seed)
    return build_task(config, make_accelerator(config, cpu=True))


def _log(out: Path) -> list[dict[str, str]]:
    with (out / "log.csv").open() as fh:
        return list(csv.DictReader(fh))


ALL_LOSSES = {"l2": 1.0, "lpips": 2.0, "vsd": 1.0, "gan": 0.1, "balance": 0.01}


@pytest.fixture(scope="module")
def straight(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished three-step run with every loss on (tests only read its folder)."""
    out = tmp_path_factory.mktemp("sd_runs") / "straight"
    return train(_config(assets, out, total_steps=3, losses=ALL_LOSSES), progress=False)


@dataclass
class RecordedStep:
    """One training step of a fresh default task, with what changed in each optimiser step."""

    task: Any
    logs: dict[str, float]
    order: list[tuple[str, set[str]]]
    """(optimiser, the parameter groups its step changed), in the order the steps ran."""
    changed_outside: bool
    """Whether any group changed between optimiser steps."""
    frozen_before: dict[str, dict[str, torch.Tensor]]
    """State of every network that must stay frozen, before the step."""


def _frozen(task: Any) -> dict[str, torch.nn.Module]:
    return {
        "teacher": task.vsd.real_unet,
        "hr_vae": task.hr_vae,
        "text_encoder": task.generator.text_encoder,
        "vae_decoder": task.generator.vae.decoder,
    }


@pytest.fixture(scope="module")
def recorded(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> RecordedStep:
    task = _task(_config(assets, tmp_path_factory.mktemp("sd_step") / "run"))
    groups = {
        "generator": task.generator_params,
        "variational": mor_named_parameters(task.vsd.fake_unet),
        "discriminator": dict(task.net_d.named_parameters()),
    }

    def snapshot() -> dict[str, list[torch.Tensor]]:
        return {name: [p.detach().clone() for p in ps.values()] for name, ps in groups.items()}

    def changed(before: dict[str, list[torch.Tensor]]) -> set[str]:
        after = snapshot()
        return {
            n
            for n in groups
            if any(not torch.equal(a, b) for a, b in zip(before[n], after[n], strict=True))
        }

    frozen_before = {
        n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in _frozen(task).items()
    }
    order: list[tuple[str, set[str]]] = []
    state = {"last": snapshot(), "outside": False}
    originals = {name: optimizer.step for name, optimizer in task.optimizers.items()}
    for name, optimizer in task.optimizers.items():

        def step(*args: Any, _name: str = name, **kwargs: Any) -> Any:
            state["outside"] |= bool(changed(state["last"]))
            before = snapshot()
            result = originals[_name](*args, **kwargs)
            order.append((_name, changed(before)))
            state["last"] = snapshot()
            return result

        optimizer.step = step
    logs = task.train_step(0, step_generator(0, 0))
    for name, optimizer in task.optimizers.items():
        optimizer.step = originals[name]
    return RecordedStep(task, logs, order, state["outside"], frozen_before)


def test_every_loss_is_finite_and_logged(straight: Path) -> None:
    rows = _log(straight)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    names = {"l2", "lpips", "vsd", "gan_g", "balance", "variational", "gan_d"}
    assert names <= set(rows[0])
    assert all(np.isfinite(float(r[name])) for r in rows for name in names)
    assert rows[0]["processes"] == "1"


def test_losses_decrease_on_a_fixed_batch(assets: Path, tmp_path: Path) -> None:
    optim = {"lr": 3e-3, "lr_discriminator": 3e-3}
    task = _task(_config(assets, tmp_path / "fixed", losses=ALL_LOSSES, optim=optim))
    logs = [task.train_step(0, step_generator(0, 0)) for _ in range(3)]
    for name in ("l2", "lpips", "variational", "gan_d"):
        values = [log[name] for log in logs]
        assert all(np.isfinite(values)), f"{name}: {values}"
        assert values[2] < values[0], f"{name}: {values}"


def test_each_network_changes_only_in_its_own_update(recorded: RecordedStep) -> None:
    assert not recorded.changed_outside, "parameters changed outside an optimiser step"
    assert recorded.order == [
        ("generator", {"generator"}),
        ("variational", {"variational"}),
        ("discriminator", {"discriminator"}),
    ]


def test_frozen_networks_stay_frozen(recorded: RecordedStep) -> None:
    for name, module in _frozen(recorded.task).items():
        for key, value in module.state_dict().items():
            assert torch.equal(value, recorded.frozen_before[name][key]), f"{name}.{key}"


def test_resumed_run_equals_an_uninterrupted_one(
    assets: Path, straight: Path, tmp_path: Path
) -> None:
    split = _config(assets, tmp_path / "split", total_steps=3, losses=ALL_LOSSES)
    train(split, stop_at=2, progress=False)
    train(split, progress=False)
    a = load_checkpoint(list_checkpoints(straight)[-1])
    b = load_checkpoint(list_checkpoints(split.output_dir)[-1])
    assert a.step == b.step == 3
    assert (
        a.tensors.keys() == b.tensors.keys() == {"adapter", "ema", "variational", "discriminator"}
    )
    assert_same_tensors(a, b)
    assert (
        a.optimizers.keys() == b.optimizers.keys() == {"generator", "variational", "discriminator"}
    )
    for name in a.optimizers:
        for pid, state in a.optimizers[name]["state"].items():
            assert torch.equal(state["exp_avg"], b.optimizers[name]["state"][pid]["exp_avg"])


def _streaming(assets: Path, out: Path, workers: int) -> TrainConfig:
    data = _data(assets, out, total_steps=3, losses=ALL_LOSSES)
    data["data"].update(streaming=True, num_workers=workers)
    return from_dict(TrainConfig, data)


def test_streamed_training_resumed_with_a_worker_equals_an_uninterrupted_run_without(
    assets: Path, tmp_path: Path
) -> None:
    straight = train(_streaming(assets, tmp_path / "straight", 0), progress=False)
    split = _streaming(assets, tmp_path / "split", 1)
    train(split, stop_at=1, progress=False)
    train(split, progress=False)
    a = load_checkpoint(list_checkpoints(straight)[-1])
    b = load_checkpoint(list_checkpoints(split.output_dir)[-1])
    assert a.step == b.step == 3
    assert_same_tensors(a, b)
    assert {row["skipped_files"] for row in _log(straight)} == {"0"}


def test_finished_run_exports_a_loadable_onestep_model(straight: Path) -> None:
    model = OneStepSR.from_pretrained(straight / "final")
    with torch.no_grad():
        sr = model(torch.rand(1, 3, 8, 8))
    assert sr.shape == (1, 3, 32, 32)
    trained = load_checkpoint(list_checkpoints(straight)[-1]).tensors["ema"]
    for name, tensor in model.generator.adapter_state_dict().items():
        assert torch.equal(tensor, trained[name]), name


def test_gradient_checkpointing_keeps_routing_through_the_backward_pass(
    assets: Path, recorded: RecordedStep, tmp_path: Path
) -> None:
    plain = recorded.task
    data = _data(assets, tmp_path / "ckpt")
    data["model"] = {**data["model"], "gradient_checkpointing": True}
    checkpointed = _task(from_dict(TrainConfig, data))
    assert checkpointed.generator.unet.is_gradient_checkpointing
    a = recorded.logs
    b = checkpointed.train_step(0, step_generator(0, 0))
    for name in ("l2", "vsd", "gan_g", "balance", "variational", "gan_d"):
        assert a[name] == pytest.approx(b[name], rel=1e-4), name
    for name, p in plain.generator_params.items():
        assert torch.allclose(p, checkpointed.generator_params[name], atol=1e-6), name


def test_gradient_accumulation_splits_the_step_into_micro_batches(
    assets: Path, tmp_path: Path
) -> None:
    task = _task(_config(assets, tmp_path / "accum", gradient_accumulation_steps=2))
    drawn, unsynced = [], []
    original, no_sync = task._draw, task.accelerator.no_sync
    task._draw = lambda g, index: drawn.append(index) or original(g, index)
    task.accelerator.no_sync = lambda model: unsynced.append(model) or no_sync(model)
    logs = task.train_step(1, step_generator(0, 1))
    assert drawn == [2, 3]  # batch index = step x micro-batches per step + micro-batch
    assert np.isfinite(logs["l2"])
    # every update skips the gradient sync on all but its last micro-batch
    assert unsynced == [task.net_g, task.vsd.fake_unet, task.net_d]


def test_two_processes_train_through_accelerate(assets: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    data = _data(assets, out)
    data["data"]["batch_size"] = 1
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(data))
    result = accelerate_launch(["train", str(config_path)], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _log(out)
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert {r["processes"] for r in rows} == {"2"}
    assert (out / "final" / "adapters.safetensors").is_file()


def test_paper_config_holds_the_papers_hyperparameters() -> None:
    config = TrainConfig.from_yaml(ROOT / "configs" / "mordasr_sd21.yaml")
    model = config.model
    assert config.task == "sd21-mor"
    assert model.base_model == "stabilityai/stable-diffusion-2-1-base"
    assert config.total_steps == 25_000
    assert config.optim.lr == 5e-5
    assert config.data.batch_size * config.gradient_accumulation_steps == 16
    assert config.data.patch_size == 512 and model.scale == 4
    assert config.data.streaming and config.data.num_workers > 0  # LSDIR does not fit in memory
    assert model.timestep == 999
    mor = model.unet_mor
    assert (mor.num_shared, mor.num_routed, mor.num_zero, mor.top_k) == (8, 32, 4, 8)
    assert model.vae_lora_rank == 4 and model.vsd.lora_rank == 4
    assert model.vsd.guidance_scale == 7.5
    assert model.gradient_checkpointing is True
    assert config.mixed_precision == "bf16"
    losses = config.losses
    assert (losses.l2, losses.lpips, losses.vsd, losses.gan, losses.balance) == (
        1.0,
        2.0,
        1.0,
        0.1,
        0.01,
    )


def test_paper_config_builds_on_a_local_model_folder(assets: Path, tmp_path: Path) -> None:
    config = apply_overrides(
        TrainConfig.from_yaml(ROOT / "configs" / "mordasr_sd21.yaml"),
        [
            f"model.base_model={assets / 'sd'}",
            f"data.hr_dirs=[{assets / 'hr'}]",
            f"output_dir={tmp_path / 'paper'}",
            "mixed_precision='no'",
        ],
    )
    task = _task(config)
    assert set(task.optimizers) == {"generator", "variational", "discriminator"}
    assert task.generator.unet.is_gradient_checkpointing
    layers = [layer for _, layer in mor_layers(task.generator.unet)]
    assert {layer.config.rank for layer in layers} == {40}


@pytest.fixture
def fresh_accelerate_state() -> Iterator[None]:
    """accelerate keeps one process-wide state: forget it so this test can pick bf16."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_bf16_mixed_precision_step_keeps_float32_adapters(assets: Path, tmp_path: Path) -> None:
    task = _task(_config(assets, tmp_path / "bf16", mixed_precision="bf16"))
    assert task.accelerator.mixed_precision == "bf16"
    logs = task.train_step(0, step_generator(0, 0))
    assert all(np.isfinite(logs[name]) for name in ("l2", "vsd", "gan_g", "variational", "gan_d"))
    assert {p.dtype for p in task.generator_params.values()} == {torch.float32}
