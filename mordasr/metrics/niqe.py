"""NIQE: Natural Image Quality Evaluator (Mittal et al. 2013), MATLAB-compatible.

Follows the reference MATLAB release as ported by BasicSR: the luma channel (rounded to integer
levels) is cut into 96x96 blocks; at two scales (the second obtained with MATLAB-style bicubic
``imresize`` by 1/2) each block's mean-subtracted contrast-normalised (MSCN) coefficients are
summarised by 18 generalised-Gaussian statistics; a Gaussian fitted to all blocks is compared with
the pristine-image model shipped with iqa-torch. Lower scores mean more natural images.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from mordasr.metrics.color import rgb_to_y
from mordasr.nets.pretrained import niqe_pristine_params

BLOCK = 96
_PAIR_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


def _cubic(t: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``imresize`` bicubic)."""
    a = t.abs()
    near = (1.5 * a**3 - 2.5 * a**2 + 1.0) * (a <= 1)
    far = (-0.5 * a**3 + 2.5 * a**2 - 4.0 * a + 2.0) * ((a > 1) & (a <= 2))
    return near + far


def imresize_matrix(in_size: int, scale: float) -> torch.Tensor:
    """Dense (out, in) matrix of MATLAB ``imresize`` along one axis: bicubic, antialiased when
    downscaling, symmetric boundary handling."""
    out_size = math.ceil(in_size * scale)
    width = 4.0 / scale if scale < 1 else 4.0
    kernel_scale = scale if scale < 1 else 1.0
    centres = torch.arange(1, out_size + 1, dtype=torch.float64) / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(centres - width / 2)
    taps = math.ceil(width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    weights = kernel_scale * _cubic(kernel_scale * (centres[:, None] - indices))
    weights = weights / weights.sum(dim=1, keepdim=True)
    period = 2 * in_size
    mirrored = torch.remainder(indices.long() - 1, period)
    mirrored = torch.where(mirrored < in_size, mirrored, period - 1 - mirrored)
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    matrix.scatter_add_(1, mirrored, weights)
    return matrix


def imresize(image: torch.Tensor, scale: float) -> torch.Tensor:
    """MATLAB-compatible bicubic resize of a 2-D float64 image."""
    rows = imresize_matrix(image.shape[0], scale)
    cols = imresize_matrix(image.shape[1], scale)
    return rows @ image @ cols.T


@lru_cache(maxsize=1)
def _gamma_table() -> tuple[torch.Tensor, torch.Tensor]:
    shapes = torch.arange(0.2, 10.001, 0.001, dtype=torch.float64)
    inverse = 1.0 / shapes
    ratio = torch.exp(
        2 * torch.lgamma(2 * inverse) - torch.lgamma(inverse) - torch.lgamma(3 * inverse)
    )
    return shapes, ratio


def _gamma_ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    return torch.exp(torch.lgamma(numerator) - torch.lgamma(denominator))


def fit_aggd(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Moment-matching fit of an asymmetric generalised Gaussian to each of N flattened blocks
    (N, M); returns shape ``alpha`` and left/right scales ``beta_l``, ``beta_r``, each (N,)."""
    negative, positive = blocks < 0, blocks > 0
    squares = blocks.pow(2)
    left_std = ((squares * negative).sum(1) / negative.sum(1)).sqrt()
    right_std = ((squares * positive).sum(1) / positive.sum(1)).sqrt()
    gamma_hat = left_std / right_std
    r_hat = blocks.abs().mean(1).pow(2) / squares.mean(1)
    r_hat_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    shapes, ratio = _gamma_table()
    alpha = shapes[torch.argmin((ratio[None, :] - r_hat_norm[:, None]) ** 2, dim=1)]
    spread = _gamma_ratio(1 / alpha, 3 / alpha).sqrt()
    return alpha, left_std * spread, right_std * spread


def block_features(blocks: torch.Tensor) -> torch.Tensor:
    """The 18 NIQE statistics of each MSCN block (N, h, w) -> (N, 18)."""
    flat = blocks.flatten(1)
    alpha, beta_l, beta_r = fit_aggd(flat)
    columns = [alpha, (beta_l + beta_r) / 2]
    for shift in _PAIR_SHIFTS:
        products = (blocks * torch.roll(blocks, shift, dims=(1, 2))).flatten(1)
        alpha, beta_l, beta_r = fit_aggd(products)
        mean = (beta_r - beta_l) * _gamma_ratio(2 / alpha, 1 / alpha)
        columns += [alpha, mean, beta_l, beta_r]
    return torch.stack(columns, dim=1)


def mscn(image: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Mean-subtracted contrast-normalised coefficients of a 2-D image (local Gaussian stats)."""
    pad = window.shape[-1] // 2
    x = image[None, None]
    mu = F.conv2d(F.pad(x, (pad,) * 4, mode="replicate"), window)
    second = F.conv2d(F.pad(x * x, (pad,) * 4, mode="replicate"), window)
    sigma = (second - mu**2).abs().sqrt()
    return ((x - mu) / (sigma + 1))[0, 0]


def _split_blocks(image: torch.Tensor, size: int) -> torch.Tensor:
    rows, cols = image.shape[0] // size, image.shape[1] // size
    blocks = image[: rows * size, : cols * size].reshape(rows, size, cols, size)
    return blocks.permute(0, 2, 1, 3).reshape(rows * cols, size, size)


def niqe_features(luma: torch.Tensor) -> torch.Tensor:
    """(N, 36) features of the 96x96 blocks of a 2-D luma image in [0, 255]."""
    height, width = luma.shape
    if height < BLOCK or width < BLOCK:
        raise ValueError(f"NIQE needs images of at least {BLOCK}x{BLOCK}, got {height}x{width}")
    params = niqe_pristine_params()
    window = torch.from_numpy(params["gaussian_window"])[None, None]
    image = luma[: height // BLOCK * BLOCK, : width // BLOCK * BLOCK].to(torch.float64)
    per_scale = []
    for scale in (1, 2):
        per_scale.append(block_features(_split_blocks(mscn(image, window), BLOCK // scale)))
        if scale == 1:
            image = imresize(image / 255.0, 0.5) * 255.0
    return torch.cat(per_scale, dim=1)


def niqe_from_luma(luma: torch.Tensor) -> float:
    """NIQE score of a 2-D luma image in [0, 255] (already rounded if MATLAB parity matters).

    With a single usable block (images under 192 px on a side) the sample covariance is
    undefined; it is taken as zero so that only the pristine covariance is used (the MATLAB and
    BasicSR code fail in that case).
    """
    features = niqe_features(luma)
    params = niqe_pristine_params()
    mu_pristine = torch.from_numpy(params["mu_pris_param"])[0]
    cov_pristine = torch.from_numpy(params["cov_pris_param"])
    mu = torch.nanmean(features, dim=0)
    complete = features[~torch.isnan(features).any(dim=1)]
    cov = torch.cov(complete.T) if len(complete) > 1 else torch.zeros_like(cov_pristine)
    delta = mu_pristine - mu
    inverse = torch.linalg.pinv((cov_pristine + cov) / 2)
    return float(torch.sqrt(delta @ inverse @ delta))


def niqe(x: torch.Tensor) -> torch.Tensor:
    """NIQE of each (B, 3, H, W) image in [0, 1], computed on the rounded Y channel; (B,)."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) images, got {tuple(x.shape)}")
    scores = [niqe_from_luma(rgb_to_y(image.double().cpu())[0].round()) for image in x]
    return torch.tensor(scores, dtype=torch.float32)
