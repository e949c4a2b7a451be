"""Load the components of a Stable Diffusion model (diffusers layout) from a hub id or a folder.

The one-step SR generator and its training losses need the UNet, the KL VAE, the CLIP text
encoder with its tokenizer, and the noise schedule. They are read from the standard
``StableDiffusionPipeline`` layout (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/``), either a local folder or a hub id such as
``stabilityai/stable-diffusion-2-1-base`` (downloaded by the hub client into its cache, or read
from the cache alone when ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

SD21_BASE = "stabilityai/stable-diffusion-2-1-base"
"""The paper's base model (512 px, epsilon prediction)."""


@dataclass
class SDComponents:
    """The parts of a Stable Diffusion pipeline that mordasr uses."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell (8 for SD), from the VAE's block count."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def _require_diffusers() -> Any:
    try:
        import diffusers
        import transformers
    except ImportError as error:
        raise ImportError(
            "the Stable Diffusion model needs the 'sd' extra: pip install 'mordasr[sd]'"
        ) from error
    return diffusers, transformers


def load_sd_components(
    name_or_path: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> SDComponents:
    """Read every component of ``name_or_path`` (a folder in diffusers layout or a hub id),
    frozen, in eval mode, on ``device`` in ``dtype``."""
    diffusers, transformers = _require_diffusers()
    source = str(name_or_path)
    if Path(source).expanduser().exists():
        source = str(Path(source).expanduser())
        if not (Path(source) / "unet").is_dir():
            raise FileNotFoundError(f"{source} is not a diffusers model folder (no unet/)")

    def load(cls: Any, subfolder: str) -> Any:
        return cls.from_pretrained(source, subfolder=subfolder)

    unet = load(diffusers.UNet2DConditionModel, "unet")
    vae = load(diffusers.AutoencoderKL, "vae")
    text_encoder = load(transformers.CLIPTextModel, "text_encoder")
    tokenizer = load(transformers.CLIPTokenizer, "tokenizer")
    scheduler = load(diffusers.DDPMScheduler, "scheduler")
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
        module.to(device=device, dtype=dtype).eval()
    return SDComponents(unet, vae, text_encoder, tokenizer, scheduler)
