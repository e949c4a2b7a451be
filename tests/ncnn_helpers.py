"""ncnn model files written by tests, laid out as the files of the weight packages are."""

from __future__ import annotations

import struct
from pathlib import Path

from official_archs import SRVGGNetCompact as OfficialCompact
from torch import nn


def write_ncnn_compact(net: OfficialCompact, stem: Path, resize: float | None = None) -> Path:
    """Write ``net`` as an ncnn param/bin pair laid out as the realesr-animevideov3 files are
    (``resize``: the bicubic output resize of their x2/x3 graphs); returns the .param path."""
    lines, blobs, previous = ["Input in 0 1 data", "Split split 1 2 data d0 d1"], [], "d1"
    for index, layer in enumerate(net.body):
        weight = layer.weight.detach().numpy()
        if isinstance(layer, nn.Conv2d):
            out_ch = weight.shape[0]
            params = f"0={out_ch} 1=3 4=1 5=1 6={weight.size}"
            lines.append(f"Convolution conv{index} 1 1 {previous} b{index} {params}")
            bias = layer.bias.detach().numpy().tobytes()
            blobs.append(struct.pack("<I", 0) + weight.tobytes() + bias)
        else:
            lines.append(f"PReLU prelu{index} 1 1 {previous} b{index} 0={weight.size}")
            blobs.append(weight.tobytes())
        previous = f"b{index}"
    up = net.upscale
    lines.append(f"PixelShuffle shuffle 1 1 {previous} shuffled 0={up}")
    lines.append(f"Interp base 1 1 d0 base 0=1 1={up:.1f} 2={up:.1f}")
    lines.append(f"BinaryOp add 2 1 shuffled base {'sum' if resize else 'output'}")
    if resize:
        lines.append(f"Interp down 1 1 sum output 0=3 1={resize:e} 2={resize:e}")
    param = stem.with_suffix(".param")
    param.write_text(f"7767517\n{len(lines)} {len(lines) + 2}\n" + "\n".join(lines) + "\n")
    stem.with_suffix(".bin").write_bytes(b"".join(blobs))
    return param
