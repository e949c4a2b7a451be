"""Colour conversion shared by the metrics."""

from __future__ import annotations

import torch

_Y_WEIGHTS = (65.481, 128.553, 24.966)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of RGB in [0, 1], in [16, 235] as MATLAB's ``rgb2ycbcr`` (and BasicSR) do.

    Shape (..., 3, H, W) -> (..., 1, H, W).
    """
    weights = x.new_tensor(_Y_WEIGHTS).view(3, 1, 1)
    return 16.0 + (x * weights).sum(dim=-3, keepdim=True)
