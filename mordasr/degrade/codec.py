"""Baseline JPEG compression and decompression in torch, one quality per image.

Reproduces ``Image.save(f, "JPEG", quality=q)`` followed by a default decode in Pillow
(libjpeg-turbo) bit for bit: 8-bit input, libjpeg's fixed-point RGB -> YCbCr, 4:2:0 chroma
subsampling (2x2 sums with libjpeg's alternating rounding bias, edge padding exactly as libjpeg
pads), the IJG luminance/chrominance tables scaled by quality (baseline, clamped to 255),
libjpeg's integer "islow" forward DCT, rounding quantisation, its integer inverse DCT, the
"fancy" triangle chroma upsampling and fixed-point YCbCr -> RGB. Integer arithmetic is carried
in int32 (as libjpeg-turbo's SIMD code does) or in float32 where every intermediate is an
exactly representable integer. The tests
compare against Pillow for several sizes (including odd ones) and qualities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mordasr.degrade.canvas import full_sizes, map_chunks, repeat_last_cols, repeat_last_rows

LUMA_TABLE = torch.tensor(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=torch.long,
)
"""IJG (JPEG Annex K) luminance quantisation table at quality 50, row-major."""

CHROMA_TABLE = torch.tensor(
    [
        [17, 18, 24, 47, 99, 99, 99, 99],
        [18, 21, 26, 66, 99, 99, 99, 99],
        [24, 26, 56, 99, 99, 99, 99, 99],
        [47, 66, 99, 99, 99, 99, 99, 99],
    ]
    + [[99] * 8] * 4,
    dtype=torch.long,
)
"""IJG (JPEG Annex K) chrominance quantisation table at quality 50, row-major."""

_ONE = 65536.0
_HALF = 32768.0


def _fix(value: float) -> float:
    """libjpeg's 16-bit fixed-point constant; products with bytes stay exact in float32."""
    return float(int(value * _ONE + 0.5))


# libjpeg's "islow" integer DCT (jfdctint.c / jidctint.c): 13-bit constants, 2 extra bits
# between the passes; both DCTs here reproduce it bit for bit.
_CONST_BITS = 13
_PASS1_BITS = 2
(F0298, F0390, F0541, F0765, F0899, F1175, F1501, F1847, F1961, F2053, F2562, F3072) = (
    2446,
    3196,
    4433,
    6270,
    7373,
    9633,
    12299,
    15137,
    16069,
    16819,
    20995,
    25172,
)


def _descale(x: Tensor, n: int) -> Tensor:
    return (x + (1 << (n - 1))) >> n


def _odd_part(a: Tensor, b: Tensor, c: Tensor, d: Tensor) -> tuple[Tensor, ...]:
    """Shared odd-part rotation of the LL&M DCT; returns the four rotated terms."""
    z1, z2, z3, z4 = a + d, b + c, a + c, b + d
    z5 = (z3 + z4) * F1175
    z1, z2 = z1 * -F0899, z2 * -F2562
    z3, z4 = z3 * -F1961 + z5, z4 * -F0390 + z5
    return a * F0298 + z1 + z3, b * F2053 + z2 + z4, c * F3072 + z2 + z3, d * F1501 + z1 + z4


def _fdct_1d(d: tuple[Tensor, ...], first: bool) -> list[Tensor]:
    tmp0, tmp7 = d[0] + d[7], d[0] - d[7]
    tmp1, tmp6 = d[1] + d[6], d[1] - d[6]
    tmp2, tmp5 = d[2] + d[5], d[2] - d[5]
    tmp3, tmp4 = d[3] + d[4], d[3] - d[4]
    tmp10, tmp13, tmp11, tmp12 = tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2
    shift = _CONST_BITS - _PASS1_BITS if first else _CONST_BITS + _PASS1_BITS
    if first:
        out0, out4 = (tmp10 + tmp11) << _PASS1_BITS, (tmp10 - tmp11) << _PASS1_BITS
    else:
        out0, out4 = _descale(tmp10 + tmp11, _PASS1_BITS), _descale(tmp10 - tmp11, _PASS1_BITS)
    z1 = (tmp12 + tmp13) * F0541
    out2 = _descale(z1 + tmp13 * F0765, shift)
    out6 = _descale(z1 - tmp12 * F1847, shift)
    o7, o5, o3, o1 = (_descale(t, shift) for t in _odd_part(tmp4, tmp5, tmp6, tmp7))
    return [out0, o1, out2, o3, out4, o5, out6, o7]


