"""Stable Diffusion 2.1 one-step super-resolution (the paper's system, OSEDiff paradigm)."""

from mordasr.models.sd.components import SD21_BASE, SDComponents, load_sd_components

__all__ = ["SD21_BASE", "SDComponents", "load_sd_components"]
