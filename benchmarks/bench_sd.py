"""Inference cost of the one-step MoR SD model against the plain merged-LoRA pipeline (OSEDiff).

Both run the same ``Upscaler`` code on the same random-weight SD-shaped model: bicubic x4, VAE
encode, one UNet step at t=999, VAE decode, wavelet colour fix. The reference ("plain") is
OSEDiff at inference: a LoRA merged into the UNet and VAE-encoder weights, the adapter layers
removed, no estimator. "MoR, given scores" is the paper's MoR UNet (8 shared + 32 routed incl.
4 zero, top-8) routed by a fixed score vector: what routing and folding the routed ranks into
the weights cost, once per image. "MoR + estimator" adds the learned degradation estimator on
the LR image (the real end-to-end cost). A second table times the UNet step alone, where the
whole MoR cost sits: with the routers batched and the kept ranks folded before the step
(a folded plan, what the Upscaler does) and with each layer applying its kept ranks inside its
own forward. Variants are timed in interleaved rounds (rotating order); the tables give median
times and the median over rounds of the per-round ratio to the reference, so machine load hits
every variant alike.

    python benchmarks/bench_sd.py [--rounds 41] [--threads 1]          # CPU, reduced SD
    python benchmarks/bench_sd.py --device cuda --full [--rounds 31]   # SD 2.1-base, 128->512 bf16

``--full`` builds the real SD 2.1-base architecture (random weights) and also reports the peak
GPU memory of one generator training step at batch 1 (L2 + balance loss, AdamW on the adapters,
gradient checkpointing, bf16 autocast; the VSD and GAN networks of the full loss are not in it).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import (
    GivenScores,
    char_tokenizer,
    clip_text_encoder,
    frozen_components,
    plain_and_routed,
    summarise_rounds,
    time_rounds,
)
from torch import Tensor

from mordasr.estimate import load_estimator
from mordasr.infer.pipeline import Upscaler
from mordasr.mor import MoRConfig, mor_layers
from mordasr.sr.sd import OneStepConfig, OneStepGenerator, SDComponents
from mordasr.sr.sd.config import paper_unet_mor
from mordasr.sr.sd.sr_model import OneStepSR

REDUCED = {
    "unet_channels": (64, 128, 256, 256),
    "unet_heads": (2, 4, 8, 8),
    "layers_per_block": 1,
    "vae_channels": (32, 64, 128, 128),
    "vae_layers": 1,
    "text_dim": 256,
    "text_layers": 2,
    "lr_side": 128,
}
"""A reduced SD 2.1: the same block types and levels, fewer channels and layers, run at SD's
128->512 sizes so every level has SD's number of latent tokens (the tokens per weight decide
what folding the routed ranks costs against the convolutions)."""

FULL = {
    "unet_channels": (320, 640, 1280, 1280),
    "unet_heads": (5, 10, 20, 20),
    "layers_per_block": 2,
    "vae_channels": (128, 256, 512, 512),
    "vae_layers": 2,
    "text_dim": 1024,
    "text_layers": 23,
    "lr_side": 128,
}
"""The SD 2.1-base architecture (``stabilityai/stable-diffusion-2-1-base``)."""


def sd_components(sizes: dict[str, Any], directory: Path) -> SDComponents:
    """Random-weight SD 2.1-shaped components (frozen, eval)."""
    import diffusers

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=64,
        block_out_channels=sizes["unet_channels"],
        layers_per_block=sizes["layers_per_block"],
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=sizes["unet_heads"],
        cross_attention_dim=sizes["text_dim"],
        use_linear_projection=True,
    )
    vae = diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=sizes["vae_channels"],
        layers_per_block=sizes["vae_layers"],
        latent_channels=4,
        sample_size=512,
    )
    tokenizer = char_tokenizer(directory)
    vocab = tokenizer.get_vocab()
    text_encoder = clip_text_encoder(
        vocab,
        sizes["text_dim"],
        4 * sizes["text_dim"],
        sizes["text_layers"],
        sizes["text_dim"] // 64,
        len(vocab),
    )
    return frozen_components(unet, vae, text_encoder, tokenizer)


def build_models(components: SDComponents, mor: MoRConfig) -> dict[str, OneStepSR]:
    """The three variants on deep copies of the same base weights."""
    plain, routed, scores = plain_and_routed(components, mor)
    with_estimator = copy.deepcopy(routed)
    return {
        "plain merged LoRA (OSEDiff)": OneStepSR(plain, GivenScores(torch.zeros(1, 7))),
        "MoR, given scores": OneStepSR(routed, GivenScores(scores)),
        "MoR + estimator": OneStepSR(with_estimator, load_estimator("learned")),
    }


def inference_fns(
    models: dict[str, OneStepSR], lr: Tensor, device: str, dtype: torch.dtype
) -> dict[str, Callable[[], None]]:
    fns = {}
    for name, model in models.items():
        upscaler = Upscaler(model, device=device, dtype=dtype, latent_tile=0, vae_tile=0)
        image = lr.to(device)

        def run(upscaler: Upscaler = upscaler, image: Tensor = image) -> None:
            upscaler.upscale_tensor(image)
            if device == "cuda":
                torch.cuda.synchronize()

        fns[name] = run
    return fns


def unet_fns(
    models: dict[str, OneStepSR], side: int, device: str, dtype: torch.dtype
) -> dict[str, Callable[[], None]]:
    """The UNet step alone (x4 latent of a ``side`` LR image), fresh scores every call, so MoR
    routes its ranks every time (once per image): with a folded plan as the Upscaler does, or an
    unfolded one (each layer applies its kept ranks from the routing inside the forward)."""
    fns = {}
    variants = {
        "plain merged LoRA (OSEDiff)": ("plain merged LoRA (OSEDiff)", False),
        "MoR, given scores": ("MoR, given scores", True),
        "MoR, unfolded plan": ("MoR, given scores", False),
    }
    for label, (name, batched) in variants.items():
        generator = models[name].generator.to(device=device, dtype=dtype)
        latent = 4 * side // generator.vae_scale_factor
        z = torch.randn(1, 4, latent, latent, device=device, dtype=dtype)
        embeds = generator.encode_prompt([generator.config.prompt])

        def run(
            generator: OneStepGenerator = generator,
            z: Tensor = z,
            embeds: Tensor = embeds,
            batched: bool = batched,
        ) -> None:
            scores = torch.rand(1, 7, device=device)
            with torch.no_grad():
                generator.denoise(z, embeds, generator.route(scores, fold=batched))
            if device == "cuda":
                torch.cuda.synchronize()

        fns[label] = run
    return fns


def print_table(title: str, summary: dict[str, tuple[float, float]]) -> None:
    print(f"\n{title}\n")
    print("| variant | median ms | median per-round ratio |")
    print("|---|---:|---:|")
    for name, (seconds, ratio) in summary.items():
        print(f"| {name} | {1e3 * seconds:.1f} | {ratio:.3f}x |")


def training_peak_memory(components: SDComponents, mor: MoRConfig, side: int) -> float:
    """Peak GPU memory (GiB) of one generator step at batch 1 with gradient checkpointing."""
    generator = OneStepGenerator(copy.deepcopy(components), OneStepConfig(unet_mor=mor))
    generator.to("cuda")
    generator.unet.enable_gradient_checkpointing()
    generator.vae.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(generator.trainable_parameters().values(), lr=5e-5)
    lr = torch.rand(1, 3, side, side, device="cuda")
    hr = torch.rand(1, 3, 4 * side, 4 * side, device="cuda")
    scores = torch.rand(1, mor.score_dim, device="cuda")
    embeds = generator.encode_prompt([generator.config.prompt])
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    generator.train()
    plan = generator.route(scores)
    with torch.autocast("cuda", dtype=torch.bfloat16), plan.applied(generator.unet):
        latents = generator.encode_lr(lr)
        timestep = torch.full((1,), generator.config.timestep, device="cuda", dtype=torch.long)
        pred = generator.unet(latents, timestep, encoder_hidden_states=embeds).sample
        sr = (generator.decode(generator.x0_from_prediction(latents, pred)) + 1) / 2
        loss = torch.nn.functional.mse_loss(sr.float(), hr) + 0.01 * plan.balance_loss()
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--full", action="store_true", help="SD 2.1-base sizes, 128->512 bf16")
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.full and args.device != "cuda":
        parser.error("--full needs --device cuda")
    torch.set_num_threads(args.threads)
    sizes = FULL if args.full else REDUCED
    dtype = torch.bfloat16 if args.full else torch.float32
    mor = paper_unet_mor()
    with tempfile.TemporaryDirectory() as tmp:
        components = sd_components(sizes, Path(tmp))
    models = build_models(components, mor)
    side = sizes["lr_side"]
    lr = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(2))
    reference = "plain merged LoRA (OSEDiff)"
    start = time.perf_counter()
    end_to_end = summarise_rounds(
        time_rounds(inference_fns(models, lr, args.device, dtype), args.rounds), reference
    )
    unet = summarise_rounds(
        time_rounds(unet_fns(models, side, args.device, dtype), args.rounds), reference
    )
    elapsed = time.perf_counter() - start
    size = "SD 2.1-base" if args.full else "reduced SD 2.1"
    print(
        f"\n{size}, x4 {side}->{4 * side}, {dtype}, {args.device}, torch {torch.__version__}, "
        f"{args.threads} threads, {args.rounds} rounds ({elapsed:.0f} s)"
    )
    adapted = [layer for _, layer in mor_layers(models["MoR, given scores"].generator.unet)]
    weights = sum(layer.base_layer.weight.numel() for layer in adapted)
    print(f"MoR on {len(adapted)} UNet layers holding {weights / 1e6:.1f} M weights")
    print_table("End to end (Upscaler.upscale_tensor, one image):", end_to_end)
    print_table("UNet step alone (fresh scores each call):", unet)
    result: dict[str, Any] = {
        "sizes": size,
        "device": args.device,
        "dtype": str(dtype),
        "rounds": args.rounds,
        "threads": args.threads,
        "mor_layers": len(adapted),
        "adapted_weights": weights,
        "end_to_end": {name: {"ms": 1e3 * s, "ratio": r} for name, (s, r) in end_to_end.items()},
        "unet": {name: {"ms": 1e3 * s, "ratio": r} for name, (s, r) in unet.items()},
    }
    if args.full:
        del models
        torch.cuda.empty_cache()
        peak = training_peak_memory(components, mor, side)
        print(f"\npeak memory of one generator step (batch 1, checkpointing): {peak:.2f} GiB")
        result["train_step_peak_gib"] = peak
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
