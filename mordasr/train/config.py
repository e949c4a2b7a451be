"""Training options, read from YAML into typed dataclasses (unknown keys are errors)."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

MixedPrecision = Literal["no", "fp16", "bf16"]


@dataclass
class DataConfig:
    """Where training images come from and how they are cut."""

    hr_dirs: list[str] = field(default_factory=list)
    """Folders of clean high-resolution images (searched recursively); relative paths are
    resolved against the config file's folder."""
    patch_size: int = 256
    """Side of the square HR crops; the LR side is ``patch_size // scale``."""
    batch_size: int = 4
    """Images per step and process (before gradient accumulation)."""
    augment: bool = True
    """Random flips and 90-degree rotations of every crop."""
    max_images: int | None = None
    """Use only the first N images (sorted by path): quick experiments and tests."""
    pool_size: int = 0
    """0: synthesise fresh pairs every step (the standard recipe). N > 0: synthesise a fixed
    pool of N pairs once (seeded) and draw batches from it, which lets a task cache work that
    depends on the input only (see the task's ``cache_trunk``): the CPU recipe."""


@dataclass
class OptimConfig:
    """Adam(W) settings for the generator's adapters and the discriminator."""

    lr: float = 1e-4
    lr_discriminator: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    """Linear learning-rate warm-up; the rate is then constant."""
    grad_clip: float | None = None
    """Clip the adapters' gradient norm to this value (None: no clipping)."""


@dataclass
class TrainConfig:
    """Everything one training run needs; see ``configs/*.yaml`` for annotated examples."""

    task: str = "realesrgan-mor"
    """Which training task (registry name): what model is trained and how."""
    output_dir: str = "runs/default"
    """Checkpoints, logs and the exported model go here (relative to the config file)."""
    seed: int = 0
    """Every random choice of step t derives from (seed, t, process), so resuming is exact."""
    total_steps: int = 1000
    mixed_precision: MixedPrecision = "no"
    gradient_accumulation_steps: int = 1
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    log_every: int = 10
    tensorboard: bool = False
    """Also log to TensorBoard (needs the `tensorboard` package); CSV is always written."""
    ema_decay: float = 0.999
    """Exponential moving average of the trainable weights; 0 disables it."""
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    model: dict[str, Any] = field(default_factory=dict)
    """Task-specific model options (backbone, MoR layout, estimator)."""
    losses: dict[str, float] = field(default_factory=dict)
    """Loss weights by name; a weight of 0 (or absence) switches the loss off."""
    degradation: dict[str, Any] = field(default_factory=dict)
    """Task-specific synthesis options (preset name, scale, overrides)."""

    def __post_init__(self) -> None:
        if self.mixed_precision is False:  # YAML reads a bare `no` as false
            self.mixed_precision = "no"
        if self.mixed_precision not in typing.get_args(MixedPrecision):
            raise ValueError(
                f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}"
            )

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a YAML file; relative paths inside it are taken from the file's folder.

        A top-level ``base: other.yaml`` (relative to the file) starts from that config and
        overrides it key by key: mappings merge recursively, any other value (a list, ``null``)
        replaces the base's. Paths keep resolving against the file that wrote them.
        """
        path = Path(path)
        config = from_dict(cls, read_yaml(path))
        folder = path.resolve().parent
        config.output_dir = str(_resolve(folder, config.output_dir))
        config.data.hr_dirs = [str(_resolve(folder, d)) for d in config.data.hr_dirs]
        return config

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for saving beside checkpoints."""
        return dataclasses.asdict(self)


def read_yaml(path: Path) -> dict[str, Any]:
    """A config file's data with its ``base`` merged in and its paths made absolute."""
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise TypeError(f"{path} must hold a mapping, got {type(data).__name__}")
    folder = path.resolve().parent
    if "output_dir" in data:
        data["output_dir"] = str(_resolve(folder, data["output_dir"]))
    section = data.get("data")
    if isinstance(section, dict) and "hr_dirs" in section:
        section["hr_dirs"] = [str(_resolve(folder, d)) for d in section["hr_dirs"]]
    base = data.pop("base", None)
    if base is None:
        return data
    return merge(read_yaml(folder / base), data)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override``: nested mappings merge, other values replace."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build dataclass ``cls`` from nested dicts, converting nested dataclasses and tuples."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} expects a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value)
    return cls(**kwargs)


def _convert(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return from_dict(arg, value)
    return value
