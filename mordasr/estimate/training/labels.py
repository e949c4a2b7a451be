"""Training targets of the learned estimator, derived from known degradation parameters.

A synthetic degradation is first summarised by four physical quantities measured on the grid of
the output image (:class:`Degradation`):

* ``blur_sigma``: standard deviation, in output pixels, of the combined blur kernel;
* ``noise_sigma``: standard deviation of the additive noise, in 8-bit levels (0-255), as it
  reaches the output grid;
* ``jpeg_quality``: the lowest JPEG quality applied (100 = no compression);
* ``downscale``: effective loss of resolution, ``>= 1`` (an image shrunk by 3 and enlarged back
  is 3; a sinc low-pass with cutoff ``omega_c`` counts as ``pi / omega_c``).

Each quantity maps to a factor severity in ``[0, 1]`` by a saturating curve
``1 - exp(-excess / scale)`` (:func:`factor_severities`), so a stronger degradation gets a larger
target until it saturates near 1:

=========  =====================================  =========================================
factor     excess over "clean"                    reference points
=========  =====================================  =========================================
blur       ``max(0, sigma - 0.4)``, scale 1.2     sigma 1 -> 0.39, 2 -> 0.74, 3 -> 0.89
noise      ``sigma``, scale 12                    5 -> 0.34, 10 -> 0.57, 20 -> 0.81
jpeg       ``max(0, 95 - quality)``, scale 25     q 80 -> 0.45, 50 -> 0.83, 30 -> 0.93
downscale  ``log2(downscale)``, scale 1           x1.5 -> 0.44, x2 -> 0.63, x4 -> 0.86
=========  =====================================  =========================================

The seven Table 3 dimensions combine the factor severities ``b, n, j, r`` with a noisy-OR
``1 - prod(1 - w_f * s_f)``; the weights ``w_f`` are a *label scheme* (:data:`LABEL_SCHEMES`).

``v2`` (the default since issue 11) gives every dimension one driving factor, so that the seven
scores carry distinct information and the router can tell *which* degradation an image has, not
only how much. There are four physical factors for seven prompts, so four dimensions read one
factor each, two read a pair at 0.7 each and overall quality is the severity of all four at 0.5:

==============  ==========================================  ============================
dimension       driven by (weight)                          why
==============  ==========================================  ============================
overall         blur, noise, JPEG, resolution (0.5 each)    the overall severity
blurriness      blur (1)                                    a blurred image
noise           noise (1)                                   additive noise
resolution      resolution loss (1)                         resampled from fewer pixels
edge_clarity    blur and resolution loss (0.7 each)         both soften edges
clarity         noise and JPEG (0.7 each)                   both add spurious structure
details         JPEG (1)                                    quantisation removes texture
==============  ==========================================  ============================

Any single factor moves at most three targets (its own, its pair dimension and overall quality);
one factor at full strength gives overall quality 0.5 and all four give 0.94, so the severity (the
mean of the seven) spreads from clean (0) to heavily degraded images.

``v1`` (the shipped ``learned_estimator.safetensors`` and the default model's estimator) let each
dimension be driven fully by its own factors and half by related ones: overall quality takes every
factor fully; blurriness is blur plus half of resolution loss; noise is noise only; resolution is
resolution loss plus half of blur; edge clarity is blur and resolution plus half of JPEG; clarity
is blur and noise plus half of resolution and JPEG; details is JPEG plus half of blur, noise and
resolution. Its seven targets overlap so much that the scores move together (issue 11).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from mordasr.degrade.kernels import KERNEL_TYPES, mixed_kernel, sinc_kernel
from mordasr.estimate.base import DIMENSIONS

FACTORS: tuple[str, ...] = ("blur", "noise", "jpeg", "resolution")

Weights = dict[str, tuple[float, float, float, float]]

LABEL_SCHEMES: dict[str, Weights] = {
    "v1": {
        "overall_quality": (1.0, 1.0, 1.0, 1.0),
        "blurriness": (1.0, 0.0, 0.0, 0.5),
        "noise": (0.0, 1.0, 0.0, 0.0),
        "resolution": (0.5, 0.0, 0.0, 1.0),
        "edge_clarity": (1.0, 0.0, 0.5, 1.0),
        "clarity": (1.0, 1.0, 0.5, 0.5),
        "details": (0.5, 0.5, 1.0, 0.5),
    },
    "v2": {
        "overall_quality": (0.5, 0.5, 0.5, 0.5),
        "blurriness": (1.0, 0.0, 0.0, 0.0),
        "noise": (0.0, 1.0, 0.0, 0.0),
        "resolution": (0.0, 0.0, 0.0, 1.0),
        "edge_clarity": (0.7, 0.0, 0.0, 0.7),
        "clarity": (0.0, 0.7, 0.7, 0.0),
        "details": (0.0, 0.0, 1.0, 0.0),
    },
}
"""Weight of each factor (blur, noise, jpeg, resolution) in each dimension's noisy-OR, per label
scheme (see the module docstring)."""

DEFAULT_SCHEME = "v2"


@dataclass(frozen=True)
class Degradation:
    """Physical summary of a degradation on the output grid (see the module docstring)."""

    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    jpeg_quality: float = 100.0
    downscale: float = 1.0


def _saturate(excess: float, scale: float) -> float:
    return 1.0 - math.exp(-max(0.0, excess) / scale)


def factor_severities(degradation: Degradation) -> tuple[float, float, float, float]:
    """Severities ``(blur, noise, jpeg, resolution)`` in ``[0, 1]`` of one degradation."""
    return (
        _saturate(degradation.blur_sigma - 0.4, 1.2),
        _saturate(degradation.noise_sigma, 12.0),
        _saturate(95.0 - degradation.jpeg_quality, 25.0),
        _saturate(math.log2(max(degradation.downscale, 1.0)), 1.0),
    )


def dimension_labels(degradation: Degradation, scheme: str = DEFAULT_SCHEME) -> torch.Tensor:
    """Soft targets ``(7,)`` in ``[0, 1]``, Table 3 order, for one degradation."""
    if scheme not in LABEL_SCHEMES:
        raise ValueError(f"unknown label scheme {scheme!r}; choose one of {list(LABEL_SCHEMES)}")
    weights = LABEL_SCHEMES[scheme]
    severities = factor_severities(degradation)
    labels = []
    for name in DIMENSIONS:
        keep = 1.0
        for weight, severity in zip(weights[name], severities, strict=True):
            keep *= 1.0 - weight * severity
        labels.append(1.0 - keep)
    return torch.tensor(labels, dtype=torch.float32)


def kernel_spread(kernel: torch.Tensor) -> tuple[float, float]:
    """``(sigma, gain)`` of a normalised ``(k, k)`` kernel: its radial standard deviation per
    axis, ``sqrt(sum(k * (x^2 + y^2)) / 2)``, and the factor ``sqrt(sum(k^2))`` by which it
    scales the standard deviation of white noise."""
    k = kernel.double()
    axis = torch.arange(k.shape[-1], dtype=torch.float64) - (k.shape[-1] - 1) / 2
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    sigma = math.sqrt(max(0.0, float((k * (xx**2 + yy**2)).sum()) / 2))
    return sigma, math.sqrt(float((k**2).sum()))


def _stage_kernel(blur: Mapping[str, Any]) -> torch.Tensor | None:
    if not blur.get("applied"):
        return None
    size = int(blur["kernel_size"])
    if blur["kernel"] == "sinc":
        return sinc_kernel(size, float(blur["omega_c"]))[0]
    return mixed_kernel(
        size,
        torch.tensor([KERNEL_TYPES.index(blur["kernel"])]),
        torch.tensor([float(blur["sigma_x"])]),
        torch.tensor([float(blur["sigma_y"])]),
        torch.tensor([float(blur["theta"])]),
        torch.tensor([float(blur["beta"] or 1.0)]),
    )[0]


def _resample_gain(size_in: int, size_out: int, mode: str) -> float:
    """Approximate factor on white-noise std of a resize without antialiasing: ``area``
    shrinking averages blocks (``out / in``), interpolating shrinks average a few taps (at
    least 0.7), enlarging interpolates between samples (0.8)."""
    if size_out == size_in:
        return 1.0
    if size_out > size_in:
        return 0.8
    ratio = size_out / size_in
    return ratio if mode == "area" else max(ratio, 0.7)


def _noise_sigma(noise: Mapping[str, Any], mean_intensity: float) -> float:
    """8-bit std of a stage's noise; Poisson noise at 256 photon levels has variance
    ``intensity / 256`` (BasicSR counts levels; natural 8-bit images use about 256)."""
    if noise["type"] == "gaussian":
        return float(noise["sigma"])
    return float(noise["poisson_scale"]) * 255.0 * math.sqrt(max(mean_intensity, 0.0) / 256.0)


def pipeline_degradation(params: Mapping[str, Any], mean_intensity: float = 0.4) -> Degradation:
    """Summarise one image's parameters of :func:`mordasr.degrade.degrade` on its LR grid.

    Heights only (the pipeline scales both axes alike). With ``H`` the HR height, ``L = H //
    scale`` the LR height and ``s1``, ``s2`` the heights after the two random resizes:

    * blur: stage-1 kernel sigma times ``L / H`` and stage-2 kernel sigma times ``L / s1``, added
      in quadrature (sigma = radial std of the actual kernel, :func:`kernel_spread`);
    * downscale: ``1 / min(1, s1 / L, s2 / L, cutoffs)`` where a sinc kernel of cutoff ``w`` on a
      grid of height ``G`` limits resolution to ``(w / pi) * G / L``;
    * noise: each stage's noise std attenuated by the filters and resizes that follow it (kernel
      gain ``sqrt(sum k^2)``, :func:`_resample_gain` per resize) and added in quadrature;
      ``mean_intensity`` sets the strength of Poisson noise;
    * jpeg: the worse of the final quality and the stage-1 quality, whose loss ``100 - q`` is
      scaled by ``min(1, L / s1)`` because later shrinking averages its artefacts away.
    """
    height = int(params["hr_size"][0])
    lr = height // int(params["scale"])
    stage1, stage2, final = params["stage1"], params["stage2"], params["final"]
    s1, s2 = int(stage1["resize"]["size"][0]), int(stage2["resize"]["size"][0])

    resolution = min(1.0, s1 / lr, s2 / lr)
    blur_sq, gains = 0.0, []
    for stage, grid in ((stage1, height), (stage2, s1)):
        kernel = _stage_kernel(stage["blur"])
        if kernel is None:
            gains.append(1.0)
            continue
        sigma, gain = kernel_spread(kernel)
        gains.append(gain)
        if stage["blur"]["kernel"] == "sinc":
            resolution = min(resolution, float(stage["blur"]["omega_c"]) / math.pi * grid / lr)
        else:
            blur_sq += (sigma * lr / grid) ** 2
    final_gain = 1.0
    if final["sinc"]["applied"]:
        omega = float(final["sinc"]["omega_c"])
        resolution = min(resolution, omega / math.pi)
        final_gain = kernel_spread(sinc_kernel(int(final["sinc"]["kernel_size"]), omega)[0])[1]

    to_lr = _resample_gain(s2, lr, final["resize_mode"]) * final_gain
    noise1 = _noise_sigma(stage1["noise"], mean_intensity) * gains[1]
    noise1 *= _resample_gain(s1, s2, stage2["resize"]["mode"]) * to_lr
    noise2 = _noise_sigma(stage2["noise"], mean_intensity) * to_lr
    jpeg1 = 100.0 - (100.0 - float(stage1["jpeg_quality"])) * min(1.0, lr / s1)
    return Degradation(
        blur_sigma=math.sqrt(blur_sq),
        noise_sigma=math.hypot(noise1, noise2),
        jpeg_quality=min(float(stage2["jpeg_quality"]), jpeg1),
        downscale=1.0 / max(resolution, 1e-3),
    )
