"""ComfyUI nodes: load a mordasr model, upscale an IMAGE batch with it.

ComfyUI reads ``NODE_CLASS_MAPPINGS`` (node id -> class) and ``NODE_DISPLAY_NAME_MAPPINGS`` from
each package in its ``custom_nodes`` folder; :mod:`mordasr.integrations.comfyui_node` is such a
package, re-exporting the mappings below (see the README for the one-line install). Each node
class follows ComfyUI's conventions: ``INPUT_TYPES`` (a classmethod giving the inputs and their
widgets), ``RETURN_TYPES``, ``FUNCTION`` (the method ComfyUI calls with the inputs as keyword
arguments, returning a tuple) and ``CATEGORY``. ComfyUI's IMAGE is a (B, H, W, C) float32 tensor
in [0, 1], C = 3.

- **mordasr model loader**: a model name (``default``, a backbone such as ``realesrgan-x4plus``)
  or a model folder -> a ``MORDASR_MODEL`` holding an :class:`~mordasr.infer.Upscaler`.
- **mordasr upscale**: IMAGE, MORDASR_MODEL, strength, routing (``auto``: every image routed by
  its own degradation scores; or fixed scores ``0.2, 0.5, ...``: the model folded once for
  them, as ``mordasr export --scores`` does), tile (0: chosen from the free memory) -> IMAGE.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import torch
from torch import Tensor, nn

from mordasr.infer import Upscaler
from mordasr.infer.export import fixed_network
from mordasr.infer.pipeline import MAX_STRENGTH
from mordasr.mor import mor_layers, set_strength
from mordasr.sr.baselines import PlainSR
from mordasr.sr.zoo import load_sr_model

MODEL_TYPE = "MORDASR_MODEL"
"""The ComfyUI type name of what the loader node returns."""
CATEGORY = "image/upscaling"
AUTO: Final = "auto"


@dataclass
class MordasrModel:
    """What flows along a ``MORDASR_MODEL`` link: the loaded model's :class:`Upscaler` (per-image
    routing), and the last fixed-routing network folded from it, reused while the scores and
    strength stay the same."""

    name: str
    upscaler: Upscaler
    precision: str = "auto"
    _fixed: tuple[tuple[tuple[float, ...], float], Upscaler] | None = field(
        default=None, repr=False
    )

    @property
    def score_dim(self) -> int | None:
        """How many scores the model's routers take (None: the model is not routed)."""
        return self.upscaler.model.score_dim

    def fixed_upscaler(self, scores: tuple[float, ...], strength: float) -> Upscaler:
        """An :class:`Upscaler` of the model folded for ``scores`` at ``strength``."""
        key = (scores, strength)
        if self._fixed is None or self._fixed[0] != key:
            source = self.upscaler
            network = fixed_network(source.model, torch.tensor([scores]), strength)
            upscaler = Upscaler(
                PlainSR(network, source.scale, source.model.multiple_of),
                device=source.device,
                tile=source.tile,
                precision=self.precision,
            )
            self._fixed = (key, upscaler)
        return self._fixed[1]


def parse_routing(text: str, score_dim: int | None) -> tuple[float, ...] | None:
    """None for ``auto``, else the comma-separated scores (``score_dim`` of them)."""
    if text.strip().lower() == AUTO:
        return None
    if score_dim is None:
        raise ValueError("this model is not routed: use routing 'auto'")
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        scores = tuple(float(part) for part in parts)
    except ValueError:
        raise ValueError(
            f"routing is 'auto' or {score_dim} comma-separated numbers, got {text!r}"
        ) from None
    if len(scores) != score_dim:
        raise ValueError(f"routing needs {score_dim} comma-separated scores, got {len(scores)}")
    return scores


@contextmanager
def adapter_strength(model: object, strength: float) -> Iterator[None]:
    """Run the block with ``model``'s MoR adapters scaled by ``strength``, back to 1 after it
    (the loaded model is shared by every node that uses it)."""
    if strength == 1.0:
        yield
        return
    if not isinstance(model, nn.Module) or next(mor_layers(model), None) is None:
        raise ValueError("strength applies to MoR models only (this model has no adapters)")
    set_strength(model, strength)
    try:
        yield
    finally:
        set_strength(model, 1.0)