def _idct_1d(c: tuple[Tensor, ...], shift: int) -> list[Tensor]:
    z1 = (c[2] + c[6]) * F0541
    tmp2, tmp3 = z1 - c[6] * F1847, z1 + c[2] * F0765
    tmp0, tmp1 = (c[0] + c[4]) << _CONST_BITS, (c[0] - c[4]) << _CONST_BITS
    tmp10, tmp13, tmp11, tmp12 = tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2
    t0, t1, t2, t3 = _odd_part(c[7], c[5], c[3], c[1])
    pairs = ((tmp10, t3), (tmp11, t2), (tmp12, t1), (tmp13, t0))
    return [_descale(e + o, shift) for e, o in pairs] + [
        _descale(e - o, shift) for e, o in reversed(pairs)
    ]


def _fdct(blocks: Tensor) -> Tensor:
    """Forward DCT of level-shifted int32 blocks ``(8, 8, ...)`` (row, column first).

    Coefficients come out scaled by 8. With the in-block position leading, every butterfly
    operand is a contiguous tensor, which is much faster than strided slices of ``(..., 8, 8)``.
    """
    rows = torch.stack(_fdct_1d(blocks.unbind(1), first=True), dim=1)
    return torch.stack(_fdct_1d(rows.unbind(0), first=False), dim=0)


def _idct(coef: Tensor) -> Tensor:
    """Inverse DCT of dequantised int32 coefficients ``(8, 8, ...)`` to level-shifted samples."""
    cols = torch.stack(_idct_1d(coef.unbind(0), _CONST_BITS - _PASS1_BITS), dim=0)
    return torch.stack(_idct_1d(cols.unbind(1), _CONST_BITS + _PASS1_BITS + 3), dim=1)


_RGB_TO_YCC = (
    ((_fix(0.299), _fix(0.587), _fix(0.114)), _HALF),
    ((-_fix(0.16874), -_fix(0.33126), _fix(0.5)), 128 * _ONE + _HALF - 1),
    ((_fix(0.5), -_fix(0.41869), -_fix(0.08131)), 128 * _ONE + _HALF - 1),
)
"""libjpeg's fixed-point RGB -> YCbCr rows (weights, offset incl. rounding)."""


_YCC_TO_RGB = ((0.0, _fix(1.402)), (-_fix(0.34414), -_fix(0.71414)), (_fix(1.772), 0.0))
"""libjpeg's fixed-point (Cb - 128, Cr - 128) -> RGB offsets from Y."""


def _mix_channels(planes: Tensor, weights: tuple[tuple[float, ...], ...]) -> Tensor:
    """``out[:, o] = sum_c weights[o][c] * planes[:, c]`` as one matrix product per image.

    Exact in float32: products and partial sums are integers below 2^24.
    """
    b, c, h, w = planes.shape
    matrix = torch.tensor(weights, dtype=planes.dtype, device=planes.device)
    return (matrix @ planes.reshape(b, c, h * w)).view(b, len(weights), h, w)


def _rgb_to_ycc(rgb: Tensor) -> Tensor:
    offsets = torch.tensor([off for _, off in _RGB_TO_YCC], dtype=rgb.dtype, device=rgb.device)
    ycc = _mix_channels(rgb, tuple(weights for weights, _ in _RGB_TO_YCC))
    return ycc.add_(offsets.view(1, 3, 1, 1)).mul_(1 / _ONE).floor_()


def _ycc_to_rgb(y: Tensor, chroma: Tensor) -> Tensor:
    offsets = _mix_channels(chroma - 128, _YCC_TO_RGB).add_(_HALF).mul_(1 / _ONE).floor_()
    return offsets.add_(y).clamp_(0, 255)


def quant_tables(quality: Tensor) -> tuple[Tensor, Tensor]:
    """Luminance and chrominance tables ``(B, 8, 8)`` for integer qualities 1..100 (IJG rule)."""
    q = quality.long().clamp(1, 100).view(-1, 1, 1)
    scale = torch.where(q < 50, torch.div(5000, q, rounding_mode="floor"), 200 - 2 * q)

    def scaled(base: Tensor) -> Tensor:
        table = torch.div(base.to(q.device) * scale + 50, 100, rounding_mode="floor")
        return table.clamp(1, 255)

    return scaled(LUMA_TABLE), scaled(CHROMA_TABLE)


