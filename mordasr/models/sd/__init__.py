"""Stable Diffusion 2.1 one-step super-resolution (the paper's system, OSEDiff paradigm)."""

from mordasr.models.sd.components import SD21_BASE, SDComponents, load_sd_components
from mordasr.models.sd.config import (
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_PROMPT,
    UNET_TARGETS,
    VAE_ENCODER_TARGETS,
    OneStepConfig,
    paper_unet_mor,
)
from mordasr.models.sd.generator import OneStepGenerator, read_config, routed
from mordasr.models.sd.prompts import FixedPrompt, PromptSource

__all__ = [
    "DEFAULT_NEGATIVE_PROMPT",
    "DEFAULT_PROMPT",
    "SD21_BASE",
    "UNET_TARGETS",
    "VAE_ENCODER_TARGETS",
    "FixedPrompt",
    "OneStepConfig",
    "OneStepGenerator",
    "PromptSource",
    "SDComponents",
    "load_sd_components",
    "paper_unet_mor",
    "read_config",
    "routed",
]
