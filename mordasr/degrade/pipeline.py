"""The Real-ESRGAN second-order degradation chain, batched, with every choice drawn per image.

Order (Real-ESRGAN): [unsharp mask] -> blur1 -> resize1 -> noise1 -> JPEG1 -> [blur2] ->
resize2 (to HR/scale x factor) -> noise2 -> then, per image in random order, either
[resize to LR size -> final sinc -> JPEG2] or [JPEG2 -> resize to LR size -> final sinc];
finally clamp and round to 8-bit levels.

Images of one batch get different sizes after the random resizes. They are stored top-left in
shared tensors (see ``canvas``); between the two resizes, where sizes differ most, images of
similar size form a few sub-batches so that little padding is processed. Every operation is
batched; per-image kernels are applied as FFT products (see ``filters``), and on CPU the
memory-bound stages run on cache-sized slices of the batch (``canvas.map_chunks``). All random
parameters come from one CPU generator (device-independent); noise fields are drawn on the
images' device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mordasr.degrade.canvas import full_sizes, size_groups
from mordasr.degrade.codec import jpeg_canvas
from mordasr.degrade.config import (
    Config,
    DegradationConfig,
    SingleFactorConfig,
    SplitConfig,
    StageConfig,
    resolve_config,
)
from mordasr.degrade.filters import filter2d_canvas, usm_sharpen
from mordasr.degrade.kernels import KERNEL_TYPES, delta_kernel, mixed_kernel, sinc_kernel
from mordasr.degrade.noise import add_gaussian_noise, add_poisson_noise_canvas
from mordasr.degrade.resampling import mode_codes, resize_canvas
from mordasr.degrade.single import degrade_single

Seed = int | torch.Generator
_DIRECTIONS = ("up", "down", "keep")
_ORDERS = ("sinc_then_jpeg", "jpeg_then_sinc")
_GROUP_OVERHEAD = 128 * 128
"""Cost of one more sub-batch, in pixels of canvas area (see ``size_groups``)."""


@dataclass
class DegradeResult:
    """Output of :func:`degrade`.

    Attributes:
        lr: ``(B, 3, H // scale, W // scale)`` degraded images in [0, 1], 8-bit levels.
        gt: ``(B, 3, H, W)`` ground truth (unsharp-masked when ``config.gt_usm``; the HR
            images for a single-factor config).
        params: one JSON-serialisable dict per image with every sampled parameter
            (schemas in ``mordasr.degrade``'s docstring).
    """

    lr: Tensor
    gt: Tensor
    params: list[dict[str, Any]]


class _Rng:
    """Parameter draws on CPU; noise draws on the image device."""

    def __init__(self, seed: Seed, device: torch.device) -> None:
        if isinstance(seed, torch.Generator) and seed.device.type == "cpu":
            self.cpu = seed
        elif isinstance(seed, torch.Generator):
            derived = int(torch.randint(0, 2**62, (1,), generator=seed, device=seed.device))
            self.cpu = torch.Generator().manual_seed(derived)
        else:
            self.cpu = torch.Generator().manual_seed(int(seed))
        if device.type == "cpu":
            self.noise = self.cpu
        elif isinstance(seed, torch.Generator) and seed.device == device:
            self.noise = seed
        else:
            derived = int(torch.randint(0, 2**62, (1,), generator=self.cpu))
            self.noise = torch.Generator(device=device).manual_seed(derived)

    def rand(self, n: int) -> Tensor:
        return torch.rand(n, generator=self.cpu, dtype=torch.float64)

    def uniform(self, lo: float, hi: float, n: int) -> Tensor:
        return lo + (hi - lo) * self.rand(n)

    def choice(self, probs: tuple[float, ...], n: int) -> Tensor:
        weights = torch.tensor(probs, dtype=torch.float64)
        return torch.multinomial(weights, n, replacement=True, generator=self.cpu)

    def randint(self, high: int, n: int) -> Tensor:
        return torch.randint(0, high, (n,), generator=self.cpu)


def _odd_sizes(largest: int) -> Tensor:
    return torch.arange(7, largest + 1, 2)


def _sample_blur(stage: StageConfig, n: int, rng: _Rng) -> tuple[Tensor, list[dict[str, Any]]]:
    sizes = _odd_sizes(stage.kernel_size)[rng.randint(len(_odd_sizes(stage.kernel_size)), n)]
    applied = rng.rand(n) < stage.blur_prob
    is_sinc = rng.rand(n) < stage.sinc_prob
    types = torch.tensor([KERNEL_TYPES.index(k) for k in stage.kernel_list])
    kind = types[rng.choice(stage.kernel_prob, n)]
    sigma_x = rng.uniform(*stage.blur_sigma, n)
    sigma_y = rng.uniform(*stage.blur_sigma, n)
    theta = rng.uniform(-math.pi, math.pi, n)
    low_branch = rng.rand(n) < 0.5
    u_beta = rng.rand(n)
    family = kind // 2
    lo, hi = stage.betag_range
    betag = torch.where(low_branch, lo + (1 - lo) * u_beta, 1 + (hi - 1) * u_beta)
    lo, hi = stage.betap_range
    betap = torch.where(low_branch, lo + (1 - lo) * u_beta, 1 + (hi - 1) * u_beta)
    beta = torch.where(family == 1, betag, betap)
    omega_lo = torch.where(sizes < 13, math.pi / 3, math.pi / 5)
    omega = omega_lo + (math.pi - omega_lo) * rng.rand(n)

    k = stage.kernel_size
    kernels = torch.where(
        is_sinc.view(-1, 1, 1),
        sinc_kernel(k, omega, sizes),
        mixed_kernel(k, kind, sigma_x, sigma_y, theta, beta, sizes),
    )
    kernels = torch.where(applied.view(-1, 1, 1), kernels, delta_kernel(k, n))

    params = []
    for i in range(n):
        p: dict[str, Any] = {"applied": bool(applied[i])}
        p.update(dict.fromkeys(("kernel", "kernel_size", "sigma_x", "sigma_y", "theta")))
        p.update(dict.fromkeys(("beta", "omega_c")))
        if applied[i]:
            p["kernel_size"] = int(sizes[i])
            if is_sinc[i]:
                p["kernel"] = "sinc"
                p["omega_c"] = float(omega[i])
            else:
                iso = bool(kind[i] % 2 == 0)
                p["kernel"] = KERNEL_TYPES[int(kind[i])]
                p["sigma_x"] = float(sigma_x[i])
                p["sigma_y"] = float(sigma_x[i] if iso else sigma_y[i])
                p["theta"] = 0.0 if iso else float(theta[i])
                p["beta"] = None if family[i] == 0 else float(beta[i])
        params.append(p)
    return kernels, params


def _sample_resize(stage: StageConfig, n: int, rng: _Rng) -> tuple[Tensor, Tensor, list[str]]:
    direction = rng.choice(stage.resize_prob, n)
    up = rng.uniform(1.0, stage.resize_range[1], n)
    down = rng.uniform(stage.resize_range[0], 1.0, n)
    factor = torch.where(direction == 0, up, torch.where(direction == 1, down, torch.ones(n)))
    names = [stage.resize_modes[int(i)] for i in rng.randint(len(stage.resize_modes), n)]
    return direction, factor, names


def _sample_noise(stage: StageConfig, n: int, rng: _Rng) -> dict[str, Tensor]:
    return {
        "gaussian": rng.rand(n) < stage.gaussian_noise_prob,
        "gray": rng.rand(n) < stage.gray_noise_prob,
        "sigma": rng.uniform(*stage.noise_range, n),
        "poisson_scale": rng.uniform(*stage.poisson_scale_range, n),
    }


def _sample_quality(stage: StageConfig, n: int, rng: _Rng) -> Tensor:
    return rng.uniform(*stage.jpeg_range, n).round().long()


def _apply_noise(
    x: Tensor, hs: Tensor, ws: Tensor, draw: dict[str, Tensor], gen: torch.Generator
) -> Tensor:
    dev = x.device
    gaussian = draw["gaussian"].to(dev)
    gray = draw["gray"].to(dev)
    out = x.clone()
    g_idx = gaussian.nonzero().flatten()
    p_idx = (~gaussian).nonzero().flatten()
    if g_idx.numel():
        sigma = draw["sigma"].to(dev, x.dtype)[g_idx]
        out[g_idx] = add_gaussian_noise(x[g_idx], sigma, gray[g_idx], gen)
    if p_idx.numel():
        scale = draw["poisson_scale"].to(dev, x.dtype)[p_idx]
        out[p_idx] = add_poisson_noise_canvas(
            x[p_idx], hs[p_idx], ws[p_idx], scale, gray[p_idx], gen
        )
    return out


def _noise_params(draw: dict[str, Tensor], i: int) -> dict[str, Any]:
    gaussian = bool(draw["gaussian"][i])
    return {
        "type": "gaussian" if gaussian else "poisson",
        "gray": bool(draw["gray"][i]),
        "sigma": float(draw["sigma"][i]) if gaussian else None,
        "poisson_scale": None if gaussian else float(draw["poisson_scale"][i]),
    }


def _sample_final_sinc(
    cfg: DegradationConfig, n: int, rng: _Rng
) -> tuple[Tensor, list[dict[str, Any]]]:
    k = cfg.final_sinc_kernel_size
    sizes = _odd_sizes(k)[rng.randint(len(_odd_sizes(k)), n)]
    applied = rng.rand(n) < cfg.final_sinc_prob
    omega = rng.uniform(math.pi / 3, math.pi, n)
    kernels = torch.where(applied.view(-1, 1, 1), sinc_kernel(k, omega, sizes), delta_kernel(k, n))
    params = [
        {
            "applied": bool(applied[i]),
            "kernel_size": int(sizes[i]) if applied[i] else None,
            "omega_c": float(omega[i]) if applied[i] else None,
        }
        for i in range(n)
    ]
    return kernels, params


def _resized_sizes(base_h: float, base_w: float, factor: Tensor) -> tuple[Tensor, Tensor]:
    hs = (base_h * factor).floor().long().clamp(min=1)
    ws = (base_w * factor).floor().long().clamp(min=1)
    return hs, ws


def _final(
    x: Tensor,
    hs: Tensor,
    ws: Tensor,
    lr_size: tuple[int, int],
    sinc_first: Tensor,
    modes: Tensor,
    sinc: Tensor,
    quality: Tensor,
) -> Tensor:
    """Resize to the LR size + sinc, and JPEG, in each image's own order."""
    dev = x.device
    out = x.new_empty(x.shape[0], x.shape[1], *lr_size)
    for first in (True, False):
        idx = (sinc_first == first).nonzero().flatten()
        if not idx.numel():
            continue
        part, ph, pw = x[idx.to(dev)], hs[idx.to(dev)], ws[idx.to(dev)]
        lr_h = torch.full_like(ph, lr_size[0])
        lr_w = torch.full_like(pw, lr_size[1])
        k, q, m = sinc[idx], quality[idx], modes[idx]
        if first:
            part = resize_canvas(part, ph, pw, lr_h, lr_w, m)
            part = filter2d_canvas(part, lr_h, lr_w, k).clamp(0, 1)
            part = jpeg_canvas(part, lr_h, lr_w, q)
        else:
            part = jpeg_canvas(part.clamp(0, 1), ph, pw, q)
            part = resize_canvas(part, ph, pw, lr_h, lr_w, m)
            part = filter2d_canvas(part, lr_h, lr_w, k)
        out[idx.to(dev)] = part
    return out


@dataclass
class _StageDraw:
    """Everything drawn for one stage, per image."""

    kernels: Tensor
    blur: list[dict[str, Any]]
    direction: Tensor
    factor: Tensor
    modes: list[str]
    noise: dict[str, Tensor]
    quality: Tensor

    @classmethod
    def sample(cls, stage: StageConfig, n: int, rng: _Rng) -> _StageDraw:
        kernels, blur = _sample_blur(stage, n, rng)
        direction, factor, modes = _sample_resize(stage, n, rng)
        noise = _sample_noise(stage, n, rng)
        return cls(kernels, blur, direction, factor, modes, noise, _sample_quality(stage, n, rng))

    def params(self, i: int, size: tuple[int, int]) -> dict[str, Any]:
        return {
            "blur": self.blur[i],
            "resize": {
                "direction": _DIRECTIONS[int(self.direction[i])],
                "factor": float(self.factor[i]),
                "mode": self.modes[i],
                "size": list(size),
            },
            "noise": _noise_params(self.noise, i),
            "jpeg_quality": int(self.quality[i]),
        }


def _select(draw: dict[str, Tensor], idx: list[int]) -> dict[str, Tensor]:
    return {k: v[idx] for k, v in draw.items()}


def random_resize(
    x: Tensor, stage: StageConfig | None = None, seed: Seed = 0
) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """Resize each image of ``(B, C, H, W)`` by its own random factor and mode.

    Factors and modes are drawn as in ``stage`` (default: Real-ESRGAN's first stage). Returns
    the images (each at its own size) and one parameter dict per image.
    """
    stage = stage or StageConfig()
    n, _, height, width = x.shape
    rng = _Rng(seed, x.device)
    direction, factor, names = _sample_resize(stage, n, rng)
    hs, ws = full_sizes(x)
    out_hs, out_ws = (t.to(x.device) for t in _resized_sizes(height, width, factor))
    canvas = resize_canvas(x, hs, ws, out_hs, out_ws, mode_codes(names, n))
    images = [canvas[i, :, : out_hs[i], : out_ws[i]] for i in range(n)]
    params = [
        {
            "direction": _DIRECTIONS[int(direction[i])],
            "factor": float(factor[i]),
            "mode": names[i],
            "size": [int(out_hs[i]), int(out_ws[i])],
        }
        for i in range(n)
    ]
    return images, params


@torch.no_grad()
def degrade(
    hr: Tensor,
    config: Config | str = "realesrgan",
    scale: int = 4,
    seed: Seed = 0,
) -> DegradeResult:
    """Synthesise LR images from HR images ``(B, 3, H, W)`` in [0, 1] with the two-stage model
    (a :class:`DegradationConfig`) or a single factor (a :class:`SingleFactorConfig`, see
    :mod:`mordasr.degrade.single`).

    ``config`` is a config or a preset name (``PRESETS``); ``seed`` an int or a
    ``torch.Generator``. The same seed, config and input give the same output and parameters.
    """
    if hr.dim() != 4 or hr.shape[1] != 3:
        raise ValueError(f"expected HR images (B, 3, H, W), got shape {tuple(hr.shape)}")
    if hr.shape[2] < scale or hr.shape[3] < scale:
        raise ValueError(f"HR size {tuple(hr.shape[2:])} is smaller than the scale {scale}")
    cfg = resolve_config(config)
    hr = hr.float().clamp(0, 1)
    if isinstance(cfg, SplitConfig):
        return _degrade_split(hr, cfg, scale, seed)
    if isinstance(cfg, SingleFactorConfig):
        lr, drawn = degrade_single(hr, cfg, scale, seed)
        return DegradeResult(lr=lr, gt=hr, params=drawn)
    n, _, height, width = hr.shape
    dev = hr.device
    rng = _Rng(seed, dev)

    sharp = (
        usm_sharpen(hr, cfg.usm_weight, cfg.usm_threshold, cfg.usm_radius)
        if cfg.gt_usm or cfg.degrade_usm
        else hr
    )
    gt = sharp if cfg.gt_usm else hr
    x = sharp if cfg.degrade_usm else hr

    one = _StageDraw.sample(cfg.stage1, n, rng)
    two = _StageDraw.sample(cfg.stage2, n, rng)
    sinc_first = rng.rand(n) < cfg.sinc_first_prob
    final_modes = [
        cfg.final_resize_modes[int(i)] for i in rng.randint(len(cfg.final_resize_modes), n)
    ]
    sinc, sinc_params = _sample_final_sinc(cfg, n, rng)

    hs0, ws0 = full_sizes(x)
    hs1, ws1 = (t.to(dev) for t in _resized_sizes(height, width, one.factor))
    hs2, ws2 = (t.to(dev) for t in _resized_sizes(height / scale, width / scale, two.factor))
    x = filter2d_canvas(x, hs0, ws0, one.kernels.to(dev))
    mid = x.new_zeros(n, x.shape[1], int(hs2.max()), int(ws2.max()))
    for group in size_groups((hs1 * ws1).tolist(), _GROUP_OVERHEAD):
        g = torch.tensor(group, device=dev)
        h1, w1 = hs1[g], ws1[g]
        part = resize_canvas(
            x[g], hs0[g], ws0[g], h1, w1, mode_codes([one.modes[i] for i in group], len(group))
        )
        part = _apply_noise(part, h1, w1, _select(one.noise, group), rng.noise)
        part = jpeg_canvas(part.clamp(0, 1), h1, w1, one.quality[group])
        part = filter2d_canvas(part, h1, w1, two.kernels[group].to(dev))
        part = resize_canvas(
            part, h1, w1, hs2[g], ws2[g], mode_codes([two.modes[i] for i in group], len(group))
        )
        mid[g, :, : part.shape[2], : part.shape[3]] = part
    x = _apply_noise(mid, hs2, ws2, two.noise, rng.noise)
    x = _final(
        x,
        hs2,
        ws2,
        (height // scale, width // scale),
        sinc_first,
        mode_codes(final_modes, n),
        sinc.to(dev),
        two.quality,
    )
    lr = torch.clamp((x * 255).round(), 0, 255) / 255

    params = [
        {
            "scale": scale,
            "hr_size": [height, width],
            "gt_usm": cfg.gt_usm,
            "degrade_usm": cfg.degrade_usm,
            "stage1": one.params(i, (int(hs1[i]), int(ws1[i]))),
            "stage2": two.params(i, (int(hs2[i]), int(ws2[i]))),
            "final": {
                "order": _ORDERS[0] if sinc_first[i] else _ORDERS[1],
                "resize_mode": final_modes[i],
                "sinc": sinc_params[i],
            },
        }
        for i in range(n)
    ]
    return DegradeResult(lr=lr, gt=gt, params=params)


def _degrade_split(hr: Tensor, cfg: SplitConfig, scale: int, seed: Seed) -> DegradeResult:
    """Both presets of ``cfg`` on every image, joined at a column drawn per image (LR and
    ground truth alike); each image's parameters hold both presets' and the split."""
    first, second = resolve_config(cfg.first), resolve_config(cfg.second)
    if isinstance(first, SplitConfig) or isinstance(second, SplitConfig):
        raise ValueError("a split joins two plain presets, not other splits")
    rng = _Rng(seed, hr.device)
    seeds = torch.randint(0, 2**62, (2,), generator=rng.cpu).tolist()
    a = degrade(hr, first, scale, int(seeds[0]))
    b = degrade(hr, second, scale, int(seeds[1]))
    n, width = hr.shape[0], a.lr.shape[-1]
    columns = (rng.uniform(*cfg.split, n) * width).round().long()
    first_left = rng.rand(n) < 0.5
    lr = _join(a.lr, b.lr, columns, first_left)
    gt = _join(a.gt, b.gt, columns * scale, first_left)
    params = [
        {
            "scale": scale,
            "hr_size": list(hr.shape[-2:]),
            "split": {
                "column": int(columns[i]),
                "first_side": "left" if first_left[i] else "right",
                "first": cfg.first,
                "second": cfg.second,
            },
            "first": a.params[i],
            "second": b.params[i],
        }
        for i in range(n)
    ]
    return DegradeResult(lr=lr, gt=gt, params=params)


def _join(first: Tensor, second: Tensor, columns: Tensor, first_left: Tensor) -> Tensor:
    """Per image, ``first`` left of its column and ``second`` from it on (or the reverse where
    ``first_left`` is false)."""
    positions = torch.arange(first.shape[-1], device=first.device)
    left = positions[None, :] < columns.to(first.device)[:, None]
    take_first = left == first_left.to(first.device)[:, None]
    return torch.where(take_first[:, None, None, :], first, second)
