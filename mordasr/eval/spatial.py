"""`mordasr analyze --spatial IMAGE`: where on an image a MoR model keeps real experts under
region routing, and the uncertainty map M3ESR routes by.

For every region of the image (:mod:`mordasr.sr.regions`) the model's routers decide on the
region's smoothed scores; the picture shows the real (non-zero) experts kept per routed layer,
averaged over the layers, over the image, beside the uncertainty map
``|backbone(x) - bicubic(x)|`` of the backbone without adapters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mordasr.eval.plots import plot_region_map
from mordasr.mor import mor_config, route
from mordasr.sr.mor_sr import MoRSuperResolver
from mordasr.sr.regions import RegionScores

EXPERTS_FILE = "spatial_experts.png"
UNCERTAINTY_FILE = "spatial_uncertainty.png"


@dataclass(frozen=True)
class SpatialMaps:
    """One image's region routing, region by region, and its uncertainty map."""

    regions: RegionScores
    real_experts: Tensor
    """(rows, cols) real experts kept per routed layer, mean over layers."""
    uncertainty: Tensor
    """(scale * h, scale * w) the uncertainty map."""


def region_real_experts(model: MoRSuperResolver, regions: RegionScores) -> Tensor:
    """(rows, cols) real experts kept per routed layer (mean over layers) by each region of
    the first image of ``regions``."""
    rows, cols = regions.grid.shape
    stats = route(model.backbone, regions.per_region()[: rows * cols]).stats()
    if not stats:
        raise ValueError("the model has no routed MoR layers")
    real = [s.indices.shape[1] - s.num_zero.float() for s in stats.values()]
    return torch.stack(real).mean(dim=0).view(rows, cols)


@torch.no_grad()
def spatial_maps(model: MoRSuperResolver, lr: Tensor) -> SpatialMaps:
    """Region routing and uncertainty of ``lr`` (1, 3, h, w) in [0, 1]."""
    regions = model.region_scores(lr)
    return SpatialMaps(regions, region_real_experts(model, regions), model.uncertainty(lr)[0])


def write_spatial(model: MoRSuperResolver, lr: Tensor, out: Path, name: str) -> SpatialMaps:
    """Write :data:`EXPERTS_FILE` and :data:`UNCERTAINTY_FILE` for ``lr`` (called ``name``)
    into ``out``; returns the maps."""
    maps = spatial_maps(model, lr)
    picture = lr[0].permute(1, 2, 0).clamp(0, 1).numpy()
    top_k = mor_config(model.backbone).top_k
    plot_region_map(
        picture,
        maps.real_experts.numpy(),
        f"Real experts kept per region ({model.spec.region_scores} regions): {name}",
        f"real experts per layer (of top-{top_k})",
        out / EXPERTS_FILE,
        value_range=(0.0, float(top_k)),
    )
    uncertainty = maps.uncertainty.numpy()
    plot_region_map(
        picture,
        uncertainty,
        f"Uncertainty |backbone - bicubic|: {name}",
        "mean absolute difference",
        out / UNCERTAINTY_FILE,
        value_range=(0.0, float(np.percentile(uncertainty, 99)) or 1.0),
    )
    return maps
