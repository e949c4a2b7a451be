"""Tiny randomly initialised SR models saved to disk, loaded through the real loading paths."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mordasr.mor import MoRConfig, mor_layers
from mordasr.nets.rrdbnet import RRDBNet
from mordasr.nets.srvgg import SRVGGNetCompact
from mordasr.sr.mor_sr import MoRSuperResolver, SRModelSpec
from mordasr.sr.router_input import BLUR_NOISE


def tiny_backbone(path: Path, scale: int = 4) -> Path:
    """Save a 1-block, 8-feature RRDBNet (x4, x2 or x1) as an official-style .pth file."""
    torch.manual_seed(0)
    net = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4, scale=scale)
    torch.save({"params_ema": net.state_dict()}, path)
    return path


def tiny_compact_backbone(path: Path) -> Path:
    """Save a 2-convolution, 8-feature SRVGGNetCompact (x4) as an official-style .pth file."""
    torch.manual_seed(0)
    net = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4)
    torch.save({"params": net.state_dict()}, path)
    return path


def tiny_mor_model(
    root: Path,
    router_input: str = "scores",
    router_bias: bool = False,
    scale: int = 4,
    lora: bool = False,
) -> Path:
    """A MoR model folder on a tiny backbone of ``scale``, with non-zero adapters (routed by
    the 7 scores, or by what ``router_input`` names; ``router_bias`` gives the routers a bias;
    ``lora``: plain LoRA adapters instead, 4 shared ranks and no router)."""
    root.mkdir(parents=True, exist_ok=True)
    backbone = tiny_backbone(root / "tiny.pth", scale)
    routed = {"num_shared": 4, "num_routed": 0, "num_zero": 0, "top_k": 0} if lora else {}
    mor = MoRConfig(
        target_modules=r"conv_(body|up1|up2|hr|last)",
        num_shared=2,
        num_routed=6,
        num_zero=2,
        top_k=2,
        score_dim=len(BLUR_NOISE) if router_input == "blur-noise" else 7,
        router_bias=router_bias,
    )
    mor = replace(mor, **routed)
    spec = SRModelSpec(backbone=str(backbone), router_input=router_input, scale=scale)
    model = MoRSuperResolver.build(spec, mor)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, layer in mor_layers(model.backbone):
            for b in (layer.shared_B, layer.routed_B):
                b.copy_(0.05 * torch.randn(b.shape, generator=gen))
    return model.save_pretrained(root / "mor")


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 RGB array: smooth blocks plus fine texture."""
    rng = np.random.default_rng(seed)
    smooth = rng.random((height // 8 + 1, width // 8 + 1, 3))
    big = np.kron(smooth, np.ones((8, 8, 1)))[:height, :width]
    return (255 * (0.8 * big + 0.2 * rng.random((height, width, 3)))).astype(np.uint8)


def photo_tensor(height: int = 40, width: int = 36, seed: int = 0) -> torch.Tensor:
    """:func:`photo` as a (3, height, width) float tensor in [0, 1]."""
    return torch.from_numpy(photo(height, width, seed)).permute(2, 0, 1).float() / 255
