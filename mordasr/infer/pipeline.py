"""The upscale pipeline: any supported model applied to images, tensors or files.

Routing is per image, so the degradation scores are computed once on the whole LR image and the
same routing serves every tile; MoR layers fold the routed ranks into their weights once per
image (merged path, cached), so the adapted model costs what the backbone costs.

The one-step SD model (:class:`~mordasr.sr.sd.OneStepSR`) runs in stages: bicubic
enlargement, VAE encoding (tiled for large images), the routed UNet over latent tiles, VAE
decoding (tiled), and a colour fix that restores the LR image's low frequencies (wavelet or
AdaIN). Scores and prompt embeddings are computed once per image, before any tile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from mordasr.infer.backends import Backend, select_backend
from mordasr.infer.color_fix import adain_color_fix, wavelet_color_fix
from mordasr.infer.latent_tiling import tiled_latent_forward, tiled_vae_decode, tiled_vae_encode
from mordasr.infer.tiling import TileProgress, tiled_forward
from mordasr.io.image import DecodedImage, read_image, save_like
from mordasr.mor import prefold_routed, routing
from mordasr.sr.protocol import SRModel
from mordasr.sr.sd.prompts import FixedPrompt
from mordasr.sr.zoo import as_sr_model, load_sr_model

LUMA = (0.299, 0.587, 0.114)
"""BT.601 weights turning an RGB result back into gray for gray inputs."""

COLOR_FIXES: dict[str, Callable[[Tensor, Tensor], Tensor] | None] = {
    "wavelet": wavelet_color_fix,
    "adain": adain_color_fix,
    "none": None,
}
"""Colour corrections of the one-step SD output against the bicubic LR (by ``color_fix`` name)."""


@dataclass
class UpscaleResult:
    """The colour result (C, H, W) in [0, 1] (C as in the input) and the upscaled alpha."""

    image: Tensor
    alpha: Tensor | None


class Upscaler:
    """Super-resolve images with one model.

    Args:
        model: a model name or folder (see :func:`mordasr.sr.zoo.load_sr_model`), a loaded
            :class:`~mordasr.sr.protocol.SRModel`, or any module with ``.scale`` (run as is).
            Inputs are padded to the model's ``multiple_of`` (reflected) and cropped back.
        device: where to run (default: CUDA if available, else CPU).
        dtype: compute dtype of the network (the estimator always runs in float32).
        tile: largest input tile side; ``None`` or 0 processes the whole image at once
            (feed-forward models; the one-step SD model tiles its latents instead).
        tile_overlap: input pixels of context each tile keeps across a seam.
        progress: show a bar over tiles, or a :data:`~mordasr.infer.tiling.TileProgress`
            called with ``(done, total)`` tiles (one-step SD: the UNet's latent tiles).
        latent_tile: one-step SD: largest latent tile side of the UNet (0: the whole latent).
        latent_overlap: one-step SD: latent pixels neighbouring UNet tiles share.
        vae_tile: one-step SD: largest SR-image tile side of the VAE encoder and decoder
            (0: untiled); tiles overlap by an eighth of it.
        color_fix: one-step SD: ``wavelet``, ``adain`` or ``none``.
        prompt: one-step SD: a fixed prompt replacing the model's prompt source.
        backend: where the network runs: ``torch``, ``onnxruntime`` (feed-forward models,
            float32, CPU) or ``auto`` (see :mod:`mordasr.infer.backends`).
    """

    def __init__(
        self,
        model: str | Path | nn.Module = "default",
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        tile: int | None = None,
        tile_overlap: int = 32,
        progress: bool | TileProgress = False,
        latent_tile: int = 96,
        latent_overlap: int = 32,
        vae_tile: int = 1024,
        color_fix: str = "wavelet",
        prompt: str | None = None,
        backend: str = "auto",
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype
        loaded = isinstance(model, str | Path)
        module = load_sr_model(model) if loaded else as_sr_model(model)
        self.model: SRModel = module.to_inference(self.device, dtype, merge=loaded)
        if color_fix not in COLOR_FIXES:
            raise ValueError(f"unknown color_fix {color_fix!r}; choose from {sorted(COLOR_FIXES)}")
        if prompt is not None:
            if not hasattr(self.model, "prompt_source"):
                raise ValueError("a prompt applies to one-step SD models only")
            self.model.prompt_source = FixedPrompt(prompt)
        self.backend: Backend = select_backend(backend, self.model, self.device, dtype)
        self.scale: int = int(module.scale)
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.progress = progress
        self.latent_tile = latent_tile
        self.latent_overlap = latent_overlap
        self.vae_tile = vae_tile
        self.color_fix = color_fix

    @torch.no_grad()
    def upscale_tensor(self, lr: Tensor) -> Tensor:
        """(B, 3, h, w) or (3, h, w) RGB in [0, 1] -> the same layout, ``scale`` times larger."""
        single = lr.ndim == 3
        batch = (lr[None] if single else lr).to(self.device)
        if self.model.tiling == "latent":
            out = self._one_step(batch.float())
        else:
            height, width = batch.shape[-2:]
            padded = pad_to_multiple(batch.to(self.dtype), self.model.multiple_of)
            with self.model.routed(batch.float()) as network:
                out = self._tiled(self.backend.bind(network), padded)
            out = out[..., : height * self.scale, : width * self.scale]
        out = out.float().clamp_(0.0, 1.0)
        return out[0] if single else out

    def _tiled(self, fn: Callable[[Tensor], Tensor], image: Tensor) -> Tensor:
        """``fn`` over tiles whose sides and starts are multiples of the model's
        ``multiple_of``."""
        multiple = self.model.multiple_of
        tile = self.tile and max(multiple, self.tile - self.tile % multiple)
        return tiled_forward(
            fn, image, self.scale, tile, self.tile_overlap, progress=self.progress, align=multiple
        )

    def _one_step(self, lr: Tensor) -> Tensor:
        """The one-step SD model on float32 LR images: SR in [0, 1] (float32).

        Every routed UNet layer folds its kept ranks into its weight once per image (all routers
        batched, :func:`~mordasr.mor.prefold_routed`); every latent tile reuses the folded
        weights, because the same scores tensor routes them all.
        """
        model = self.model
        generator = model.generator
        scores = model.estimate(lr).to(self.dtype)
        embeds = model.prompt_embeds(lr).to(self.dtype)
        height, width = lr.shape[-2:]
        up = generator.upsample(pad_to_multiple(lr, model.multiple_of))
        factor = generator.vae_scale_factor
        overlap = self.vae_tile // 8
        vae_bar = self.progress is True
        latents = tiled_vae_encode(
            generator.encode,
            up.to(self.dtype),
            self.vae_tile,
            overlap,
            factor,
            norm_module=generator.vae.encoder,
            progress=vae_bar,
        )
        with routing(generator.unet, scores):
            prefold_routed(generator.unet)
            x0 = tiled_latent_forward(
                lambda z: generator.denoise(z, embeds, scores),
                latents,
                self.latent_tile,
                self.latent_overlap,
                progress=self.progress,
            )
        sr = tiled_vae_decode(
            lambda z: (generator.decode(z) + 1.0) / 2.0,
            x0,
            self.vae_tile // factor,
            overlap // factor,
            factor,
            norm_module=generator.vae.decoder,
            progress=vae_bar,
        ).float()
        fix = COLOR_FIXES[self.color_fix]
        if fix is not None:
            sr = fix(sr, up)
        return sr[..., : height * self.scale, : width * self.scale]

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


def pad_to_multiple(image: Tensor, multiple: int) -> Tensor:
    """``image`` (B, C, h, w) padded at the bottom and right to sides that are multiples of
    ``multiple``: reflected, or replicated where the image is too small to reflect."""
    height, width = image.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not pad_h and not pad_w:
        return image
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(image, (0, pad_w, 0, pad_h), mode=mode)
