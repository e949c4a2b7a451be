"""The paper's full SR model: degradation estimator + prompt source + one-step SD generator.

``sr = generator(lr, scores=estimator(lr), prompt_embeds=text(prompt_source(lr)))``. A checkpoint
folder (:meth:`OneStepSR.save_pretrained`) holds the manifest (``mordasr_model.json``, type
``onestep-sd``), the generator (``onestep_config.json``, ``adapters.safetensors``) and, for the
learned estimator, the heads it was trained with (``estimator.safetensors``). The Stable
Diffusion weights are not copied: the config names them (a hub id or a diffusers folder), and
``base_model`` can point elsewhere at load time. Folders of earlier versions (no manifest) are
recognised by their ``onestep_config.json``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import torch
from safetensors import safe_open
from torch import Tensor, nn

from mordasr.estimate import DegradationEstimator, LearnedEstimator, load_estimator
from mordasr.mor import merge_shared
from mordasr.sr.manifest import loading, write_manifest
from mordasr.sr.mor_sr import ESTIMATOR_FILE, estimate_scores
from mordasr.sr.protocol import LatentWork, Tiling
from mordasr.sr.regions import REGION_WINDOW, RoutingMode
from mordasr.sr.registry import check_model_type, register_model_type
from mordasr.sr.sd.config import OneStepConfig
from mordasr.sr.sd.generator import ADAPTERS_NAME, CONFIG_NAME, OneStepGenerator, read_config
from mordasr.sr.sd.prompts import FixedPrompt, PromptSource


def estimator_for(config: OneStepConfig, directory: Path | None = None) -> DegradationEstimator:
    """The estimator ``config.estimator`` names: the learned one (with the heads saved in
    ``directory`` when there are any, else the package's) or CLIP from a hub id or folder."""
    if config.estimator != "learned":
        return load_estimator("clip", clip_model=config.estimator)
    heads = None if directory is None else directory / ESTIMATOR_FILE
    if heads is not None and heads.is_file():
        with loading(heads):
            return LearnedEstimator.from_pretrained(heads).eval()
    return load_estimator("learned")


@register_model_type(legacy_marker=CONFIG_NAME)
class OneStepSR(nn.Module):
    """One-step diffusion MoR-DASR: routes the generator by the LR image's degradation scores.

    Args:
        generator: the one-step SD generator (VAE-encoder LoRA, UNet MoR).
        estimator: maps LR images to the (B, 7) scores that route the UNet; kept frozen.
        prompt_source: one prompt per LR image (default: the config's fixed prompt).
    """

    model_type: ClassVar[str] = "onestep-sd"
    tiling: ClassVar[Tiling] = "latent"
    feed_forward: ClassVar[bool] = False

    def __init__(
        self,
        generator: OneStepGenerator,
        estimator: DegradationEstimator,
        prompt_source: PromptSource | None = None,
    ) -> None:
        super().__init__()
        self.generator = generator
        self.estimator = estimator.requires_grad_(False)
        self.prompt_source: PromptSource = prompt_source or FixedPrompt(generator.config.prompt)

    @property
    def scale(self) -> int:
        return self.generator.scale

    @property
    def multiple_of(self) -> int:
        """LR side multiple at which the SR image fills whole latents and the UNet's
        downsampling levels (e.g. 16 for SD x4: 8 pixels per latent, 8 per UNet level)."""
        levels = len(self.generator.unet.config.block_out_channels) - 1
        sr_multiple = self.generator.vae_scale_factor * 2**levels
        return sr_multiple // math.gcd(sr_multiple, self.scale)

    @property
    def config(self) -> OneStepConfig:
        return self.generator.config

    def describe(self) -> str:
        return f"one-step MoR on {self.config.base_model} (estimator: {self.config.estimator})"

    def to_inference(
        self, device: torch.device | str, dtype: torch.dtype, *, merge: bool = False
    ) -> OneStepSR:
        """The generator in ``dtype`` on ``device``, the estimator float32 there; ``merge``
        folds the shared UNet ranks and the VAE LoRA into the base weights."""
        self.to(device)
        self.generator.to(dtype=dtype)
        if merge:
            merge_shared(self.generator)
        return self.eval()

    def estimate(self, lr: Tensor) -> Tensor:
        """(B, 7) degradation scores of the LR images (float32 estimator, ``lr``'s dtype)."""
        return estimate_scores(self.estimator, lr)

    def prompt_embeds(self, lr: Tensor) -> Tensor:
        """(B, T, D) text conditioning of each LR image from the prompt source."""
        return self.generator.encode_prompt(self.prompt_source(lr))

    @property
    def score_dim(self) -> int:
        """How many numbers route the UNet's adapters."""
        return self.config.unet_mor.score_dim

    def prepare(
        self,
        lr: Tensor,
        scores: Tensor | None = None,
        *,
        routing: RoutingMode = "image",
        region_window: int = REGION_WINDOW,
    ) -> LatentWork:
        """The stages for ``lr``, conditioned once: scores (default: the estimate), prompt
        embeddings, and the UNet's plan folded once for every latent tile (per-image routing
        only: ``routing="region"`` is refused)."""
        if routing != "image":
            raise ValueError("the one-step SD model routes per image; region routing is not built")
        generator = self.generator
        dtype = generator.unet.dtype
        plan = generator.route(self.estimate(lr) if scores is None else scores, fold=True)
        embeds = self.prompt_embeds(lr).to(dtype)
        return LatentWork(
            upsample=generator.upsample,
            encode=generator.encode,
            encoder_norm=generator.vae.encoder,
            denoise=lambda z: generator.denoise(z, embeds, plan),
            decode=lambda z: (generator.decode(z) + 1.0) / 2.0,
            decoder_norm=generator.vae.decoder,
            latent_factor=generator.vae_scale_factor,
        )

    def forward(self, lr: Tensor, scores: Tensor | None = None) -> Tensor:
        """LR (B, 3, h, w) in [0, 1] -> SR in [0, 1]; ``scores`` default to the estimate."""
        if scores is None:
            scores = self.estimate(lr)
        return self.generator(lr, scores, self.prompt_embeds(lr))

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the generator (``onestep_config.json``, ``adapters.safetensors``) and, for the
        learned estimator, its heads (``estimator.safetensors``). A :class:`FixedPrompt`'s text is
        saved as the config's prompt; other prompt sources are code and are not saved."""
        directory = Path(directory)
        if isinstance(self.prompt_source, FixedPrompt):
            self.generator.config.prompt = self.prompt_source.text
        self.generator.save_pretrained(directory)
        if isinstance(self.estimator, LearnedEstimator):
            self.estimator.save_heads(directory / ESTIMATOR_FILE)
        write_manifest(directory, self.model_type)
        return directory

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        base_model: str | Path | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> OneStepSR:
        """Load a folder written by :meth:`save_pretrained` (of this version or an earlier
        one; the estimator stays float32); a bad file is a one-line
        :class:`~mordasr.sr.manifest.ModelLoadError` naming it."""
        directory = Path(directory)
        check_model_type(directory, cls.model_type)
        with loading(directory / CONFIG_NAME):
            read_config(directory)
        adapters = directory / ADAPTERS_NAME
        with loading(adapters), safe_open(str(adapters), framework="pt") as handle:
            handle.keys()
        with loading(directory):
            generator = OneStepGenerator.from_pretrained(directory, base_model, dtype, device)
        estimator = estimator_for(generator.config, directory).to(device)
        return cls(generator, estimator).eval()
