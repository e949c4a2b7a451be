"""Training options, read from YAML into typed dataclasses.

Every section is a dataclass and every value is checked against its field's type when the config
is loaded (:func:`mordasr.schema.from_mapping`), so a typo or a wrong type is one line naming the
file, the key and what was expected
(``configs/x.yaml: model.mor.rnak: unknown key (did you mean 'rank'?)``), not a traceback later.
The task-specific sections (``model``, ``losses``, ``degradation``) have one dataclass per task
(:data:`TASK_SECTIONS`), picked by the config's ``task``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from mordasr.degrade import PRESETS
from mordasr.losses.latent_gan import LatentGANConfig
from mordasr.losses.vsd import VSDConfig
from mordasr.mor import MoRConfig
from mordasr.mor.allocate import Scorer
from mordasr.mor.variants import Variant
from mordasr.schema import SchemaError, describe, from_mapping, suggest
from mordasr.sr.mor_sr import SRModelSpec
from mordasr.sr.sd import OneStepConfig

MixedPrecision = Literal["no", "fp16", "bf16", "auto"]
RouterScoresFrom = Literal["image", "windows"]
T = TypeVar("T")


class ConfigError(SchemaError):
    """A config value that does not fit its section: the message is one line that names the key
    (and, once read from a file, the file). Raised by a section's ``__post_init__``, it names the
    field, and loading puts the section's place in front of it."""


@dataclass
class DataConfig:
    """Where training images come from and how they are cut."""

    hr_dirs: list[str] = field(default_factory=list)
    """Folders of clean high-resolution images (searched recursively) and/or file lists (a
    ``.txt`` file naming one image per line, relative to the list); relative paths are resolved
    against the config file's folder."""
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
    pool_cache: str | None = None
    """A folder to keep synthesised pools in, each under a key of everything it depends on
    (seed, data, degradation, backbone, estimator, cached trunk): a later run with the same
    settings loads the pool instead of synthesising it again, so the variants of a study share
    one pool per seed. Relative paths are resolved against the config file's folder."""
    streaming: bool = False
    """False: the in-memory sampler (:class:`~mordasr.train.data.PatchSampler`), which keeps
    every image it has read decoded for the whole run: right for a few hundred photos. True:
    the streaming pipeline (:mod:`mordasr.train.dataset`), which decodes each crop from its file
    when it is needed, so memory does not grow with the dataset, and gives each process a
    disjoint share of every epoch: LSDIR-sized folders and several GPUs."""
    num_workers: int = 0
    """DataLoader worker processes that read, decode and crop ahead of the training step (and,
    when training on the CPU, synthesise the LR inputs); 0: all in the training process. Needs
    ``streaming``; results do not depend on it."""
    prefetch_factor: int = 2
    """Batches each worker prepares ahead."""

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ConfigError(f"num_workers: must be >= 0, got {self.num_workers}")
        if self.prefetch_factor < 1:
            raise ConfigError(f"prefetch_factor: must be >= 1, got {self.prefetch_factor}")
        if self.num_workers and not self.streaming:
            raise ConfigError(
                "num_workers: workers feed the streaming pipeline only; set data.streaming: true"
            )


@dataclass
class OptimConfig:
    """Adam(W) settings for the generator's adapters and the discriminator."""

    lr: float = 1e-4
    lr_discriminator: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    """Linear learning-rate warm-up of every optimiser; the rates are then constant unless
    ``milestones`` are given."""
    milestones: list[int] = field(default_factory=list)
    """Steps at which every rate is multiplied by ``gamma`` (a step schedule, as AdaptSR's
    rate cut by 25% at 50%, 75% and 90% of the run); empty: constant rates."""
    gamma: float = 0.5
    """The factor of every milestone."""
    grad_clip: float | None = None
    """Clip the generator's gradient norm to this value (None: no clipping)."""
    router_lr_scale: float = 1.0
    """The routers' rate is ``lr * router_lr_scale``. A router has a few hundred weights that
    must move far enough to reorder slots within a short run."""
    routed_lr_scale: float = 1.0
    """The routed experts' factors learn at ``lr * routed_lr_scale`` (shared ranks at ``lr``)."""

    def __post_init__(self) -> None:
        if sorted(self.milestones) != self.milestones or any(m < 1 for m in self.milestones):
            raise ConfigError(f"milestones: must be increasing steps >= 1, got {self.milestones}")
        if not self.gamma > 0:
            raise ConfigError(f"gamma: must be > 0, got {self.gamma}")


@dataclass
class DegradationSection:
    """How LR inputs are synthesised from the HR patches (both built-in tasks)."""

    preset: str | list[str] = "realesrgan"
    """A degradation preset (:data:`mordasr.degrade.PRESETS`), or several: every batch is then
    split between them, evenly over the batches (e.g. the paper's mild and severe degradations;
    :func:`mordasr.train.dataset.preset_chunks`)."""
    scale: int | None = None
    """Downscaling factor of the synthesis; None: the model's scale."""

    def __post_init__(self) -> None:
        for name in [self.preset] if isinstance(self.preset, str) else self.preset:
            if name not in PRESETS:
                raise ConfigError(f"preset: unknown preset {name!r}{suggest(name, PRESETS)}")

    @property
    def presets(self) -> list[str]:
        """The preset names as a list."""
        return [self.preset] if isinstance(self.preset, str) else list(self.preset)


