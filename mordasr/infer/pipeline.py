"""The upscale pipeline: any supported model applied to images, tensors or files.

Routing is per image, so the degradation scores are computed once on the whole LR image and the
same routing serves every tile; MoR layers fold the routed ranks into their weights once per
image (merged path, cached), so the adapted model costs what the backbone costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from mordasr.infer.io import DecodedImage, read_image, save_like
from mordasr.infer.tiling import tiled_forward
from mordasr.models.mor_sr import MoRSuperResolver
from mordasr.models.zoo import load_sr_model
from mordasr.mor import routing

LUMA = (0.299, 0.587, 0.114)
"""BT.601 weights turning an RGB result back into gray for gray inputs."""


@dataclass
class UpscaleResult:
    """The colour result (C, H, W) in [0, 1] (C as in the input) and the upscaled alpha."""

    image: Tensor
    alpha: Tensor | None


class Upscaler:
    """Super-resolve images with one model.

    Args:
        model: a model name or folder (see :func:`mordasr.models.zoo.load_sr_model`) or a
            loaded module with ``.scale``.
        device: where to run (default: CUDA if available, else CPU).
        dtype: compute dtype of the network (the estimator always runs in float32).
        tile: largest input tile side; ``None`` or 0 processes the whole image at once.
        tile_overlap: input pixels of context each tile keeps across a seam.
        progress: show a bar over tiles.
    """

    def __init__(
        self,
        model: str | Path | nn.Module = "default",
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        tile: int | None = None,
        tile_overlap: int = 32,
        progress: bool = False,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype
        module = load_sr_model(model) if isinstance(model, str | Path) else model
        self.model = module.to(self.device).eval()
        if isinstance(self.model, MoRSuperResolver):
            self.model.backbone.to(dtype=dtype)
        else:
            self.model.to(dtype=dtype)
        self.scale: int = int(module.scale)
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.progress = progress

    @torch.no_grad()
    def upscale_tensor(self, lr: Tensor) -> Tensor:
        """(B, 3, h, w) or (3, h, w) RGB in [0, 1] -> the same layout, ``scale`` times larger."""
        single = lr.ndim == 3
        batch = (lr[None] if single else lr).to(self.device)
        net_input = batch.to(self.dtype)
        if isinstance(self.model, MoRSuperResolver):
            scores = self.model.route_input(batch.float()).to(self.dtype)
            with routing(self.model.backbone, scores):
                out = self._tiled(self.model.backbone, net_input)
        else:
            out = self._tiled(self.model, net_input)
        out = out.float().clamp_(0.0, 1.0)
        return out[0] if single else out

    def _tiled(self, fn: nn.Module, image: Tensor) -> Tensor:
        return tiled_forward(
            fn, image, self.scale, self.tile, self.tile_overlap, progress=self.progress
        )

    def upscale_decoded(self, decoded: DecodedImage) -> UpscaleResult:
        """Upscale a decoded image: gray stays gray, alpha is upscaled bicubically on its own."""
        colour = decoded.tensor
        rgb = colour.expand(3, -1, -1) if decoded.is_gray else colour
        out = self.upscale_tensor(rgb).cpu()
        if decoded.is_gray:
            weights = torch.tensor(LUMA).view(3, 1, 1)
            out = (out * weights).sum(0, keepdim=True)
        alpha = None
        if decoded.alpha is not None:
            alpha = F.interpolate(
                decoded.alpha[None].float(),
                scale_factor=self.scale,
                mode="bicubic",
                align_corners=False,
            )[0].clamp(0.0, 1.0)
        return UpscaleResult(out, alpha)

    def upscale_image(self, image: Image.Image) -> Image.Image:
        """Upscale a PIL image (RGB, RGBA, L or LA; other modes are converted to RGB(A))."""
        mode = (
            image.mode
            if image.mode in ("RGB", "RGBA", "L", "LA")
            else ("RGBA" if "A" in image.getbands() else "RGB")
        )
        array = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
        if array.ndim == 2:
            array = array[..., None]
        tensor = torch.from_numpy(array).permute(2, 0, 1)
        has_alpha = mode in ("RGBA", "LA")
        colour, alpha = (tensor[:-1], tensor[-1:]) if has_alpha else (tensor, None)
        decoded = DecodedImage(colour, alpha, 8, mode, "PNG")
        result = self.upscale_decoded(decoded)
        channels = [result.image] + ([result.alpha] if result.alpha is not None else [])
        pixels = torch.cat(channels).permute(1, 2, 0).mul(255.0).round().byte().numpy()
        return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)

    def upscale_file(self, source: str | Path, target: str | Path) -> None:
        """Read ``source`` (any supported format, by content), write the result to ``target``
        with the source's bit depth, colour profile and EXIF."""
        decoded = read_image(source)
        result = self.upscale_decoded(decoded)
        save_like(target, result.image, decoded, alpha=result.alpha)
