"""A tiny randomly initialised Stable-Diffusion-like model saved in diffusers layout.

It has every component of SD 2.1 (UNet with cross-attention, KL VAE, CLIP text encoder and
tokenizer, DDPM scheduler) at toy sizes, so tests exercise the real loading path
(:func:`mordasr.sr.sd.load_sd_components`) without any download. The VAE has two blocks, so it
downsamples by 2 (SD's by 8); code must read the factor from the VAE's config.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from tiny_clip import write_char_tokenizer  # noqa: E402

from mordasr.mor import MoRConfig  # noqa: E402
from mordasr.sr.sd import OneStepConfig  # noqa: E402

TEXT_DIM = 32
"""Width of the tiny text encoder, the UNet's cross-attention dimension."""


def tiny_unet() -> diffusers.UNet2DConditionModel:
    """A two-level UNet with the module names of SD 2.1's (linear projections, v-less)."""
    return diffusers.UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=(2, 4),
        norm_num_groups=8,
        use_linear_projection=True,
    )


def tiny_vae() -> diffusers.AutoencoderKL:
    """A two-block KL autoencoder: 3 channels <-> 4 latent channels at half resolution."""
    return diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(16, 32),
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=32,
    )


def write_tiny_sd(directory: Path, seed: int = 0) -> Path:
    """Save the tiny model to ``directory`` (subfolders as ``DiffusionPipeline`` expects)."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tiny_unet().save_pretrained(directory / "unet")
    tiny_vae().save_pretrained(directory / "vae")
    tokenizer = write_char_tokenizer(directory / "tokenizer")
    tokenizer.save_pretrained(directory / "tokenizer")
    vocab = tokenizer.get_vocab()
    text_config = transformers.CLIPTextConfig(
        hidden_size=TEXT_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=len(vocab),
        max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    transformers.CLIPTextModel(text_config).save_pretrained(directory / "text_encoder")
    diffusers.DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", prediction_type="epsilon"
    ).save_pretrained(directory / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDPMScheduler"],
    }
    (directory / "model_index.json").write_text(json.dumps(index, indent=2))
    return directory


def tiny_onestep_config(sd_dir: Path, **overrides: object) -> OneStepConfig:
    """A ``OneStepConfig`` on the tiny model with the paper's layout at toy sizes (2 shared +
    6 routed incl. 2 zero, top-2) on the paper's UNet targets."""
    mor = MoRConfig(
        target_modules=OneStepConfig().unet_mor.target_modules,
        num_shared=2,
        num_routed=6,
        num_zero=2,
        top_k=2,
    )
    return OneStepConfig(base_model=str(sd_dir), unet_mor=mor, **overrides)
