"""Training configs: typed sections checked at load time, and ``base`` configs overridden."""

from __future__ import annotations

from pathlib import Path

import pytest

from mordasr.cli import main
from mordasr.mor import MoRConfig
from mordasr.train.config import (
    TASK_SECTIONS,
    ConfigError,
    SDLosses,
    SDModelSection,
    SRLosses,
    SRModelSection,
    TrainConfig,
    merge,
)

BASE = """\
output_dir: runs/base
total_steps: 400
data:
  hr_dirs: [images]
  batch_size: 4
model:
  backbone: realesrgan-x4plus
  allocate: {budget: 1000}
  mor: {num_shared: 8, num_zero: 4, target_modules: [a, b]}
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_override_merges_mappings_and_replaces_other_values(tmp_path: Path) -> None:
    _write(tmp_path / "base.yaml", BASE)
    child = _write(
        tmp_path / "child.yaml",
        "base: base.yaml\ntotal_steps: 5\nmodel:\n  allocate: null\n"
        "  mor: {num_zero: 0, target_modules: [c]}\n",
    )
    config = TrainConfig.from_yaml(child)
    assert config.total_steps == 5
    assert config.data.batch_size == 4
    assert config.model.allocate is None
    mor = config.model.mor
    assert (mor.num_shared, mor.num_zero, mor.target_modules) == (8, 0, ["c"])
    assert config.model.backbone == "realesrgan-x4plus"


def test_paths_resolve_against_the_file_that_wrote_them(tmp_path: Path) -> None:
    _write(tmp_path / "base.yaml", BASE)
    child = _write(tmp_path / "ablations" / "child.yaml", "base: ../base.yaml\n")
    config = TrainConfig.from_yaml(child)
    assert config.data.hr_dirs == [str(tmp_path / "images")]
    assert config.output_dir == str(tmp_path / "runs" / "base")

    _write(child, "base: ../base.yaml\nmodel: {estimator_weights: heads.safetensors}\n")
    weights = TrainConfig.from_yaml(child).model.estimator_weights
    assert weights == str(tmp_path / "ablations" / "heads.safetensors")

    _write(child, "base: ../base.yaml\noutput_dir: runs/child\n")
    assert TrainConfig.from_yaml(child).output_dir == str(tmp_path / "ablations" / "runs" / "child")


def test_bases_chain(tmp_path: Path) -> None:
    _write(tmp_path / "base.yaml", BASE)
    _write(tmp_path / "middle.yaml", "base: base.yaml\nseed: 7\n")
    top = _write(tmp_path / "top.yaml", "base: middle.yaml\ntotal_steps: 1\n")
    config = TrainConfig.from_yaml(top)
    assert (config.seed, config.total_steps, config.data.batch_size) == (7, 1, 4)


def test_merge_leaves_its_inputs_untouched() -> None:
    base = {"a": {"b": 1, "c": 2}}
    assert merge(base, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}
    assert base == {"a": {"b": 1, "c": 2}}


ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_shipped_config_loads_into_its_tasks_sections(path: Path) -> None:
    config = TrainConfig.from_yaml(path)
    sections = TASK_SECTIONS[config.task]
    assert isinstance(config.model, sections.model)
    assert isinstance(config.losses, sections.losses)
    assert isinstance(config.degradation, sections.degradation)


def _error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path / "x.yaml", text)
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_yaml(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message[len(f"{path}: ") :]


SD = "task: sd21-mor\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("total_steps: ten\n", "total_steps: expected int, got str 'ten'"),
        ("totl_steps: 3\n", "totl_steps: unknown key (did you mean 'total_steps'?)"),
        ("task: sd21-mro\n", "task: unknown task 'sd21-mro' (did you mean 'sd21-mor'?)"),
        (
            "mixed_precision: fp32\n",
            "mixed_precision: expected one of 'no', 'fp16', 'bf16', 'auto'",
        ),
        ("tensorboard: 1\n", "tensorboard: expected bool, got int 1"),
        ("data: {batch_sise: 2}\n", "data.batch_sise: unknown key (did you mean 'batch_size'?)"),
        ("data: {hr_dirs: images}\n", "data.hr_dirs: expected a list of str, got str 'images'"),
        ("data: {num_wrokers: 2}\n", "data.num_wrokers: unknown key (did you mean 'num_workers"),
        ("data: {streaming: 1}\n", "data.streaming: expected bool, got int 1"),
        ("data: {num_workers: 2}\n", "data.num_workers: workers feed the streaming pipeline only"),
        ("data: {streaming: true, num_workers: -1}\n", "data.num_workers: must be >= 0, got -1"),
        ("data: {streaming: true, prefetch_factor: 0}\n", "data.prefetch_factor: must be >= 1"),
        ("optim: {lr: 1e-4}\n", "optim.lr: expected float, got str '1e-4'"),
        ("optim: {betas: [0.9]}\n", "optim.betas: expected a list of 2 (float, float)"),
        ("model: {backbnoe: x}\n", "model.backbnoe: unknown key (did you mean 'backbone'?)"),
        ("model: {scale: four}\n", "model.scale: expected int, got str 'four'"),
        ("model: {router_input: lr}\n", "model.router_input: expected one of 'scores'"),
        ("model: {router_scores_from: tiles}\n", "model.router_scores_from: expected one of"),
        ("model: {variant: loraa}\n", "model.variant: expected one of 'mor'"),
        ("model: {mor: {rnak: 3}}\n", "model.mor.rnak: unknown key"),
        ("model: {mor: {num_shraed: 3}}\n", "model.mor.num_shraed: unknown key (did you mean"),
        ("model: {mor: {top_k: 99}}\n", "model.mor: top_k must lie in [1, num_routed]"),
        ("model: {allocate: {batches: 2}}\n", "model.allocate.budget: required key is missing"),
        ("model: {allocate: {budget: lots}}\n", "model.allocate.budget: expected int, got str"),
        ("losses: {l3: 1.0}\n", "losses.l3: unknown key"),
        ("losses: {l1: high}\n", "losses.l1: expected float, got str 'high'"),
        ("degradation: {preset: mild}\n", "degradation.preset: unknown preset 'mild'"),
        ("degradation: {scale: 2.5}\n", "degradation.scale: expected int or null, got float 2.5"),
        (SD + "model: {timestep: 1000}\n", "model: timestep must lie in [0, 1000)"),
        (SD + "model: {unet_mor: {topk: 2}}\n", "model.unet_mor.topk: unknown key (did you mean"),
        (SD + "model: {vsd: {lora_rnak: 2}}\n", "model.vsd.lora_rnak: unknown key (did you mean"),
        (
            SD + "model: {discriminator: {hidden: wide}}\n",
            "model.discriminator.hidden: expected int",
        ),
        (SD + "model: {gradient_checkpointing: yes please}\n", "model.gradient_checkpointing: exp"),
        (SD + "losses: {l1: 1.0}\n", "losses.l1: unknown key"),
    ],
)
def test_a_bad_key_or_value_is_one_line_naming_the_file_and_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert _error(tmp_path, text).startswith(expected)


def test_an_error_in_a_base_config_still_names_the_key(tmp_path: Path) -> None:
    _write(tmp_path / "base.yaml", "model: {mor: {num_zreo: 1}}\n")
    assert _error(tmp_path, "base: base.yaml\n").startswith("model.mor.num_zreo: unknown key")


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "list.yaml", "[1, 2]\n")
    with pytest.raises(ConfigError, match="expected a mapping, got list"):
        TrainConfig.from_yaml(path)


def test_sections_become_the_tasks_dataclasses(tmp_path: Path) -> None:
    config = TrainConfig.from_yaml(_write(tmp_path / "sd.yaml", SD + "losses: {l2: 1}\n"))
    assert isinstance(config.model, SDModelSection) and config.model.vsd.lora_rank == 4
    assert config.losses == SDLosses(l2=1.0)
    default = TrainConfig()
    assert isinstance(default.model, SRModelSection) and default.losses == SRLosses()
    assert default.model.mor == MoRConfig()


def test_cli_prints_the_error_in_one_line_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "bad.yaml", "model:\n  mor:\n    rnak: 3\n")
    assert main(["train", str(path)]) == 1
    err = capsys.readouterr().err
    assert err == f"mordasr train: {path}: model.mor.rnak: unknown key\n"