class MordasrModelLoader:
    """ComfyUI node: a mordasr model by name or folder."""

    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Load a mordasr model (the default MoR model, a backbone name or a folder)."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict[str, Any]]:  # ComfyUI calls it by this name
        return {
            "required": {
                "model": (
                    "STRING",
                    {
                        "default": "default",
                        "multiline": False,
                        "tooltip": "'default', a backbone name (realesrgan-x4plus, ...) or a "
                        "model folder",
                    },
                ),
                "precision": (
                    ["auto", "exact"],
                    {
                        "default": "auto",
                        "tooltip": "auto: the fastest precision that met the quality bar here; "
                        "exact: float32",
                    },
                ),
            }
        }

    def load(self, model: str, precision: str = "auto") -> tuple[MordasrModel]:
        """Load ``model`` once; its adapters stay unmerged so strength can scale them."""
        loaded = load_sr_model(model)
        assert isinstance(loaded, nn.Module)  # every SR model mordasr loads is a module
        upscaler = Upscaler(loaded, precision=precision)
        return (MordasrModel(model, upscaler, precision),)


class MordasrUpscale:
    """ComfyUI node: upscale an IMAGE batch with a loaded mordasr model."""

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = CATEGORY
    DESCRIPTION = "Upscale images with mordasr, each routed by its own degradation or fixed scores."
    STRENGTH_SPEC: ClassVar[dict[str, Any]] = {
        "default": 1.0,
        "min": 0.0,
        "max": MAX_STRENGTH,
        "step": 0.05,
        "tooltip": "scales the MoR adapters: 0 is the plain backbone, 1 the trained model",
    }

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict[str, Any]]:  # ComfyUI calls it by this name
        return {
            "required": {
                "image": ("IMAGE",),
                "model": (MODEL_TYPE,),
                "strength": ("FLOAT", dict(cls.STRENGTH_SPEC)),
                "routing": (
                    "STRING",
                    {
                        "default": AUTO,
                        "multiline": False,
                        "tooltip": "auto: each image routed by its own degradation scores; or "
                        "fixed scores, comma-separated (7 for the default model)",
                    },
                ),
                "tile": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 8192,
                        "step": 8,
                        "tooltip": "largest input tile side (above 64); 0 picks it from the "
                        "free memory",
                    },
                ),
            }
        }

    def upscale(
        self, image: Tensor, model: MordasrModel, strength: float, routing: str, tile: int
    ) -> tuple[Tensor]:
        """(B, H, W, 3) in [0, 1] -> (B, scale H, scale W, 3) float32 in [0, 1], on the CPU."""
        if image.ndim != 4 or image.shape[-1] != 3:
            raise ValueError(f"expected an IMAGE batch (B, H, W, 3), got {tuple(image.shape)}")
        if not 0.0 <= strength <= MAX_STRENGTH:
            raise ValueError(f"strength must lie in [0, {MAX_STRENGTH}], got {strength}")
        overlap = model.upscaler.tile_overlap
        if 0 < tile <= 2 * overlap:
            raise ValueError(f"tile must be 0 (auto) or exceed twice the overlap ({overlap})")
        scores = parse_routing(routing, model.score_dim)
        context: AbstractContextManager[None]
        if scores is None:
            upscaler = model.upscaler
            context = adapter_strength(upscaler.model, strength)
        else:  # the strength is folded into the fixed network
            upscaler = model.fixed_upscaler(scores, strength)
            context = nullcontext()
        upscaler.tile = tile or AUTO
        planes = image.movedim(-1, 1).float()
        with context:
            # one image at a time: each is routed by its own scores
            outputs = [upscaler.upscale_tensor(planes[i : i + 1]).cpu() for i in range(len(planes))]
        return (torch.cat(outputs).movedim(1, -1).float().contiguous(),)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "MordasrModelLoader": MordasrModelLoader,
    "MordasrUpscale": MordasrUpscale,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "MordasrModelLoader": "mordasr model loader",
    "MordasrUpscale": "mordasr upscale",
}

__all__ = [
    "NODE_CLASS_MAPPINGS",
    "NODE_DISPLAY_NAME_MAPPINGS",
    "MordasrModel",
    "MordasrModelLoader",
    "MordasrUpscale",
    "parse_routing",
]
