"""Separable resizing where every image has its own output size and interpolation mode.

Each output row (then column) is a weighted sum of a few input rows whose indices and weights
are computed per image, so one call resizes a whole batch with mixed modes and sizes. The maths
follow ``torch.nn.functional.interpolate`` with ``align_corners=False`` and no antialiasing:
``area`` is adaptive average pooling, ``bilinear`` clamps the source coordinate at 0, ``bicubic``
uses the cubic convolution kernel with a = -0.75 and clamps tap indices at the borders.
Source coordinates use the ratio of input to output size (``interpolate(size=...)``), also
where Real-ESRGAN passes a ``scale_factor`` (a sub-pixel difference).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mordasr.degrade.canvas import full_sizes
from mordasr.degrade.config import RESIZE_MODES

_CUBIC_A = -0.75


def _cubic_weights(t: Tensor) -> Tensor:
    a = _CUBIC_A

    def near(d: Tensor) -> Tensor:
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d: Tensor) -> Tensor:
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=-1)


def axis_taps(
    in_sizes: Tensor, out_sizes: Tensor, modes: Tensor, length: int
) -> tuple[Tensor, Tensor]:
    """Indices and weights ``(B, length, T)`` resampling one axis of every image.

    Output positions past an image's own size repeat its last output, so the canvas is
    edge-filled.
    """
    n_in = in_sizes.view(-1, 1, 1)
    n_out = out_sizes.view(-1, 1, 1)
    dst = torch.minimum(torch.arange(length, device=in_sizes.device).view(1, -1, 1), n_out - 1)
    scale = n_in.double() / n_out.double()
    src = (dst.double() + 0.5) * scale - 0.5

    start = torch.div(dst * n_in, n_out, rounding_mode="floor")
    end = torch.div((dst + 1) * n_in + n_out - 1, n_out, rounding_mode="floor")
    count = end - start
    present = set(modes.unique().tolist())
    taps = max(
        int(count.max()) if 0 in present else 1,
        2 if 1 in present else 1,
        4 if 2 in present else 1,
    )
    t = torch.arange(taps, device=in_sizes.device).view(1, 1, -1)

    index = start + t
    weight = (t < count).double() / count.double()
    mode = modes.view(-1, 1, 1)
    if 1 in present:
        lin_src = src.clamp(min=0)
        lin_i0 = torch.minimum(lin_src.floor().long(), n_in - 1)
        lam = (lin_src - lin_i0.double()).clamp(0, 1)
        lin_w = torch.where(t == 0, 1 - lam, torch.where(t == 1, lam, torch.zeros_like(lam)))
        index = torch.where(mode == 1, lin_i0 + t, index)
        weight = torch.where(mode == 1, lin_w, weight)
    if 2 in present:
        cub_i0 = src.floor()
        cub_w = torch.nn.functional.pad(_cubic_weights((src - cub_i0).squeeze(-1)), (0, taps - 4))
        index = torch.where(mode == 2, cub_i0.long() - 1 + t, index)
        weight = torch.where(mode == 2, cub_w, weight)
    index = torch.minimum(index.clamp(min=0), n_in - 1)
    return index, weight


def axis_matrices(
    in_sizes: Tensor, out_sizes: Tensor, modes: Tensor, length: int, in_length: int
) -> Tensor:
    """Dense per-image resampling matrices ``(B, length, in_length)`` of one axis."""
    index, weight = axis_taps(in_sizes, out_sizes, modes, length)
    matrix = weight.new_zeros(index.shape[0], length, in_length)
    return matrix.scatter_add_(2, index, weight)


def resize_canvas(
    x: Tensor, hs: Tensor, ws: Tensor, out_hs: Tensor, out_ws: Tensor, modes: Tensor
) -> Tensor:
    """Resize each valid image of a canvas to its own ``(out_hs, out_ws)`` with its own mode.

    Returns a canvas of ``max(out_hs) x max(out_ws)``; each axis is one batched matrix product.
    """
    modes = modes.to(hs.device)
    _, _, height, width = x.shape
    rows = axis_matrices(hs, out_hs, modes, int(out_hs.max()), height).to(x.dtype)
    cols = axis_matrices(ws, out_ws, modes, int(out_ws.max()), width).to(x.dtype)
    return rows.unsqueeze(1) @ x @ cols.transpose(1, 2).unsqueeze(1)


def mode_codes(modes: str | Sequence[str], batch: int) -> Tensor:
    """Integer codes (index in ``RESIZE_MODES``) of one mode or one mode per image."""
    names = [modes] * batch if isinstance(modes, str) else list(modes)
    if len(names) != batch:
        raise ValueError(f"need one mode per image ({batch}), got {len(names)}")
    try:
        return torch.tensor([RESIZE_MODES.index(m) for m in names], dtype=torch.long)
    except ValueError:
        raise ValueError(f"resize modes must be among {RESIZE_MODES}, got {names}") from None


def resize(x: Tensor, size: tuple[int, int], mode: str | Sequence[str] = "bicubic") -> Tensor:
    """Resize a batch ``(B, C, H, W)`` to ``size`` with one mode or one mode per image."""
    hs, ws = full_sizes(x)
    b = x.shape[0]
    out_h = torch.full_like(hs, size[0])
    out_w = torch.full_like(ws, size[1])
    return resize_canvas(x, hs, ws, out_h, out_w, mode_codes(mode, b))
