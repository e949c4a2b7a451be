"""Stable Diffusion 2.1 one-step super-resolution (the paper's system, OSEDiff paradigm)."""

from mordasr.sr.sd.components import SD21_BASE, SDComponents, load_sd_components
from mordasr.sr.sd.config import (
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_PROMPT,
    UNET_TARGETS,
    VAE_ENCODER_TARGETS,
    OneStepConfig,
    paper_unet_mor,
)
from mordasr.sr.sd.generator import OneStepGenerator, read_config
from mordasr.sr.sd.prompts import FixedPrompt, PromptSource
from mordasr.sr.sd.sr_model import OneStepSR

__all__ = [
    "DEFAULT_NEGATIVE_PROMPT",
    "DEFAULT_PROMPT",
    "SD21_BASE",
    "UNET_TARGETS",
    "VAE_ENCODER_TARGETS",
    "FixedPrompt",
    "OneStepConfig",
    "OneStepGenerator",
    "OneStepSR",
    "PromptSource",
    "SDComponents",
    "load_sd_components",
    "paper_unet_mor",
    "read_config",
]