def _fill(planes: Tensor, hs: Tensor, ws: Tensor) -> Tensor:
    return repeat_last_cols(repeat_last_rows(planes, hs), ws)


def _downsample_2x2(planes: Tensor) -> Tensor:
    sums = F.avg_pool2d(planes, 2) * 4
    bias = 1.0 + torch.arange(sums.shape[-1], device=planes.device) % 2
    return torch.floor((sums + bias) * 0.25)


def _upsample_fancy(planes: Tensor) -> Tensor:
    """libjpeg's h2v2 triangle upsampling: 3/4 nearer + 1/4 farther sample on each axis."""
    b, c, h, w = planes.shape
    p = F.pad(planes.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    mid = 3 * p[:, :, 1:-1]
    rows = torch.stack([mid + p[:, :, :-2], mid + p[:, :, 2:]], dim=3)
    centre = 3 * rows[..., 1:-1]
    even = torch.floor((centre + rows[..., :-2] + 8) * (1 / 16))
    odd = torch.floor((centre + rows[..., 2:] + 7) * (1 / 16))
    return torch.stack([even, odd], dim=-1).view(b, c, 2 * h, 2 * w)


def _code_planes(planes: Tensor, table: Tensor) -> Tensor:
    """Level-shift, DCT, quantise, dequantise, inverse-DCT ``(B, C, H, W)`` planes of bytes."""
    b, c, h, w = planes.shape
    blocks = (planes.int() - 128).view(b, c, h // 8, 8, w // 8, 8).permute(3, 5, 0, 1, 2, 4)
    coef = _fdct(blocks.contiguous())
    step = table.to(planes.device, torch.int32).permute(1, 2, 0).reshape(8, 8, b, 1, 1, 1)
    divisor = step * 8
    levels = torch.sign(coef) * torch.div(coef.abs() + divisor // 2, divisor, rounding_mode="floor")
    pixels = (_idct(levels * step) + 128).clamp_(0, 255)
    return pixels.permute(2, 3, 4, 0, 5, 1).reshape(b, c, h, w).to(planes.dtype)


def jpeg_canvas(x: Tensor, hs: Tensor, ws: Tensor, quality: Tensor) -> Tensor:
    """JPEG round trip of each valid image of a canvas at its own integer ``quality``.

    Runs on cache-sized slices of the batch (``map_chunks``).
    """
    return map_chunks(_round_trip, x, hs, ws, quality.to(x.device))


def _round_trip(x: Tensor, hs: Tensor, ws: Tensor, quality: Tensor) -> Tensor:
    _, _, height, width = x.shape
    hp = -(-height // 16) * 16
    wp = -(-width // 16) * 16
    rgb = _fill((x.float() * 255).round_().clamp_(0, 255), hs, ws)
    rgb = F.pad(rgb, (0, wp - width, 0, hp - height), mode="replicate")
    ycc = _rgb_to_ycc(rgb)
    luma_q, chroma_q = quant_tables(quality)
    chs = torch.div(hs + 1, 2, rounding_mode="floor")
    cws = torch.div(ws + 1, 2, rounding_mode="floor")
    y = _code_planes(ycc[:, :1], luma_q)
    # libjpeg pads the full-resolution rows to even and columns to whole blocks before
    # downsampling, then repeats the last chroma row down to a whole block.
    small = _downsample_2x2(ycc[:, 1:])
    chroma = repeat_last_rows(small, chs)
    chroma = _fill(_code_planes(chroma, chroma_q), chs, cws)
    chroma = _upsample_fancy(chroma)
    rgb = _ycc_to_rgb(y, chroma)
    return (rgb[:, :, :height, :width] / 255.0).to(x.dtype)


def jpeg(x: Tensor, quality: int | float | Tensor) -> Tensor:
    """Compress and decompress ``(B, 3, H, W)`` in [0, 1] as JPEG, quality per image or shared.

    Qualities are rounded to integers (a real codec takes integers); output is 8-bit levels.
    """
    hs, ws = full_sizes(x)
    q = torch.as_tensor(quality, dtype=torch.float64).round().reshape(-1)
    q = q.expand(x.shape[0]) if q.numel() == 1 else q
    return jpeg_canvas(x, hs, ws, q.long())
