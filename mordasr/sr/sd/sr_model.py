"""The paper's full SR model: degradation estimator + prompt source + one-step SD generator.

``sr = generator(lr, scores=estimator(lr), prompt_embeds=text(prompt_source(lr)))``. A checkpoint
folder (:meth:`OneStepSR.save_pretrained`) holds the generator (``onestep_config.json``,
``adapters.safetensors``) and, for the learned estimator, the heads it was trained with
(``estimator.safetensors``). The Stable Diffusion weights are not copied: the config names them
(a hub id or a diffusers folder), and ``base_model`` can point elsewhere at load time.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from mordasr.estimate import DegradationEstimator, LearnedEstimator, load_estimator
from mordasr.sr.mor_sr import ESTIMATOR_FILE, estimate_scores
from mordasr.sr.sd.config import OneStepConfig
from mordasr.sr.sd.generator import CONFIG_NAME, OneStepGenerator
from mordasr.sr.sd.prompts import FixedPrompt, PromptSource


def estimator_for(config: OneStepConfig, directory: Path | None = None) -> DegradationEstimator:
    """The estimator ``config.estimator`` names: the learned one (with the heads saved in
    ``directory`` when there are any, else the package's) or CLIP from a hub id or folder."""
    if config.estimator != "learned":
        return load_estimator("clip", clip_model=config.estimator)
    heads = None if directory is None else directory / ESTIMATOR_FILE
    if heads is not None and heads.is_file():
        return LearnedEstimator.from_pretrained(heads).eval()
    return load_estimator("learned")


class OneStepSR(nn.Module):
    """One-step diffusion MoR-DASR: routes the generator by the LR image's degradation scores.

    Args:
        generator: the one-step SD generator (VAE-encoder LoRA, UNet MoR).
        estimator: maps LR images to the (B, 7) scores that route the UNet; kept frozen.
        prompt_source: one prompt per LR image (default: the config's fixed prompt).
    """

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
    def config(self) -> OneStepConfig:
        return self.generator.config

    def estimate(self, lr: Tensor) -> Tensor:
        """(B, 7) degradation scores of the LR images (float32 estimator, ``lr``'s dtype)."""
        return estimate_scores(self.estimator, lr)

    def prompt_embeds(self, lr: Tensor) -> Tensor:
        """(B, T, D) text conditioning of each LR image from the prompt source."""
        return self.generator.encode_prompt(self.prompt_source(lr))

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
        return directory

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        base_model: str | Path | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> OneStepSR:
        """Load a folder written by :meth:`save_pretrained` (the estimator stays float32)."""
        generator = OneStepGenerator.from_pretrained(directory, base_model, dtype, device)
        estimator = estimator_for(generator.config, Path(directory)).to(device)
        return cls(generator, estimator).eval()


def is_onestep_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :meth:`OneStepSR.save_pretrained`."""
    return (Path(path) / CONFIG_NAME).is_file()
