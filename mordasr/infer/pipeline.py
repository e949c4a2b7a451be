"""The upscale pipeline: any supported model applied to images, tensors or files.

Routing is per image by default, so the degradation scores are computed once on the whole LR
image and the same routing serves every tile; MoR layers fold the routed ranks into their weights
once per image, so the adapted model costs what the backbone costs. Under region routing
(``routing="region"``, MoR models) the model scores every region of the image and each tile
folds and runs its own plan, blended across seams like any tiles
(:mod:`mordasr.sr.regions`).

Each model owns its per-image work (:meth:`~mordasr.sr.protocol.SRModel.prepare`): scores, the
routing plan with its folded weights, prompts. A feed-forward model gives one network and its
plan, run over image tiles by a backend; the one-step SD model gives its stages (bicubic
enlargement, VAE encoding, the routed UNet, VAE decoding), each tiled here, then a colour fix
restores the LR image's low frequencies (wavelet or AdaIN).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from mordasr.estimate.learned import MIN_SIDE
from mordasr.infer.backends import Backend, Configuration, choose_configuration
from mordasr.infer.color_fix import adain_color_fix, wavelet_color_fix
from mordasr.infer.latent_tiling import tiled_latent_forward, tiled_vae_decode, tiled_vae_encode
from mordasr.infer.memory import auto_tile, available_memory, bytes_per_pixel, is_out_of_memory
from mordasr.infer.progress import ProgressCallback, ProgressEvent, Stage, progress_callback
from mordasr.infer.tiling import BoxedTileFn, TileProgress, tiled_forward_at
from mordasr.io.image import DecodedImage, read_image, save_like
from mordasr.mor import cast_network, mor_layers, set_strength
from mordasr.sr.protocol import ImageWork, LatentWork, SRModel
from mordasr.sr.regions import REGION_WINDOW, RoutingMode, TileBox, check_routing, tile_core
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

HALF_DTYPES = (torch.float16, torch.bfloat16)
MAX_STRENGTH = 1.5
AlphaMode = Literal["model", "bicubic"]
TileSetting = int | Literal["auto"] | None


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
        dtype: compute dtype of the network, overriding ``precision`` (routing, folding and
            the estimator always run in float32). In float16 and bfloat16 a tile whose output
            is not finite, or black for a non-black input, is computed again in float32 (with
            a warning).
        precision: ``auto`` (default): the fastest configuration that met the quality
            criterion against float32 on this device's instruction set (OpenVINO bfloat16 on
            CPUs with AMX or AVX512-BF16, half precision on CUDA, float32 elsewhere; see
            :mod:`mordasr.infer.backends.choice`); ``exact``: float32.
        tile: largest input tile side; ``"auto"`` (default) picks it per image from the
            model's memory per pixel and the free memory (:mod:`mordasr.infer.memory`);
            ``None`` or 0 processes the whole image at once. On an out-of-memory error the
            image is tried again with half the tile, down to just over twice the overlap
            (feed-forward models; the one-step SD model tiles its latents instead).
        tile_overlap: input pixels of context each tile keeps across a seam.
        progress: True for tqdm bars over tiles (and files, in a batch), or a callback that
            receives every :class:`~mordasr.infer.progress.ProgressEvent`.
        strength: scales the MoR adapter delta: 0 is the plain backbone exactly, 1 the trained
            model; up to 1.5 is allowed (with a warning above 1).
        alpha: how an alpha channel is enlarged: ``"model"`` (as a gray image through the
            network) or ``"bicubic"``; default: ``model`` for feed-forward models,
            ``bicubic`` for the one-step SD model.
        latent_tile: one-step SD: largest latent tile side of the UNet (0: the whole latent).
        latent_overlap: one-step SD: latent pixels neighbouring UNet tiles share.
        vae_tile: one-step SD: largest SR-image tile side of the VAE encoder and decoder
            (0: untiled); tiles overlap by an eighth of it.
        color_fix: one-step SD: ``wavelet``, ``adain`` or ``none``.
        prompt: one-step SD: a fixed prompt replacing the model's prompt source.
        backend: where the network runs: ``torch``, ``onnxruntime`` (feed-forward models,
            float32, CPU), ``openvino`` (feed-forward models, CPU) or ``auto``: the fastest
            installed one for the precision (see :mod:`mordasr.infer.backends.choice`).
        device: ``auto`` or None picks CUDA, then Apple's MPS, then the CPU.
        routing: MoR models: ``image`` (default) routes every tile by the whole image's
            scores; ``region`` scores every region of the image and routes each tile by the
            regions its core covers (tiles then span at most a few regions; see
            :mod:`mordasr.sr.regions`).
        region_window: region routing: the side of a region, in input pixels (at least the
            estimator's 32); smaller regions route finer and cost more estimator work and, under
            ``tile="auto"``, smaller tiles.
    """

    def __init__(
        self,
        model: str | Path | nn.Module = "default",
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        tile: TileSetting = "auto",
        tile_overlap: int = 32,
        progress: bool | ProgressCallback = False,
        strength: float = 1.0,
        alpha: AlphaMode | None = None,
        latent_tile: int = 96,
        latent_overlap: int = 32,
        vae_tile: int = 1024,
        color_fix: str = "wavelet",
        prompt: str | None = None,
        backend: str = "auto",
        routing: RoutingMode = "image",
        precision: str = "auto",
        region_window: int = REGION_WINDOW,
    ) -> None:
        self.device = default_device() if device in (None, "auto") else torch.device(device)
        if isinstance(model, str | Path):
            module = load_sr_model(model)
            merge = strength == 1.0  # merged shared ranks could not be scaled
        else:
            module, merge = as_sr_model(model), False
        self.configuration: Configuration = choose_configuration(
            module, self.device, backend, precision, dtype
        )
        self.dtype = self.configuration.network_dtype
        self.model: SRModel = module.to_inference(self.device, self.dtype, merge=merge)
        if color_fix not in COLOR_FIXES:
            raise ValueError(f"unknown color_fix {color_fix!r}; choose from {sorted(COLOR_FIXES)}")
        if prompt is not None:
            if not hasattr(self.model, "prompt_source"):
                raise ValueError("a prompt applies to one-step SD models only")
            self.model.prompt_source = FixedPrompt(prompt)
        if tile != "auto" and tile is not None and (not isinstance(tile, int) or tile < 0):
            raise ValueError(f"tile must be 'auto', None or a side >= 0, got {tile!r}")
        self.backend: Backend = self.configuration.backend_object()
        self.routing = check_routing(routing)
        if routing == "region" and (self.model.score_dim is None or self.model.tiling != "image"):
            raise ValueError(
                "region routing needs a feed-forward MoR model with routers, such as mor-dasr "
                "(the default model is a plain LoRA)"
            )
        if region_window < MIN_SIDE:
            raise ValueError(f"region_window must be at least {MIN_SIDE} px, got {region_window}")
        self.region_window = region_window
        self.scale: int = int(module.scale)
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.progress = progress_callback(progress)
        self._bars = progress is True  # the one-step SD stages show their own tqdm bars
        self.latent_tile = latent_tile
        self.latent_overlap = latent_overlap
        self.vae_tile = vae_tile
        self.color_fix = color_fix
        self._apply_strength(strength)
        self.alpha: AlphaMode = alpha or ("bicubic" if self.model.tiling == "latent" else "model")
        if self.alpha not in ("model", "bicubic"):
            raise ValueError(f"alpha must be 'model' or 'bicubic', got {self.alpha!r}")
        self._file = ProgressEvent("file_start")

    # Strength ------------------------------------------------------------------------------
    def _apply_strength(self, strength: float) -> None:
        """Scale the MoR adapters' delta (``--strength``), refusing models without adapters."""
        if not 0.0 <= strength <= MAX_STRENGTH:
            raise ValueError(f"strength must lie in [0, {MAX_STRENGTH}], got {strength}")
        if strength > 1.0:
            warnings.warn(
                f"strength {strength} > 1 extrapolates beyond the trained adapter",
                stacklevel=3,
            )
        self.strength = strength
        if strength == 1.0:
            return
        if not isinstance(self.model, nn.Module) or next(mor_layers(self.model), None) is None:
            raise ValueError("strength applies to MoR models only (this model has no adapters)")
        set_strength(self.model, strength)

    # Progress ------------------------------------------------------------------------------
    def begin_file(self, index: int, count: int, path: str | Path | None = None) -> None:
        """Tell progress listeners that file ``index`` of ``count`` starts (batch callers)."""
        self._file = ProgressEvent("file_start", index, count, None if path is None else str(path))
        self._emit("file_start")

    def end_file(self, failure: str | None = None) -> None:
        """Tell progress listeners that the current file is done, or failed for ``failure``."""
        self._emit("file_done" if failure is None else "file_failed", message=failure or "")

    def _emit(self, stage: Stage, **fields: object) -> None:
        if self.progress is not None:
            file = self._file
            self.progress(
                ProgressEvent(
                    stage,
                    file_index=file.file_index,
                    file_count=file.file_count,
                    path=file.path,
                    **fields,  # type: ignore[arg-type]
                )
            )

    def _warn(self, message: str, stage: Stage = "warning") -> None:
        warnings.warn(message, stacklevel=3)
        self._emit(stage, message=message)

    # Tensors -------------------------------------------------------------------------------
    @torch.no_grad()
    def upscale_tensor(
        self,
        lr: Tensor,
        size: tuple[int, int] | None = None,
        scores: Tensor | None = None,
        work: ImageWork | None = None,
    ) -> Tensor:
        """(B, 3, h, w) or (3, h, w) RGB in [0, 1] -> the same layout, ``scale`` times larger,
        or ``size`` (height, width): the model's scale first, then an antialiased bicubic
        resize (the one-step SD model instead enlarges to ``size`` before its VAE). ``scores``
        (B, D), feed-forward models: route by these instead of the model's own estimate;
        ``work``: run this prepared network and plan instead of preparing one (e.g. one
        shot's folded plan for every frame of a video)."""
        single = lr.ndim == 3
        batch = (lr[None] if single else lr).to(self.device)
        if self.model.tiling == "latent":
            out = self._one_step(_presize(batch.float(), size, self.scale))
        else:
            height, width = batch.shape[-2:]
            padded = pad_to_multiple(batch.to(self.dtype), self.model.multiple_of)
            prepared = (
                self.model.prepare(
                    batch.float(), scores, routing=self.routing, region_window=self.region_window
                )
                if work is None
                else work
            )
            assert isinstance(prepared, ImageWork)
            with self._tile_runner(prepared, (padded.shape[-2], padded.shape[-1])) as run:
                out = self._tiled(run, padded, prepared)
            out = out[..., : height * self.scale, : width * self.scale]
        out = resize_to(out.float(), size).clamp_(0.0, 1.0)
        return out[0] if single else out

    @contextmanager
    def _tile_runner(self, work: ImageWork, size: tuple[int, int]) -> Iterator[BoxedTileFn]:
        """What every tile runs: per-image routing binds ``work`` to the backend once for all
        tiles; region routing binds each tile's own work (:meth:`ImageWork.for_tile` of the
        tile's core, :func:`~mordasr.sr.regions.tile_core`, in an image of ``size``) for that
        tile."""
        if work.regions is None:
            with self.backend.bind(work) as network:
                whole = self._guarded(network, work)
                yield lambda tile, _box: whole(tile)
            return

        def per_tile(tile: Tensor, box: TileBox) -> Tensor:
            tile_work = work.for_tile(tile_core(box, *size, self.tile_overlap))
            with self.backend.bind(tile_work) as network:
                return self._guarded(network, tile_work)(tile)

        yield per_tile

    def _tiled(self, fn: BoxedTileFn, image: Tensor, work: ImageWork) -> Tensor:
        """``fn`` over tiles of ``image`` whose sides and starts are multiples of the model's
        ``multiple_of``, halving the tile after an out-of-memory error."""
        multiple = self.model.multiple_of
        tile = self._tile_for(image, work)
        while True:
            aligned = tile and max(multiple, tile - tile % multiple)
            try:
                return tiled_forward_at(
                    fn,
                    image,
                    self.scale,
                    aligned,
                    self.tile_overlap,
                    align=multiple,
                    progress=self._tile_events(aligned) if self.progress else False,
                )
            except (RuntimeError, MemoryError) as error:
                smaller = self._smaller_tile(aligned, image)
                if not is_out_of_memory(error) or smaller is None:
                    raise
                self._release_memory()
                self._warn(
                    f"out of memory with {_tile_name(aligned)}; retrying with {smaller}px tiles",
                    stage="retry",
                )
                tile = smaller

    def _tile_events(self, side: int | None) -> TileProgress:
        """A tiling progress callback that reports ``tile`` events of tiles of ``side``."""

        def report(done: int, total: int) -> None:
            self._emit("tile", tiles_done=done, tiles_total=total, tile_size=side or None)

        return report

    def _tile_for(self, image: Tensor, work: ImageWork) -> int | None:
        """The first tile side to try for ``image`` (None: whole image). Under region routing
        a tile is also the unit of routing: ``auto`` takes at most the side of
        :meth:`~mordasr.sr.regions.RegionScores.tile_side`, a set side is the user's choice of
        granularity (smaller tiles route finer and cost more overlap)."""
        if self.tile != "auto":
            return self.tile or None
        per_pixel = bytes_per_pixel(self.model, self.dtype)
        tile = auto_tile(per_pixel, available_memory(self.device), self.tile_overlap)
        if work.regions is None:
            return tile
        side = work.regions.tile_side(self.tile_overlap)
        return side if not tile else min(tile, side)

    def _smaller_tile(self, tile: int | None, image: Tensor) -> int | None:
        """Half the tile actually used (the whole image counts as its longer side), or None
        when that leaves no more than twice the overlap."""
        used = min(tile or max(image.shape[-2:]), max(image.shape[-2:]))
        half = used // 2
        return half if half > 2 * self.tile_overlap else None

    def _release_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _guarded(
        self, network: Callable[[Tensor], Tensor], work: ImageWork
    ) -> Callable[[Tensor], Tensor]:
        """``network`` as a tile function that redoes a broken half-precision tile in float32:
        ``work``'s network cast to float32, running its float32 plan."""
        compute = self.configuration.dtype
        if compute not in HALF_DTYPES:
            return network

        def run(tile: Tensor) -> Tensor:
            out = network(tile)
            if not _is_broken(out, tile):
                return out
            self._warn(f"{compute} gave a non-finite or black tile; it was redone in float32")
            work.network.float()
            try:
                with work.plan.applied(work.network) as exact:
                    return exact(tile.float()).to(out.dtype)
            finally:
                cast_network(work.network, self.dtype)

        return run

    def _one_step(self, lr: Tensor) -> Tensor:
        """The one-step SD model on float32 LR images: SR in [0, 1] (float32). The model
        conditions its stages once per image (scores, prompts, the UNet's folded plan); each
        stage runs here over the tiles its memory allows."""
        work = self.model.prepare(lr)
        assert isinstance(work, LatentWork)
        height, width = lr.shape[-2:]
        up = work.upsample(pad_to_multiple(lr, self.model.multiple_of))
        factor = work.latent_factor
        overlap = self.vae_tile // 8
        latents = tiled_vae_encode(
            work.encode,
            up.to(self.dtype),
            self.vae_tile,
            overlap,
            factor,
            norm_module=work.encoder_norm,
            progress=self._bars,
        )
        x0 = tiled_latent_forward(
            work.denoise,
            latents,
            self.latent_tile,
            self.latent_overlap,
            progress=self._tile_events(self.latent_tile) if self.progress else False,
        )
        sr = tiled_vae_decode(
            work.decode,
            x0,
            self.vae_tile // factor,
            overlap // factor,
            factor,
            norm_module=work.decoder_norm,
            progress=self._bars,
        ).float()
        fix = COLOR_FIXES[self.color_fix]
        if fix is not None:
            sr = fix(sr, up)
        return sr[..., : height * self.scale, : width * self.scale]

    def upscale_decoded(
        self, decoded: DecodedImage, size: tuple[int, int] | None = None
    ) -> UpscaleResult:
        """Upscale a decoded image (to ``size`` (height, width) if given): gray stays gray;
        alpha goes through the model as a gray image or is enlarged bicubically (``alpha``)."""
        out = self._upscale_planes(decoded.tensor, size)
        alpha = None
        if decoded.alpha is not None:
            alpha = self._upscale_alpha(decoded.alpha.float(), size)
        return UpscaleResult(out, alpha)

    def _upscale_planes(self, planes: Tensor, size: tuple[int, int] | None) -> Tensor:
        """(1 | 3, h, w) -> (1 | 3, H, W) on the CPU; one plane runs as gray RGB."""
        gray = planes.shape[0] == 1
        out = self.upscale_tensor(planes.expand(3, -1, -1) if gray else planes, size).cpu()
        if gray:
            weights = torch.tensor(LUMA).view(3, 1, 1)
            out = (out * weights).sum(0, keepdim=True)
        return out

    def _upscale_alpha(self, alpha: Tensor, size: tuple[int, int] | None) -> Tensor:
        if self.alpha == "model":
            return self._upscale_planes(alpha, size).clamp(0.0, 1.0)
        height, width = alpha.shape[-2:]
        target = size or (height * self.scale, width * self.scale)
        return resize_to(alpha[None], target)[0].clamp(0.0, 1.0)

    def upscale_image(self, image: Image.Image, size: tuple[int, int] | None = None) -> Image.Image:
        """Upscale a PIL image (RGB, RGBA, L or LA; other modes are converted to RGB(A)),
        to ``size`` (height, width) if given."""
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
        result = self.upscale_decoded(decoded, size)
        channels = [result.image] + ([result.alpha] if result.alpha is not None else [])
        pixels = torch.cat(channels).permute(1, 2, 0).mul(255.0).round().byte().numpy()
        return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)

    def upscale_file(
        self,
        source: str | Path,
        target: str | Path,
        size: tuple[int, int] | None = None,
        quality: int = 95,
    ) -> None:
        """Read ``source`` (any supported format, by content), write the result to ``target``
        with the source's bit depth, colour profile and EXIF (JPEG/WebP at ``quality``)."""
        decoded = read_image(source)
        result = self.upscale_decoded(decoded, size)
        save_like(target, result.image, decoded, alpha=result.alpha, quality=quality)


