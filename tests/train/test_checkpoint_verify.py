"""Checkpoints are verified before resuming: a damaged one is skipped with its reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mordasr.train.checkpoint import (
    CheckpointError,
    latest_verified_checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify,
)


def _save(out: Path, step: int) -> Path:
    weight = torch.nn.Parameter(torch.randn(4, 3))
    optimizer = torch.optim.Adam([weight])
    weight.grad = torch.ones_like(weight)
    optimizer.step()
    tensors = {"adapter": {"w": weight.detach(), "b": torch.zeros(5, dtype=torch.bfloat16)}}
    return save_checkpoint(out, step, tensors, {"g": optimizer.state_dict()}, {"seen": step})


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_a_saved_checkpoint_verifies_and_loads(tmp_path: Path) -> None:
    path = _save(tmp_path, 2)
    assert verify(path) is None
    assert load_checkpoint(path).extra == {"seen": 2}


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: _truncate(p / "tensors.safetensors", -9), "tensors.safetensors is truncated"),
        (lambda p: _truncate(p / "optimizers.safetensors", 5), "no header"),
        (lambda p: _truncate(p / "state.json", 10), "state.json does not parse"),
        (lambda p: (p / "optimizers.safetensors").unlink(), "optimizers.safetensors is missing"),
        (lambda p: (p / "state.json").write_text("[]"), "lacks step"),
    ],
)
def test_damage_is_found_and_named(
    tmp_path: Path, damage: Callable[[Path], object], reason: str
) -> None:
    path = _save(tmp_path, 2)
    damage(path)
    assert reason in (verify(path) or "")
    with pytest.raises(CheckpointError, match=reason):
        load_checkpoint(path)


def test_a_trailing_byte_means_the_file_is_not_the_one_written(tmp_path: Path) -> None:
    path = _save(tmp_path, 2)
    with (path / "tensors.safetensors").open("ab") as file:
        file.write(b"\0")
    assert "tensors.safetensors" in (verify(path) or "")


def test_the_newest_checkpoint_that_verifies_is_taken_and_the_skip_explained(
    tmp_path: Path,
) -> None:
    _save(tmp_path, 2)
    _save(tmp_path, 4)
    newest = _save(tmp_path, 6)
    full_size = (newest / "tensors.safetensors").stat().st_size
    _truncate(newest / "tensors.safetensors", full_size - 10)
    (tmp_path / "checkpoints" / "step_00000004" / "state.json").unlink()
    path, skipped = latest_verified_checkpoint(tmp_path)
    assert path is not None and path.name == "step_00000002"
    assert skipped == [
        f"step_00000006: tensors.safetensors is truncated ({full_size - 10} of {full_size} bytes)",
        "step_00000004: state.json is missing",
    ]


def test_when_no_checkpoint_verifies_resuming_is_refused(tmp_path: Path) -> None:
    (_save(tmp_path, 2) / "state.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"no checkpoint .* can be resumed from"):
        latest_verified_checkpoint(tmp_path)


def test_a_run_without_checkpoints_starts_fresh(tmp_path: Path) -> None:
    assert latest_verified_checkpoint(tmp_path) == (None, [])
