"""Loading a diffusers-layout Stable Diffusion folder (a tiny random one the test writes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mordasr.sr.sd import load_sd_components


def test_every_component_loads_frozen_in_eval_mode(sd_dir: Path) -> None:
    parts = load_sd_components(sd_dir)
    for module in (parts.unet, parts.vae, parts.text_encoder):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    assert parts.scheduler.config.num_train_timesteps == 1000


def test_vae_scale_factor_comes_from_the_vae_config(sd_dir: Path) -> None:
    assert load_sd_components(sd_dir).vae_scale_factor == 2


def test_components_load_in_the_requested_dtype(sd_dir: Path) -> None:
    parts = load_sd_components(sd_dir, dtype=torch.bfloat16)
    assert next(parts.unet.parameters()).dtype == torch.bfloat16


def test_a_folder_without_unet_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a diffusers model folder"):
        load_sd_components(tmp_path)
