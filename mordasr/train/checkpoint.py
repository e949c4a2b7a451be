"""Training checkpoints: safetensors for every tensor, JSON for the rest, written atomically.

Layout of ``<output_dir>/checkpoints/step_00000500/``:

- ``tensors.safetensors`` — named tensor groups (adapters, EMA, discriminator...) as ``group/name``;
- ``optimizers.safetensors`` — every optimizer's per-parameter state tensors;
- ``state.json`` — step, optimizer hyper-parameters and scalar state, and free-form extras.

A checkpoint is first written to a temporary folder beside its final place and then renamed, so a
crash never leaves a half-written checkpoint where resuming would find it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

PREFIX = "step_"


@dataclass
class Checkpoint:
    """Everything read back from one checkpoint folder."""

    step: int
    tensors: dict[str, dict[str, Tensor]]
    optimizers: dict[str, dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)


def checkpoint_dir(output_dir: str | Path) -> Path:
    """Where a run keeps its checkpoints."""
    return Path(output_dir) / "checkpoints"


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    tensors: dict[str, dict[str, Tensor]],
    optimizers: dict[str, dict[str, Any]],
    extra: dict[str, Any] | None = None,
    keep: int | None = None,
) -> Path:
    """Write a checkpoint atomically; with ``keep`` delete all but the newest ``keep``."""
    root = checkpoint_dir(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()

    flat = {
        f"{group}/{name}": t.detach().contiguous().cpu()
        for group, named in tensors.items()
        for name, t in named.items()
    }
    save_file(flat, str(tmp / "tensors.safetensors"))
    opt_tensors, opt_meta = _flatten_optimizers(optimizers)
    save_file(opt_tensors, str(tmp / "optimizers.safetensors"))
    state = {"step": step, "optimizers": opt_meta, "extra": extra or {}}
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    _fsync_dir(tmp)

    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    if keep is not None:
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old)
    return final


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, if any."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint folder written by :func:`save_checkpoint`."""
    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    tensors: dict[str, dict[str, Tensor]] = {}
    for key, value in load_file(str(path / "tensors.safetensors")).items():
        group, name = key.split("/", 1)
        tensors.setdefault(group, {})[name] = value
    opt_tensors = load_file(str(path / "optimizers.safetensors"))
    optimizers = _unflatten_optimizers(opt_tensors, state["optimizers"])
    return Checkpoint(state["step"], tensors, optimizers, state["extra"])


def _flatten_optimizers(
    optimizers: dict[str, dict[str, Any]],
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors: dict[str, Tensor] = {}
    meta: dict[str, Any] = {}
    for opt_name, opt_state in optimizers.items():
        per_param: dict[str, dict[str, Any]] = {}
        for pid, values in opt_state["state"].items():
            entry: dict[str, Any] = {}
            for key, value in values.items():
                if isinstance(value, Tensor):
                    tensors[f"{opt_name}/{pid}/{key}"] = value.detach().contiguous().cpu()
                    entry[key] = {"tensor": True}
                else:
                    entry[key] = {"value": value}
            per_param[str(pid)] = entry
        meta[opt_name] = {"param_groups": opt_state["param_groups"], "state": per_param}
    return tensors, meta


def _unflatten_optimizers(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for opt_name, opt_meta in meta.items():
        state: dict[int, dict[str, Any]] = {}
        for pid, entry in opt_meta["state"].items():
            state[int(pid)] = {
                key: tensors[f"{opt_name}/{pid}/{key}"] if spec.get("tensor") else spec["value"]
                for key, spec in entry.items()
            }
        out[opt_name] = {"state": state, "param_groups": opt_meta["param_groups"]}
    return out


def _fsync_dir(path: Path) -> None:
    for child in path.iterdir() if path.is_dir() else []:
        if child.is_file():
            with open(child, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
