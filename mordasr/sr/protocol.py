"""What every super-resolution model mordasr runs provides (:class:`SRModel`).

The inference pipeline, the benchmark and the loaders talk to models only through this
protocol, so a new model type needs no change there: it implements the protocol and registers
its manifest type (:func:`mordasr.sr.registry.register_model_type`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import ClassVar, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

Tiling = Literal["image", "latent"]
"""How large inputs are split: ``image`` tiles of one feed-forward network, or ``latent``
tiles of the one-step SD stages (VAE encoder, UNet, VAE decoder)."""


@runtime_checkable
class SRModel(Protocol):
    """A super-resolution model: (B, 3, h, w) LR in [0, 1] -> (B, 3, scale*h, scale*w) SR.

    ``model_type`` is the ``type`` its folder's manifest names; ``from_pretrained`` reads such a
    folder and ``save_pretrained`` writes one (manifest included).
    """

    model_type: ClassVar[str]
    tiling: ClassVar[Tiling]

    @property
    def scale(self) -> int:
        """Upscaling factor."""
        ...

    @property
    def multiple_of(self) -> int:
        """Input height and width must be multiples of this (the pipeline pads to it)."""
        ...

    def __call__(self, lr: Tensor) -> Tensor: ...

    def routed(self, lr: Tensor) -> AbstractContextManager[Callable[[Tensor], Tensor]]:
        """The network for ``lr`` (or tiles of it), routed by the whole of ``lr``: degradation
        scores and prompts are computed once, on entry, whatever the network is then run on."""
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