def default_device() -> torch.device:
    """CUDA if available, then Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def output_size(
    height: int,
    width: int,
    scale: float,
    *,
    outscale: float | None = None,
    out_width: int | None = None,
    out_height: int | None = None,
) -> tuple[int, int] | None:
    """The (height, width) of a ``height`` x ``width`` image's result, or None for the model's
    own ``scale``: ``outscale`` times the input, or ``out_width`` / ``out_height`` (one of them
    keeps the aspect ratio). Sides round half up and are at least 1."""
    if outscale is not None and (out_width is not None or out_height is not None):
        raise ValueError("give either an output scale or an output width/height, not both")
    if outscale is not None:
        if outscale <= 0:
            raise ValueError(f"outscale must be positive, got {outscale}")
        if outscale == scale:
            return None
        return _round_side(height * outscale), _round_side(width * outscale)
    if out_width is None and out_height is None:
        return None
    for side in (out_width, out_height):
        if side is not None and side < 1:
            raise ValueError(f"output width and height must be positive, got {side}")
    if out_width is not None and out_height is not None:
        return out_height, out_width
    if out_width is not None:
        return _round_side(height * out_width / width), out_width
    assert out_height is not None
    return out_height, _round_side(width * out_height / height)


def _round_side(value: float) -> int:
    return max(1, math.floor(value + 0.5))


def resize_to(image: Tensor, size: tuple[int, int] | None) -> Tensor:
    """(B, C, H, W) resized to ``size`` bicubically (antialiased when shrinking); unchanged for
    None or its own size."""
    if size is None or tuple(image.shape[-2:]) == tuple(size):
        return image
    shrinking = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    return F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=shrinking)


def _presize(lr: Tensor, size: tuple[int, int] | None, scale: int) -> Tensor:
    """The LR image resized so that ``scale`` times it is ``size`` (nearest whole pixels): the
    one-step SD model then enlarges it to about ``size`` before the VAE."""
    if size is None:
        return lr
    target = (max(1, round(size[0] / scale)), max(1, round(size[1] / scale)))
    return resize_to(lr, target).clamp(0.0, 1.0)


def _is_broken(out: Tensor, tile: Tensor) -> bool:
    """A half-precision failure: non-finite values, or an all-black result of a non-black tile."""
    if not bool(torch.isfinite(out).all()):
        return True
    return bool(out.abs().max() == 0) and bool(tile.abs().max() > 0)


def _tile_name(tile: int | None) -> str:
    return "the whole image" if not tile else f"{tile}px tiles"


def pad_to_multiple(image: Tensor, multiple: int) -> Tensor:
    """``image`` (B, C, h, w) padded at the bottom and right to sides that are multiples of
    ``multiple``: reflected, or replicated where the image is too small to reflect."""
    height, width = image.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not pad_h and not pad_w:
        return image
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(image, (0, pad_w, 0, pad_h), mode=mode)
