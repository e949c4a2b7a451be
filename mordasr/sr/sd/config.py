"""Configuration of the one-step SD super-resolution generator (OSEDiff paradigm, paper eq. 3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from mordasr.mor import MoRConfig
from mordasr.schema import from_mapping
from mordasr.sr.sd.components import SD21_BASE

DEFAULT_PROMPT = "clean, high-resolution, 8k, best quality, masterpiece"
"""The fixed positive prompt used when no tagger describes the image (SeeSR's added prompt)."""

DEFAULT_NEGATIVE_PROMPT = (
    "painting, oil painting, illustration, drawing, art, sketch, cartoon, CG Style, 3D render, "
    "unreal engine, blurring, dirty, messy, worst quality, low quality, frames, watermark, "
    "signature, jpeg artifacts, deformed, lowres, over-smooth"
)
"""OSEDiff's negative prompt (classifier-free guidance of the VSD loss)."""

UNET_TARGETS: tuple[str, ...] = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "conv1",
    "conv2",
    "conv_shortcut",
    "conv_in",
    "conv_out",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
)
"""UNet layers adapted by MoR: attention projections, resnet convolutions, the UNet's first and
last convolution, transformer in/out projections and feed-forward layers."""

VAE_ENCODER_TARGETS: tuple[str, ...] = (
    "conv1",
    "conv2",
    "conv_shortcut",
    "conv",
    "conv_in",
    "conv_out",
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
)
"""VAE encoder layers adapted by the plain LoRA (OSEDiff's encoder targets; ``conv`` is the
downsamplers' convolution)."""


def paper_unet_mor() -> MoRConfig:
    """The paper's UNet adapter: 8 shared + 32 routed ranks (4 zero experts), top-8, 7 scores."""
    return MoRConfig(
        target_modules=list(UNET_TARGETS),
        num_shared=8,
        num_routed=32,
        num_zero=4,
        top_k=8,
        score_dim=7,
    )


@dataclass
class OneStepConfig:
    """What a one-step SD super-resolution generator is made of."""

    base_model: str = SD21_BASE
    """Hub id or local folder (diffusers layout) of the pretrained Stable Diffusion model."""
    timestep: int = 999
    """The single diffusion timestep the UNet runs at (OSEDiff: the last one, 999)."""
    prompt: str = DEFAULT_PROMPT
    """Fixed positive prompt when the prompt source is a :class:`~mordasr.sr.sd.FixedPrompt`."""
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    """Negative prompt for classifier-free guidance in the VSD loss."""
    unet_mor: MoRConfig = field(default_factory=paper_unet_mor)
    """MoR adapter of the UNet (routed by the degradation scores)."""
    vae_lora_rank: int = 4
    """Rank of the plain LoRA on the VAE encoder (OSEDiff: 4)."""
    vae_targets: list[str] = field(default_factory=lambda: list(VAE_ENCODER_TARGETS))
    """Module names of the VAE encoder adapted by the LoRA (exact or dotted suffix)."""
    estimator: str = "learned"
    """Degradation estimator routing the UNet: ``learned`` or a CLIP hub id/local folder."""
    scale: int = 4
    """Upscaling factor: the LR image is enlarged bicubically by it before encoding."""

    def __post_init__(self) -> None:
        if not 0 <= self.timestep < 1000:
            raise ValueError(f"timestep must lie in [0, 1000), got {self.timestep}")
        if self.vae_lora_rank < 1:
            raise ValueError("vae_lora_rank must be >= 1")
        if self.scale < 1:
            raise ValueError("scale must be >= 1")

    @property
    def vae_lora(self) -> MoRConfig:
        """The VAE encoder's adapter as a plain-LoRA :class:`MoRConfig`."""
        return MoRConfig.lora(self.vae_lora_rank, target_modules=list(self.vae_targets))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy of the fields (the MoR config nested as a dict)."""
        data = asdict(self)
        data["unet_mor"] = self.unet_mor.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OneStepConfig:
        """Rebuild a config from :meth:`to_dict` output (the MoR config nested as a mapping); an
        unknown key or a value of the wrong type is a one-line
        :class:`~mordasr.schema.SchemaError` (a ``ValueError``)."""
        return from_mapping(cls, data)