@dataclass
class AllocateSection:
    """AdaptSR rank allocation (:func:`mordasr.mor.allocate_ranks`), task ``realesrgan-mor``."""

    budget: int
    """Adapter parameters to spend."""
    batches: int = 2
    """Batches the gradient importance is measured on."""
    min_rank: int = 0
    max_rank: int | None = None
    scorer: Scorer = "gradient"
    """The layer importance: AdaptSR's ``gradient`` norm, ``taylor`` (``sum |g * W|``) or
    ``weight`` norm (:func:`mordasr.mor.allocate.layer_importance`)."""
    stability_batches: int = 0
    """Score this many more batches one by one and record how alike their layer rankings are
    (Spearman, :func:`mordasr.mor.allocate.importance_stability`) in ``allocation.json``; 0:
    not measured. The allocation itself does not depend on it."""

    def __post_init__(self) -> None:
        if self.stability_batches == 1 or self.stability_batches < 0:
            raise ConfigError(f"stability_batches: 0 or >= 2, got {self.stability_batches}")


@dataclass
class SRModelSection(SRModelSpec):
    """``model:`` of task ``realesrgan-mor``: the SR model (:class:`SRModelSpec` fields) and how
    its adapters are laid out and trained."""

    mor: MoRConfig = field(default_factory=MoRConfig)
    """The adapter template; ``score_dim`` is set from ``router_input``."""
    variant: Variant = "mor"
    """One of the paper's Table 2 rows (:mod:`mordasr.mor.variants`)."""
    expert_rank: int = 4
    """Rank of each ``lora-moe`` expert."""
    allocate: AllocateSection | None = None
    """Allocate ranks per layer under a parameter budget (None: the template everywhere)."""
    full_finetune: bool = False
    """Train every weight of the backbone instead of adapters (``mor`` and ``allocate`` are
    then unused, and the run exports a plain model): the baseline of AdaptSR's comparisons."""
    discriminator_feat: int = 64
    """Width of the U-Net discriminator (when the ``gan`` loss is on)."""
    cache_trunk: bool = False
    """Keep the frozen RRDB features before the first adapter in the pool (needs
    ``data.pool_size``)."""
    router_scores_from: RouterScoresFrom = "image"
    """What each training pair's router input is computed on: the whole LR crop (``image``),
    or its region windows area-weighted over the crop, as region routing scores a tile
    (``windows``); a crop no larger than a window (64 px) is one window: the same as ``image``."""

    @property
    def spec(self) -> SRModelSpec:
        """The :class:`SRModelSpec` part: what the exported model folder records."""
        return SRModelSpec(**{f.name: getattr(self, f.name) for f in fields(SRModelSpec)})


@dataclass
class SDModelSection(OneStepConfig):
    """``model:`` of task ``sd21-mor``: the generator (:class:`OneStepConfig` fields) and the
    training-only networks."""

    gradient_checkpointing: bool = False
    """diffusers gradient checkpointing in every UNet and the VAE."""
    vsd: VSDConfig = field(default_factory=VSDConfig)
    """The VSD loss and its variational score network."""
    discriminator: LatentGANConfig = field(default_factory=LatentGANConfig)
    """The latent GAN's heads."""

    @property
    def generator(self) -> OneStepConfig:
        """The :class:`OneStepConfig` part: what the exported model folder records."""
        return OneStepConfig(**{f.name: getattr(self, f.name) for f in fields(OneStepConfig)})


def loss_section(name: str, task: str, losses: Sequence[str]) -> type:
    """A ``losses:`` section: one float weight per loss name, 0 (the default) switching it off;
    any other name is an unknown key."""
    cls = dataclasses.make_dataclass(name, [(loss, float, field(default=0.0)) for loss in losses])
    cls.__doc__ = f"``losses:`` of task ``{task}``: weights by name; 0 switches a loss off."
    cls.__module__ = __name__
    return cls


SRLosses = loss_section(
    "SRLosses", "realesrgan-mor", ("l1", "perceptual", "lpips", "gan", "balance")
)
SDLosses = loss_section("SDLosses", "sd21-mor", ("l2", "lpips", "vsd", "gan", "balance"))


@dataclass(frozen=True)
class TaskSections:
    """The dataclasses of one task's own sections."""

    model: type
    losses: type
    degradation: type = DegradationSection


