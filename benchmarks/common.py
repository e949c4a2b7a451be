"""What several benchmark scripts share; the scripts import only this module and ``mordasr``.

* timing in interleaved rounds (``bench_mor.py``, ``bench_sd.py``);
* generated photos and peak memory (``bench_data.py``, ``bench_train_memory.py``);
* the degradation workload (``bench_degrade.py``, ``profile_degrade.py``);
* the bootstrap interval (``study.py``, ``paired_diff.py``);
* a study's pinned settings and its training runs (``study.py``, ``adaptsr_study.py``);
* random-weight one-step SD parts (``bench_sd.py``, ``gpu_check.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import statistics
import string
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from mordasr.degrade import PRESETS
from mordasr.estimate import DegradationEstimator
from mordasr.mor import MoRConfig, merge_shared, mor_layers
from mordasr.sr.sd import OneStepConfig, OneStepGenerator, SDComponents
from mordasr.train.cli import apply_overrides
from mordasr.train.config import TrainConfig

DEGRADE_DATA = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train" / "SunHays80_HR"
)
"""The photos ``load_patches`` crops, when they exist beside the project root."""

REAL_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "RealSRSet+5images"
"""Real low-quality photos the speed benchmarks crop, when they exist beside the project root."""

BOOTSTRAP_RESAMPLES = 10_000


def photo_crop(width: int, height: int) -> Image.Image:
    """A centred RGB crop of the first photo in :data:`REAL_PHOTOS` at least ``width`` x
    ``height`` (seeded noise when there is none)."""
    if REAL_PHOTOS.is_dir():
        for path in sorted(p for p in REAL_PHOTOS.rglob("*") if p.is_file()):
            with Image.open(path) as image:
                if image.width >= width and image.height >= height:
                    left, top = (image.width - width) // 2, (image.height - height) // 2
                    return image.convert("RGB").crop((left, top, left + width, top + height))
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def time_rounds(fns: dict[str, Callable], rounds: int) -> dict[str, list[float]]:
    """Per-variant timings; every round runs each variant once, in a rotating order."""
    for fn in fns.values():
        fn()
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for index in range(rounds):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            start = time.perf_counter()
            fns[name]()
            samples[name].append(time.perf_counter() - start)
    return samples


def summarise_rounds(
    samples: dict[str, list[float]], reference: str
) -> dict[str, tuple[float, float]]:
    """Median time and median per-round ratio to ``reference`` of every variant."""
    ref = samples[reference]
    return {
        name: (
            statistics.median(values),
            statistics.median(v / r for v, r in zip(values, ref, strict=True)),
        )
        for name, values in samples.items()
    }


def generate_photos(folder: Path, count: int, width: int, height: int) -> list[Path]:
    """``count`` smooth-plus-texture JPEGs (quality 90) in ``folder``; existing ones are kept."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"photo_{index:05d}.jpg"
        if not path.exists():
            rng = np.random.default_rng(index)
            coarse = Image.fromarray((255 * rng.random((12, 16, 3))).astype(np.uint8))
            smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.int16)
            texture = rng.integers(-12, 13, size=smooth.shape, dtype=np.int16)
            pixels = np.clip(smooth + texture, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


class PeakMemory:
    """The largest PSS sum of a process (``pid``; default this one) and its descendants while
    the block runs."""

    def __init__(self, pid: int | None = None, interval: float = 0.1) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _sample(self) -> int:
        total = 0
        with contextlib.suppress(psutil.NoSuchProcess):
            for process in [self.root, *self.root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    total += process.memory_full_info().pss
        return total

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def load_patches(count: int, size: int, seed: int) -> tuple[torch.Tensor, str]:
    """``count`` HR patches ``(count, 3, size, size)`` and a word on where they came from."""
    rng = np.random.default_rng(seed)
    files = sorted(DEGRADE_DATA.glob("*")) if DEGRADE_DATA.is_dir() else []
    if not files:
        gen = torch.Generator().manual_seed(seed)
        coarse = torch.rand(count, 3, size // 16, size // 16, generator=gen)
        return F.interpolate(coarse, size=(size, size), mode="bicubic").clamp(0, 1), "synthetic"
    patches = []
    for i in range(count):
        with Image.open(files[i % len(files)]) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255
        top = rng.integers(0, arr.shape[0] - size + 1)
        left = rng.integers(0, arr.shape[1] - size + 1)
        patches.append(torch.from_numpy(arr[top : top + size, left : left + size].copy()))
    return torch.stack(patches).permute(0, 3, 1, 2).contiguous(), f"{DEGRADE_DATA.name} crops"


def add_workload_options(parser: argparse.ArgumentParser, rounds: int) -> None:
    """Add ``--preset``, ``--batch``, ``--size`` (of the HR patches) and ``--rounds`` (default
    ``rounds``): the workload of ``bench_degrade.py`` and ``profile_degrade.py``."""
    parser.add_argument("--preset", default="realesrgan", choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=rounds)


def bootstrap_ci(
    differences: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of ``differences`` (resampled with
    replacement, seeded)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[draws].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def resolved_digest(path: Path, defaults: Mapping[tuple[str, ...], Any] | None = None) -> str:
    """A digest of the training config at ``path`` as resolved (its ``base`` files merged in):
    editing the recipe between two calls into one study folder would otherwise mix two recipes
    in one table. The keys of ``defaults`` (paths into the resolved config) are left out at
    their default value, so a folder pinned before such a key existed still takes calls."""
    resolved = TrainConfig.from_yaml(path).to_dict()
    for (*sections, key), default in (defaults or {}).items():
        parent: Any = resolved
        for section in sections:
            parent = parent.get(section) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and key in parent and parent[key] == default:
            del parent[key]
    text = json.dumps(resolved, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pin_study(out: Path, wanted: dict[str, Any], retired: Mapping[str, Any] | None = None) -> None:
    """Write ``wanted`` to ``out/study.json``, or check that the study already there used it.
    ``retired``: settings once pinned that no longer are, with the value that means what
    leaving them out means now (a folder pinned with them at that value still takes calls)."""
    retired = retired or {}
    out.mkdir(parents=True, exist_ok=True)
    path = out / "study.json"
    if path.is_file():
        found = {
            k: v
            for k, v in json.loads(path.read_text()).items()
            if k in wanted or k not in retired or v != retired[k]
        }
        if found != wanted:
            changed = sorted(
                k for k in wanted.keys() | found.keys() if found.get(k) != wanted.get(k)
            )
            raise ValueError(f"{out} holds a study with other settings ({', '.join(changed)})")
        return
    path.write_text(json.dumps(wanted, indent=2) + "\n")


def run_train_config(
    settings: Any,
    seed: int,
    run_dir: Path,
    pool_dir: Path | None = None,
    extra: Sequence[str] = (),
) -> TrainConfig:
    """The training config of one study run: the study's config (``settings.config``) with its
    ``settings.overrides``, the run's folder, seed and budget (``settings.steps``), then
    ``extra``. Runs of the same seed share one synthesised pool (``data.pool_cache``:
    ``pool_dir``, default ``OUT/pools``)."""
    base = TrainConfig.from_yaml(settings.config)
    every = max(1, min(base.checkpoint_every, settings.steps))
    overrides = [
        f"data.pool_cache={pool_dir or run_dir.parent.parent / 'pools'}",
        *settings.overrides,
        f"output_dir={run_dir / 'train'}",
        f"seed={seed}",
        f"total_steps={settings.steps}",
        f"checkpoint_every={every}",
        *extra,
    ]
    return apply_overrides(base, overrides)


def train_once(
    train: Callable[..., object], config: TrainConfig, run_dir: Path, progress: bool, marker: str
) -> Path:
    """Train ``config`` with ``train`` (the script's, so that its tests can replace it) unless
    its model exists (``run_dir/train/final/marker``); returns the exported model folder. The
    seconds of every sitting add up in ``run_dir/train.json``."""
    final = run_dir / "train" / "final"
    if (final / marker).is_file():
        return final
    started = time.time()
    train(config, resume=True, progress=progress)
    seconds = round(time.time() - started, 1)
    record = run_dir / "train.json"
    before = json.loads(record.read_text()).get("seconds", 0.0) if record.is_file() else 0.0
    record.write_text(
        json.dumps({"seconds_last_sitting": seconds, "seconds": before + seconds}) + "\n"
    )
    return final


class GivenScores(DegradationEstimator):
    """A fixed score row for every image: no estimator cost (the scores are given)."""

    def __init__(self, scores: Tensor) -> None:
        super().__init__()
        self.register_buffer("scores", scores)

    def forward(self, images: Tensor) -> Tensor:
        return self.scores.expand(images.shape[0], -1).clone()


def clip_text_encoder(
    vocab: dict[str, int], width: int, ffn: int, layers: int, heads: int, rows: int
) -> nn.Module:
    """A random CLIP text tower (77 positions, GELU) whose special tokens are ``vocab``'s."""
    import transformers

    return transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            hidden_size=width,
            intermediate_size=ffn,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            vocab_size=rows,
            max_position_embeddings=77,
            hidden_act="gelu",
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    )


def frozen_components(
    unet: nn.Module, vae: nn.Module, text_encoder: nn.Module, tokenizer: Any
) -> SDComponents:
    """The models frozen in eval mode, with SD 2.1-base's DDPM scheduler."""
    import diffusers

    scheduler = diffusers.DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
    )
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False).eval()
    return SDComponents(unet, vae, text_encoder, tokenizer, scheduler)


def char_tokenizer(directory: Path) -> Any:
    """A CLIP tokenizer spelling words letter by letter (no download; any prompt of letters and
    digits works), written to ``directory`` (created if missing)."""
    import transformers

    directory.mkdir(parents=True, exist_ok=True)
    chars = string.ascii_lowercase + string.digits
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({f"{c}</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return transformers.CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))


def randomize_adapters(generator: OneStepGenerator, seed: int = 0) -> None:
    """Non-zero B factors (as after training), so merging and routing do real work."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in generator.trainable_parameters().values():
            param.copy_(0.01 * torch.randn(param.shape, generator=gen, dtype=torch.float32))


def strip_adapters(model: nn.Module) -> None:
    """Replace every (fully merged) adapter layer by its base layer: the plain fine-tuned net."""
    merge_shared(model)
    for name, layer in list(mor_layers(model)):
        if layer.router is not None:
            raise ValueError(f"{name} is routed: only plain LoRA can be merged for good")
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.base_layer)


def plain_and_routed(
    components: SDComponents, mor: MoRConfig
) -> tuple[OneStepGenerator, OneStepGenerator, Tensor]:
    """On copies of ``components``: a random rank-4 LoRA merged for good (adapters removed), a
    random ``mor`` with its shared ranks merged, and fixed random scores to route it by."""
    plain_config = OneStepConfig(unet_mor=MoRConfig.lora(4, target_modules=mor.target_modules))
    plain = OneStepGenerator(copy.deepcopy(components), plain_config)
    randomize_adapters(plain)
    strip_adapters(plain)
    routed = OneStepGenerator(copy.deepcopy(components), OneStepConfig(unet_mor=mor))
    randomize_adapters(routed)
    merge_shared(routed)
    scores = torch.rand(1, mor.score_dim, generator=torch.Generator().manual_seed(1))
    return plain, routed, scores
