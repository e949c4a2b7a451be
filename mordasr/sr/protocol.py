"""What every super-resolution model mordasr runs provides (:class:`SRModel`).

The inference pipeline, the backends, export, the benchmark and the loaders talk to models only
through this protocol, so a new model type needs no change there: it implements the protocol and
registers its manifest type (:func:`mordasr.sr.registry.register_model_type`).

A model owns how it is called: :meth:`SRModel.prepare` does an image's per-image work once
(degradation scores, the routing plan with its folded weights, prompt embeddings) and returns
what the pipeline runs over the tiles: an :class:`ImageWork` (one feed-forward network and the
plan it runs, for ``image`` tiling) or a :class:`LatentWork` (the one-step SD stages, for
``latent`` tiling). Under region routing (``routing="region"``, MoR models) the image's work also
carries its region scores and every tile runs its own plan (:meth:`ImageWork.for_tile`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from mordasr.mor import RoutingPlan, route
from mordasr.sr.regions import REGION_WINDOW, RegionScores, RoutingMode, TileBox

Tiling = Literal["image", "latent"]
"""How large inputs are split: ``image`` tiles of one feed-forward network, or ``latent``
tiles of the one-step SD stages (VAE encoder, UNet, VAE decoder)."""


@dataclass(frozen=True)
class ImageWork:
    """A feed-forward model's work for one image: run ``network`` under ``plan`` on every tile.

    ``plan`` is float32 (folded weights included); a backend casts it to its compute dtype.
    """

    network: nn.Module
    """Maps (B, 3, h, w) tiles in [0, 1] to (B, 3, scale*h, scale*w)."""
    plan: RoutingPlan
    """The routing (and folded weights) of ``network``'s MoR layers for this image; empty for a
    network without adapters."""
    regions: RegionScores | None = None
    """Region routing: the routers' input per region of the image, from which each tile's plan
    is folded (:meth:`for_tile`); None: ``plan`` serves every tile."""

    def for_tile(self, box: TileBox) -> ImageWork:
        """The work of a tile whose core is ``box`` (top, left, bottom, right, LR pixels; see
        :func:`~mordasr.sr.regions.tile_core`): this work under per-image routing; under region
        routing the network with the plan folded for the scores of the regions ``box`` covers
        (:meth:`RegionScores.for_box`)."""
        if self.regions is None:
            return self
        return ImageWork(self.network, route(self.network, self.regions.for_box(box), fold=True))


@dataclass(frozen=True)
class LatentWork:
    """The one-step SD model's stages for one image, conditioned once (scores, routing plan,
    prompt): the pipeline tiles each stage as its memory needs."""

    upsample: Callable[[Tensor], Tensor]
    """Padded LR (B, 3, h, w) in [0, 1] -> the enlarged image the VAE encodes (float32, the
    reference of the colour fix)."""
    encode: Callable[[Tensor], Tensor]
    """Image tile in [0, 1] -> latent tile."""
    encoder_norm: nn.Module
    """The VAE encoder, whose group norms tiled encoding keeps consistent across tiles."""
    denoise: Callable[[Tensor], Tensor]
    """Latent tile -> clean latent tile: the routed UNet step (folded once per image)."""
    decode: Callable[[Tensor], Tensor]
    """Latent tile -> image tile in [0, 1]."""
    decoder_norm: nn.Module
    """The VAE decoder (its group norms, as for the encoder)."""
    latent_factor: int
    """Image pixels per latent pixel."""


@runtime_checkable
class SRModel(Protocol):
    """A super-resolution model: (B, 3, h, w) LR in [0, 1] -> (B, 3, scale*h, scale*w) SR.

    ``model_type`` is the ``type`` its folder's manifest names; ``from_pretrained`` reads such a
    folder and ``save_pretrained`` writes one (manifest included).
    """

    model_type: ClassVar[str]
    tiling: ClassVar[Tiling]
    feed_forward: ClassVar[bool]
    """Whether :meth:`prepare` gives one plain network that other runtimes can run (ONNX
    Runtime, export): MoR and plain backbones, not bicubic or the one-step SD model."""

    @property
    def scale(self) -> int:
        """Upscaling factor."""
        ...

    @property
    def multiple_of(self) -> int:
        """Input height and width must be multiples of this (the pipeline pads to it)."""
        ...

    def __call__(self, lr: Tensor) -> Tensor: ...

    @property
    def score_dim(self) -> int | None:
        """How many numbers route the model (None: it is not routed)."""
        ...

    def prepare(
        self,
        lr: Tensor,
        scores: Tensor | None = None,
        *,
        routing: RoutingMode = "image",
        region_window: int = REGION_WINDOW,
    ) -> ImageWork | LatentWork:
        """The per-image work for ``lr`` (B, 3, h, w) in [0, 1], done once whatever tiles of it
        then run: scores (``scores`` replace the model's own estimate of ``lr``), the routing
        plan, prompts. :class:`ImageWork` for ``image`` tiling, :class:`LatentWork` for
        ``latent``. ``routing="region"``: the scores of every region (windows of
        ``region_window`` LR pixels) instead, for per-tile plans (feed-forward MoR models; a
        model that routes nothing gives its one work)."""
        ...

    def to_inference(
        self, device: torch.device | str, dtype: torch.dtype, *, merge: bool = False
    ) -> SRModel:
        """Move to ``device``, cast the networks (not the estimator: it stays float32) to
        ``dtype``, switch to eval mode; ``merge`` folds always-on adapters into the base weights
        where the model has them (then it can no longer be saved or trained)."""
        ...

    def describe(self) -> str:
        """A short human-readable name, for tables and logs."""
        ...

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the model folder (manifest included) and return it."""
        ...

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> SRModel:
        """Load a folder written by :meth:`save_pretrained`, in eval mode."""
        ...
