"""The training loop on a tiny RRDBNet: resume equivalence, checkpoints, logs and export."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from checkpoint_helpers import assert_same_tensors
from launch_helpers import free_port
from PIL import Image

from mordasr.degrade import PRESETS
from mordasr.infer.cpu import CpuFeatures
from mordasr.mor import route
from mordasr.nets.rrdbnet import RRDBNet
from mordasr.sr.mor_sr import MoRSuperResolver
from mordasr.train import trainer
from mordasr.train.checkpoint import list_checkpoints, load_checkpoint
from mordasr.train.cli import apply_overrides
from mordasr.train.config import ConfigError, TrainConfig, from_dict
from mordasr.train.data import step_generator
from mordasr.train.trainer import build_task, make_accelerator, resolve_mixed_precision, train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("assets")
    images = root / "hr"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        smooth = rng.random((8, 8, 3))
        big = np.kron(smooth, np.ones((16, 16, 1))) + 0.1 * rng.random((128, 128, 3))
        Image.fromarray((255 * big.clip(0, 1)).astype(np.uint8)).save(images / f"{i}.png")
    torch.manual_seed(0)
    net = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4)
    torch.save({"params_ema": net.state_dict()}, root / "tiny_rrdb.pth")
    return root


def _config(assets: Path, out: Path, **changes: object) -> TrainConfig:
    data = {
        "task": "realesrgan-mor",
        "output_dir": str(out),
        "seed": 3,
        "total_steps": 4,
        "checkpoint_every": 2,
        "keep_checkpoints": 5,
        "log_every": 1,
        "ema_decay": 0.9,
        "data": {"hr_dirs": [str(assets / "hr")], "patch_size": 128, "batch_size": 2},
        "optim": {"lr": 1e-3},
        "model": {
            "backbone": str(assets / "tiny_rrdb.pth"),
            "discriminator_feat": 4,
            "mor": {
                "target_modules": r"conv_(body|up1|up2|hr)|body\.0\.rdb3\.conv5",
                "num_shared": 2,
                "num_routed": 6,
                "num_zero": 2,
                "top_k": 2,
            },
        },
        "degradation": {"preset": "realesrgan", "scale": 4},
        "losses": {"l1": 1.0, "lpips": 0.5, "gan": 0.1, "balance": 0.01},
    }
    data.update(changes)
    return from_dict(TrainConfig, data)


def test_resumed_run_equals_an_uninterrupted_one(assets: Path, tmp_path: Path) -> None:
    losses = {"l1": 1.0, "gan": 0.1, "balance": 0.01}
    straight = train(_config(assets, tmp_path / "straight", losses=losses), progress=False)
    split_cfg = _config(assets, tmp_path / "split", losses=losses)
    train(split_cfg, stop_at=2, progress=False)
    assert [p.name for p in list_checkpoints(split_cfg.output_dir)] == ["step_00000002"]
    train(split_cfg, progress=False)

    a = load_checkpoint(list_checkpoints(straight)[-1])
    b = load_checkpoint(list_checkpoints(split_cfg.output_dir)[-1])
    assert a.step == b.step == 4
    assert a.tensors.keys() == b.tensors.keys() == {"adapter", "ema", "discriminator"}
    assert_same_tensors(a, b)
    for name in a.optimizers:
        state_a, state_b = a.optimizers[name]["state"], b.optimizers[name]["state"]
        for pid in state_a:
            assert torch.equal(state_a[pid]["exp_avg"], state_b[pid]["exp_avg"])


def test_training_changes_the_adapters_and_logs_every_step(assets: Path, tmp_path: Path) -> None:
    out = train(_config(assets, tmp_path / "run", total_steps=2), progress=False)
    with (out / "log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert {"l1", "lpips", "gan_g", "balance", "d_real", "d_fake", "zero_experts"} <= set(rows[0])
    adapter = load_checkpoint(list_checkpoints(out)[-1]).tensors["adapter"]
    routed_b = [t for name, t in adapter.items() if name.endswith("routed_B")]
    assert any(t.abs().sum() > 0 for t in routed_b)


def test_only_the_newest_checkpoints_are_kept(assets: Path, tmp_path: Path) -> None:
    cfg = _config(
        assets, tmp_path / "keep", checkpoint_every=1, keep_checkpoints=2, losses={"l1": 1.0}
    )
    train(cfg, progress=False)
    assert [p.name for p in list_checkpoints(cfg.output_dir)] == [
        "step_00000003",
        "step_00000004",
    ]


def test_finished_run_exports_a_loadable_model(assets: Path, tmp_path: Path) -> None:
    cfg = _config(assets, tmp_path / "export", total_steps=2, losses={"l1": 1.0})
    out = train(cfg, progress=False)
    model = MoRSuperResolver.from_pretrained(out / "final")
    lr = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        sr = model(lr)
    assert sr.shape == (1, 3, 128, 128)


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(
        ConfigError, match=r"^totl_steps: unknown key \(did you mean 'total_steps'\?\)$"
    ):
        from_dict(TrainConfig, {"totl_steps": 3})


def test_a_bare_no_for_mixed_precision_means_no(assets: Path, tmp_path: Path) -> None:
    cfg = apply_overrides(_config(assets, tmp_path), ["mixed_precision=no"])
    assert cfg.mixed_precision == "no"
    with pytest.raises(ValueError, match="mixed_precision"):
        apply_overrides(cfg, ["mixed_precision=fp32"])


@pytest.mark.parametrize(
    ("flags", "expected"), [({"amx_bf16"}, "bf16"), ({"avx512_bf16"}, "bf16"), ({"avx2"}, "no")]
)
def test_auto_precision_is_bf16_only_on_a_cpu_that_computes_it_natively(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], expected: str
) -> None:
    monkeypatch.setattr(trainer, "cpu_features", lambda: CpuFeatures("x86_64", frozenset(flags)))
    assert resolve_mixed_precision("auto", cpu=True) == expected


def test_a_set_precision_is_kept_whatever_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer, "cpu_features", lambda: CpuFeatures("x86_64", frozenset()))
    assert resolve_mixed_precision("bf16", cpu=True) == "bf16"


def test_a_run_with_auto_precision_says_and_records_the_one_it_used(
    assets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(trainer, "cpu_features", lambda: CpuFeatures("x86_64", frozenset()))
    out = tmp_path / "run"
    train(_config(assets, out, total_steps=1, mixed_precision="auto"), progress=False, cpu=True)
    assert json.loads((out / "config.json").read_text())["mixed_precision"] == "no"
    assert "mixed_precision auto: no" in capsys.readouterr().err


def test_overrides_reach_nested_fields(assets: Path, tmp_path: Path) -> None:
    cfg = apply_overrides(_config(assets, tmp_path), ["data.batch_size=7", "optim.lr=0.5"])
    assert cfg.data.batch_size == 7
    assert cfg.optim.lr == 0.5
    assert cfg.optim.betas == (0.9, 0.99)


def test_rank_allocation_spends_the_budget_and_is_reused_on_resume(
    assets: Path, tmp_path: Path
) -> None:
    cfg = _config(assets, tmp_path / "alloc", total_steps=2, losses={"l1": 1.0})
    cfg.model.mor.target_modules = r"conv_(body|up1|up2|hr|last)|body\.0\.rdb\d\.conv\d"
    cfg = apply_overrides(cfg, ["model.allocate={budget: 3000, batches: 1}"])
    train(cfg, stop_at=1, progress=False)
    saved = Path(cfg.output_dir) / "allocated_mor.json"
    allocated = saved.read_text()
    adapter = load_checkpoint(list_checkpoints(cfg.output_dir)[-1]).tensors["adapter"]
    factors = [t for name, t in adapter.items() if not name.endswith("gate.weight")]
    assert 0 < sum(t.numel() for t in factors) <= 3000
    train(cfg, progress=False)
    assert saved.read_text() == allocated


def test_cached_trunk_features_give_the_same_output_as_the_full_network(
    assets: Path, tmp_path: Path
) -> None:
    cfg = _config(assets, tmp_path / "pool", losses={"l1": 1.0})
    cfg.data.pool_size = 3
    cfg.model.cache_trunk = True
    cfg.model.mor.target_modules = r"conv_(body|up1|up2|hr|last)"
    task = build_task(cfg, make_accelerator(cfg, cpu=True))
    assert task.trunk_start == 1
    batch = task._draw(step_generator(0, 0))
    with torch.no_grad(), route(task.net_g, batch["scores"]).applied(task.net_g):
        torch.testing.assert_close(task._generate(batch), task.net_g(batch["lr"]))


def test_pooled_training_draws_from_a_fixed_pool(assets: Path, tmp_path: Path) -> None:
    cfg = _config(assets, tmp_path / "pooled", total_steps=2, losses={"l1": 1.0})
    cfg.data.pool_size = 4
    cfg.model.cache_trunk = True
    out = train(cfg, progress=False)
    assert (out / "final" / "mor_adapter.safetensors").is_file()


def _cached_pool_run(assets: Path, out: Path, cache: Path, seed: int = 3) -> TrainConfig:
    cfg = _config(assets, out, total_steps=2, losses={"l1": 1.0}, seed=seed)
    cfg.data.pool_size = 4
    cfg.data.pool_cache = str(cache)
    cfg.model.cache_trunk = True
    return cfg


def test_a_cached_pool_is_loaded_by_the_next_run_and_trains_alike(
    assets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "pools"
    train(_cached_pool_run(assets, tmp_path / "first", cache), progress=False)
    assert len(list(cache.glob("pool-*.safetensors"))) == 1

    def no_synthesis(*args: object) -> None:
        raise AssertionError("the cached pool should have been loaded")

    with monkeypatch.context() as patch:
        patch.setattr("mordasr.train.tasks.base.MoRTask._make_pool", no_synthesis)
        train(_cached_pool_run(assets, tmp_path / "second", cache), progress=False)
    first, second = (
        load_checkpoint(list_checkpoints(tmp_path / run)[-1]) for run in ("first", "second")
    )
    assert_same_tensors(first, second)
    train(_cached_pool_run(assets, tmp_path / "other", cache, seed=4), progress=False)
    assert len(list(cache.glob("pool-*.safetensors"))) == 2


def test_several_presets_split_every_batch_between_them(assets: Path, tmp_path: Path) -> None:
    cfg = _config(assets, tmp_path / "mix", losses={"l1": 1.0})
    cfg = apply_overrides(cfg, ["degradation.preset=[mordasr-mild, mordasr-severe]"])
    task = build_task(cfg, make_accelerator(cfg, cpu=True))
    assert task.degradations == [PRESETS["mordasr-mild"], PRESETS["mordasr-severe"]]
    lr, gt = task._batch(step_generator(0, 0))
    assert lr.shape == (2, 3, 32, 32) and gt.shape == (2, 3, 128, 128)


def test_cli_reports_a_config_typo_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mordasr.cli import main

    config = tmp_path / "bad.yaml"
    config.write_text("totl_steps: 3\n")
    assert main(["train", str(config)]) == 1
    err = capsys.readouterr().err
    assert "totl_steps" in err and err.count("\n") == 1


def test_a_truncated_newest_checkpoint_resumes_from_the_previous_one_and_ends_equal(
    assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    losses = {"l1": 1.0, "gan": 0.1, "balance": 0.01}
    straight = train(_config(assets, tmp_path / "straight", losses=losses), progress=False)
    split_cfg = _config(assets, tmp_path / "split", losses=losses, checkpoint_every=1)
    train(split_cfg, stop_at=3, progress=False)
    newest = list_checkpoints(split_cfg.output_dir)[-1] / "tensors.safetensors"
    newest.write_bytes(newest.read_bytes()[:-100])
    capsys.readouterr()
    train(split_cfg, progress=False)
    err = capsys.readouterr().err
    assert "resuming from step_00000002" in err and "step_00000003: tensors.safetensors" in err

    a = load_checkpoint(list_checkpoints(straight)[-1])
    b = load_checkpoint(list_checkpoints(split_cfg.output_dir)[-1])
    assert a.step == b.step == 4
    assert_same_tensors(a, b)
    with (Path(split_cfg.output_dir) / "log.csv").open() as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4]


def test_cli_names_a_damaged_checkpoint_in_one_line(
    assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mordasr.cli import main

    cfg = _config(assets, tmp_path / "run", total_steps=2, losses={"l1": 1.0})
    train(cfg, stop_at=2, progress=False)
    (list_checkpoints(cfg.output_dir)[-1] / "state.json").write_text('{"step": ')
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    capsys.readouterr()
    assert main(["train", str(config)]) == 1
    err = capsys.readouterr().err
    assert "state.json does not parse" in err and "--no-resume" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_gradients_sync_on_the_last_micro_batch_of_each_update_only(
    assets: Path, tmp_path: Path
) -> None:
    losses = {"l1": 1.0, "gan": 0.1}
    cfg = _config(assets, tmp_path / "accum", gradient_accumulation_steps=2, losses=losses)
    task = build_task(cfg, make_accelerator(cfg, cpu=True))
    unsynced = []
    no_sync = task.accelerator.no_sync
    task.accelerator.no_sync = lambda model: unsynced.append(model) or no_sync(model)
    logs = task.train_step(0, step_generator(0, 0))
    assert unsynced == [task.net_g, task.net_d]
    assert all(np.isfinite(logs[name]) for name in ("l1", "gan_g", "d_real", "d_fake"))


def test_warm_up_scales_every_optimisers_rate(assets: Path, tmp_path: Path) -> None:
    cfg = apply_overrides(
        _config(assets, tmp_path / "warm", losses={"l1": 1.0, "gan": 0.1}),
        ["optim.warmup_steps=4", "optim.lr=0.4", "optim.lr_discriminator=0.2"],
    )
    task = build_task(cfg, make_accelerator(cfg, cpu=True))
    assert task._set_lr(0) == pytest.approx(0.1)
    rates = {n: o.param_groups[0]["lr"] for n, o in task.optimizers.items()}
    assert rates == pytest.approx({"generator": 0.1, "discriminator": 0.05})


def test_routers_and_routed_experts_learn_at_their_own_scaled_rates(
    assets: Path, tmp_path: Path
) -> None:
    cfg = apply_overrides(
        _config(assets, tmp_path / "groups", losses={"l1": 1.0}),
        ["optim.lr=0.01", "optim.router_lr_scale=50", "optim.routed_lr_scale=4"],
    )
    task = build_task(cfg, make_accelerator(cfg, cpu=True))
    task._set_lr(0)
    names = {id(p): n.rsplit(".", 1)[-1] for n, p in task.generator_params.items()}
    rate_of = {
        names[id(p)] + ("@router" if group["lr_scale"] == 50 else ""): group["lr"]
        for group in task.optimizer_g.param_groups
        for p in group["params"]
    }
    assert rate_of["weight@router"] == pytest.approx(0.5)
    assert rate_of["routed_A"] == rate_of["routed_B"] == pytest.approx(0.04)
    assert rate_of["shared_A"] == rate_of["shared_B"] == pytest.approx(0.01)


def _streaming(assets: Path, out: Path, workers: int, **changes: object) -> TrainConfig:
    """The tiny run of :func:`_config` fed by the streaming pipeline with ``workers`` workers."""
    overrides = ["data.streaming=true", f"data.num_workers={workers}"]
    return apply_overrides(_config(assets, out, **changes), overrides)


def _same_checkpoints(a: Path, b: Path) -> None:
    first, second = (
        load_checkpoint(list_checkpoints(a)[-1]),
        load_checkpoint(list_checkpoints(b)[-1]),
    )
    assert first.step == second.step
    assert first.tensors.keys() == second.tensors.keys()
    for group in first.tensors:
        for name, tensor in first.tensors[group].items():
            assert torch.equal(tensor, second.tensors[group][name]), f"{group}/{name}"


def test_streamed_training_resumed_with_two_workers_equals_an_uninterrupted_run_without(
    assets: Path, tmp_path: Path
) -> None:
    losses = {"l1": 1.0, "gan": 0.1, "balance": 0.01}
    changes = {"losses": losses, "gradient_accumulation_steps": 2}
    straight = train(_streaming(assets, tmp_path / "straight", 0, **changes), progress=False)
    split_cfg = _streaming(assets, tmp_path / "split", 2, **changes)
    train(split_cfg, stop_at=2, progress=False)
    train(split_cfg, progress=False)
    _same_checkpoints(straight, Path(split_cfg.output_dir))
    with (straight / "log.csv").open() as fh:
        assert {row["skipped_files"] for row in csv.DictReader(fh)} == {"0"}


def test_a_corrupt_training_file_is_skipped_and_counted_in_the_log(
    assets: Path, tmp_path: Path
) -> None:
    photos = shutil.copytree(assets / "hr", tmp_path / "hr")
    (photos / "3.png").write_bytes(b"not a png")
    cfg = _streaming(assets, tmp_path / "run", 1, total_steps=2, losses={"l1": 1.0})
    cfg = apply_overrides(cfg, [f"data.hr_dirs=[{photos}]"])
    with pytest.warns(UserWarning, match="skipped unreadable training file"):
        out = train(cfg, progress=False)
    with (out / "log.csv").open() as fh:
        assert [row["skipped_files"] for row in csv.DictReader(fh)][-1] == "1"
    assert (out / "final" / "mor_adapter.safetensors").is_file()


@pytest.mark.parametrize("streaming", [False, True])
def test_hr_dirs_may_name_file_lists(assets: Path, tmp_path: Path, streaming: bool) -> None:
    listing = tmp_path / "train.txt"
    listing.write_text(f"{assets / 'hr' / '2.png'}\n{assets / 'hr' / '0.png'}\n")
    cfg = _config(assets, tmp_path / "run", losses={"l1": 1.0})
    cfg = apply_overrides(cfg, [f"data.hr_dirs=[{listing}]", f"data.streaming={streaming}"])
    task = build_task(cfg, make_accelerator(cfg, cpu=True))
    files = task.stream.dataset.files if streaming else task.sampler.files
    assert list(map(str, files)) == [str(assets / "hr" / "2.png"), str(assets / "hr" / "0.png")]


def test_a_pool_is_synthesised_from_the_streams_first_batches(assets: Path, tmp_path: Path) -> None:
    cfg = _streaming(assets, tmp_path / "pool", 1, losses={"l1": 1.0})
    cfg.data.pool_size = 4
    cfg.model.cache_trunk = True
    cfg.model.mor.target_modules = r"conv_(body|up1|up2|hr|last)"
    task = build_task(cfg, make_accelerator(cfg, cpu=True))
    assert task.pool["hidden"].shape[0] == 4
    first, second = task.stream.pair(0), task.stream.pair(1)
    assert torch.equal(task.pool["gt"], torch.cat([first[1], second[1]]))
    assert torch.equal(task.pool["lr"], torch.cat([first[0], second[0]]))


def test_two_processes_refuse_the_cached_trunk_in_one_line(assets: Path, tmp_path: Path) -> None:
    cfg = _config(assets, tmp_path / "ddp", losses={"l1": 1.0})
    cfg.data.pool_size = 4
    cfg.model.cache_trunk = True
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    port = str(free_port())
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "mordasr.cli", "train", str(config), "--cpu"],
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "OMP_NUM_THREADS": "1",
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": "2",
                "LOCAL_WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    results = [process.communicate(timeout=120) for process in processes]
    for process, (_, err) in zip(processes, results, strict=True):
        assert process.returncode == 1, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        assert "model.cache_trunk" in lines[0] and "2 processes" in lines[0]
        assert "model.cache_trunk: false" in lines[0]
    assert not list_checkpoints(cfg.output_dir)
