"""Training checkpoints: safetensors for every tensor, JSON for the rest, written atomically.

Layout of ``<output_dir>/checkpoints/step_00000500/``:

- ``tensors.safetensors`` — named tensor groups (adapters, EMA, discriminator...) as ``group/name``;
- ``optimizers.safetensors`` — every optimizer's per-parameter state tensors;
- ``state.json`` — step, optimizer hyper-parameters and scalar state, and free-form extras.

A checkpoint is first written to a temporary folder beside its final place and then renamed, so a
crash never leaves a half-written checkpoint where resuming would find it. A checkpoint can still
be damaged afterwards (a full disk, a copy cut short, a file deleted by hand): :func:`verify` checks
that every file is present and complete without loading the tensors, and
:func:`latest_verified_checkpoint` picks the newest checkpoint that passes, saying why it skipped
newer ones.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

PREFIX = "step_"
FILES = ("tensors.safetensors", "optimizers.safetensors", "state.json")
"""The files of a checkpoint folder."""
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2,
    "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip


class CheckpointError(ValueError):
    """A checkpoint folder is incomplete or damaged (the message says which file and how)."""


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
        # Checkpoints newer than this one (left by a run resumed from an older one) are not
        # counted or deleted: they are replaced when the run reaches their step.
        older = [p for p in list_checkpoints(output_dir) if checkpoint_step(p) <= step]
        for old in older[:-keep]:
            shutil.rmtree(old)
    return final


def checkpoint_step(path: str | Path) -> int:
    """The step a checkpoint folder is named after."""
    return int(Path(path).name[len(PREFIX) :])


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX) :].isdigit()
    ]
    return sorted(found, key=checkpoint_step)


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is not complete (header parsed, sizes checked), or None."""
    size = path.stat().st_size
    with path.open("rb") as file:
        head = file.read(8)
        if len(head) < 8:
            return f"{path.name} is truncated ({size} bytes, no header)"
        (header_size,) = struct.unpack("<Q", head)
        if header_size > size - 8:
            return f"{path.name} is truncated ({size} bytes, header of {header_size})"
        try:
            header = json.loads(file.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return f"{path.name} has an unreadable header"
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = entry["data_offsets"]
            width = _DTYPE_BYTES.get(entry["dtype"])  # dtypes not listed: offsets only
            expected = stop - start if width is None else math.prod(entry["shape"]) * width
        except (KeyError, TypeError, ValueError):
            return f"{path.name} has an unreadable entry {name!r}"
        if stop - start != expected:
            return f"{path.name}: {name!r} holds {stop - start} bytes, not {expected}"
        end = max(end, stop)
    expected_size = 8 + header_size + end
    if size != expected_size:
        return f"{path.name} is truncated ({size} of {expected_size} bytes)"
    return None


def _state_problem(path: Path) -> str | None:
    try:
        state = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"{path.name} does not parse ({error})"
    if not isinstance(state, dict) or not {"step", "optimizers", "extra"} <= state.keys():
        return f"{path.name} lacks step, optimizers or extra"
    return None


def verify(path: str | Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from (a missing file, a truncated safetensors
    file, an unparseable ``state.json``), or None when it is complete. Reads headers only."""
    path = Path(path)
    for name in FILES:
        if not (path / name).is_file():
            return f"{name} is missing"
    try:
        problems = (
            _safetensors_problem(path / FILES[0]),
            _safetensors_problem(path / FILES[1]),
            _state_problem(path / FILES[2]),
        )
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    return next((problem for problem in problems if problem), None)


def latest_verified_checkpoint(output_dir: str | Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint that :func:`verify` passes, and why each newer one was skipped.

    Raises :class:`CheckpointError` when checkpoints exist but none verifies: starting over
    would silently throw the run away (and prune the damaged checkpoints).
    """
    skipped: list[str] = []
    for path in reversed(list_checkpoints(output_dir)):
        problem = verify(path)
        if problem is None:
            return path, skipped
        skipped.append(f"{path.name}: {problem}")
    if skipped:
        raise CheckpointError(
            f"no checkpoint of {output_dir} can be resumed from ({'; '.join(skipped)}); "
            "repair or move them away, or start over with --no-resume"
        )
    return None, skipped


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint folder written by :func:`save_checkpoint`; raises
    :class:`CheckpointError` (one line) if it is incomplete or damaged."""
    path = Path(path)
    problem = verify(path)
    if problem is not None:
        raise CheckpointError(f"checkpoint {path} cannot be resumed from: {problem}")
    try:
        return _read(path)
    except (KeyError, ValueError, OSError, SafetensorError) as error:
        raise CheckpointError(f"checkpoint {path} cannot be resumed from: {error}") from error


def _read(path: Path) -> Checkpoint:
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
