"""Training configs that start from a ``base`` config and override it."""

from __future__ import annotations

from pathlib import Path

from mordasr.train.config import TrainConfig, merge

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