TASK_SECTIONS: dict[str, TaskSections] = {
    "realesrgan-mor": TaskSections(SRModelSection, SRLosses),
    "sd21-mor": TaskSections(SDModelSection, SDLosses),
}
"""Sections by task name; a new task adds its own (:func:`mordasr.train.task.register_task`)."""


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
    """Autocast precision: ``no`` (float32), ``fp16``, ``bf16``, or ``auto``: bf16 where the
    hardware computes it natively (CPUs with AMX or AVX512-BF16, CUDA devices with bf16), float32
    elsewhere. The run's ``config.json`` records the one used."""
    gradient_accumulation_steps: int = 1
    """Micro-batches summed per update; gradients are synchronised across processes on the last."""
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    log_every: int = 10
    tensorboard: bool = False
    """Also log to TensorBoard (needs the `tensorboard` package); CSV is always written."""
    ema_decay: float = 0.999
    """Decay of the exponential moving average of the trainable weights that the export holds
    (bias-corrected: the initial weights get no share, see :class:`~mordasr.train.ema.EMA`); 0
    disables it."""
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    model: Any = None
    """The task's model section (:data:`TASK_SECTIONS`; a mapping is converted)."""
    losses: Any = None
    """The task's loss weights by name; a weight of 0 (or absence) switches the loss off."""
    degradation: Any = None
    """The task's synthesis options (:class:`DegradationSection` for the built-in tasks)."""

    def __post_init__(self) -> None:
        if self.task not in TASK_SECTIONS:
            close = suggest(self.task, TASK_SECTIONS)
            raise ConfigError(f"task: unknown task {self.task!r}{close}")
        sections = TASK_SECTIONS[self.task]
        for name in ("model", "losses", "degradation"):
            kind, value = getattr(sections, name), getattr(self, name)
            if not isinstance(value, kind):
                value = {} if value is None else value
                setattr(self, name, from_mapping(kind, value, key=name, error=ConfigError))
        for name in ("total_steps", "gradient_accumulation_steps", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a YAML file; relative paths inside it are taken from the file's folder.

        A top-level ``base: other.yaml`` (relative to the file) starts from that config and
        overrides it key by key: mappings merge recursively, any other value (a list, ``null``)
        replaces the base's. Paths keep resolving against the file that wrote them. A bad key or
        value raises :class:`ConfigError` naming the file.
        """
        path = Path(path)
        return from_mapping(cls, read_yaml(path), source=path, error=ConfigError)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for saving beside checkpoints."""
        return dataclasses.asdict(self)


MAX_YAML_VALUES = 100_000
"""Most values a config may hold once its YAML aliases are expanded: a real config has
hundreds; a few hundred bytes of nested aliases (an "alias bomb") would expand to billions."""


def _check_expanded_size(path: Path, data: Any, limit: int = MAX_YAML_VALUES) -> None:
    """Refuse ``data`` if it expands to more than ``limit`` values (aliases counted each time
    they are used); stops counting at the limit, so a bomb is refused in a few milliseconds."""
    count = 0
    pending = [data]
    while pending:
        count += 1
        if count > limit:
            raise ConfigError(
                f"{path}: more than {limit:,} values once its YAML aliases are expanded "
                "(an alias bomb?)"
            )
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list | tuple | set):
            pending.extend(value)


def _load_yaml(path: Path) -> Any:
    """One file's YAML, its size once expanded checked before anything else looks at it."""
    try:
        data = yaml.safe_load(path.read_text())
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
    _check_expanded_size(path, data)
    return data


def read_yaml(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's data with its ``base`` merged in and its paths made absolute.

    A ``base`` chain that comes back to a file it passed raises :class:`ConfigError`.
    """
    chain = (*_chain, path.resolve())
    data = _load_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, got {describe(data)}")
    folder = path.resolve().parent
    if isinstance(data.get("output_dir"), str):
        data["output_dir"] = str(_resolve(folder, data["output_dir"]))
    section = data.get("data")
    if isinstance(section, dict) and isinstance(section.get("hr_dirs"), list):
        section["hr_dirs"] = [
            str(_resolve(folder, d)) if isinstance(d, str) else d for d in section["hr_dirs"]
        ]
    if isinstance(section, dict) and isinstance(section.get("pool_cache"), str):
        section["pool_cache"] = str(_resolve(folder, section["pool_cache"]))
    model = data.get("model")
    if isinstance(model, dict) and isinstance(model.get("estimator_weights"), str):
        model["estimator_weights"] = str(_resolve(folder, model["estimator_weights"]))
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: expected a file name, got {describe(base)}")
    base_path = folder / base
    if base_path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, base_path.resolve()))
        raise ConfigError(f"{path}: base: the bases form a cycle: {cycle}")
    return merge(read_yaml(base_path, chain), data)


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


def from_dict(cls: type[T], data: Any) -> T:
    """Build dataclass ``cls`` (e.g. :class:`TrainConfig`) from nested mappings, checking every
    value against its field's type (:func:`mordasr.schema.from_mapping`); every problem raises
    :class:`ConfigError` with one line naming the key."""
    return from_mapping(cls, data, error=ConfigError)
