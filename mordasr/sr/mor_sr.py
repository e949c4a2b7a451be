"""A feed-forward SR backbone with MoR adapters routed by a degradation estimator.

A model folder (``save_pretrained``/``from_pretrained``) holds the manifest
(``mordasr_model.json``, type ``mor``), ``model.json`` (which backbone, which estimator, the
scale), the MoR adapter (``mor_config.json``, ``mor_adapter.safetensors``) and, for the learned
estimator, the estimator heads the adapters were trained with (``estimator.safetensors``). The
backbone weights are not copied: they are named (a pretrained name such as
``realesrgan-x4plus``) or referenced by path. Folders of earlier versions (no manifest) are
recognised by their ``model.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from mordasr.estimate import DegradationEstimator, LearnedEstimator, load_estimator
from mordasr.estimate.learned import MIN_SIDE
from mordasr.mor import (
    MoRConfig,
    RoutingPlan,
    cast_network,
    inject_mor,
    load_mor_state_dict,
    mor_config,
    mor_layers,
    route,
    save_mor_adapter,
)
from mordasr.mor.model import CONFIG_NAME as MOR_CONFIG_FILE
from mordasr.mor.model import WEIGHTS_NAME as MOR_WEIGHTS_FILE
from mordasr.mor.model import merge_lora
from mordasr.nets.loaders import load_network
from mordasr.sr.baselines import PlainSR
from mordasr.sr.manifest import loading, read_json_dataclass, write_manifest
from mordasr.sr.protocol import ImageWork, Tiling
from mordasr.sr.regions import (
    ESTIMATOR_BATCH,
    REGION_SMOOTHING,
    REGION_SOURCES,
    REGION_STRIDE,
    REGION_WINDOW,
    RegionGrid,
    RegionScores,
    RegionSource,
    RoutingMode,
    check_routing,
    relative_uncertainty_scores,
    smooth,
    uncertainty_map,
)
from mordasr.sr.registry import check_model_type, register_model_type
from mordasr.sr.router_input import RouterInput, router_input

MODEL_FILE = "model.json"
ESTIMATOR_FILE = "estimator.safetensors"
BUILTIN = {"default": "default", "mor-dasr": "mor-dasr"}
"""Model names shipped inside the package (folders under ``mordasr/weights``): ``default``, the
plain LoRA that won the mixed-degradation study, and ``mor-dasr``, that study's MoR-DASR model
(routed per image by degradation)."""


@dataclass
class SRModelSpec:
    """What a MoR super-resolution model is made of."""

    backbone: str = "realesrgan-x4plus"
    """A pretrained backbone name or a weight file (absolute, or relative to the model folder)."""
    estimator: Literal["learned", "clip"] = "learned"
    """Which degradation estimator routes the adapters: ``learned`` or ``clip``."""
    clip_model: str | None = None
    """Hub id or local folder of the CLIP weights when ``estimator`` is ``clip``."""
    estimator_weights: str | None = None
    """Learned-estimator heads bundled with the model (relative to the model folder), so the
    adapters are always routed by the estimator they were trained with; None: the package's."""
    scale: int = 4
    """Upscaling factor of the backbone."""
    router_input: RouterInput = "scores"
    """What the routers see: all seven ``scores``, ``blur-noise`` only, or ``lr-features``
    (see :mod:`mordasr.sr.router_input`)."""
    region_scores: RegionSource = "estimator"
    """How region routing (``--routing region``) scores the regions of an image: the
    ``estimator`` on overlapping windows, or the backbone's ``uncertainty`` map (see
    :mod:`mordasr.sr.regions`)."""


@register_model_type(legacy_marker=MODEL_FILE)
class MoRSuperResolver(nn.Module):
    """Backbone + MoR adapters + estimator: ``sr = backbone_routed_by(estimator(lr))(lr)``."""

    model_type: ClassVar[str] = "mor"
    tiling: ClassVar[Tiling] = "image"
    feed_forward: ClassVar[bool] = True

    def __init__(
        self, backbone: nn.Module, estimator: DegradationEstimator, spec: SRModelSpec
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.estimator = estimator
        self.spec = spec
        self.estimator.requires_grad_(False)

    @property
    def scale(self) -> int:
        return self.spec.scale

    @property
    def multiple_of(self) -> int:
        """Side multiple the backbone needs: x2 and x1 RRDBNets pixel-unshuffle by 2 and 4."""
        return int(getattr(self.backbone, "multiple_of", 1))

    @property
    def score_dim(self) -> int:
        """How many numbers route the adapters (what :meth:`route_input` gives per image)."""
        return mor_config(self.backbone).score_dim

    def describe(self) -> str:
        return f"MoR on {self.spec.backbone} (estimator: {self.spec.estimator})"

    def to_inference(
        self, device: torch.device | str, dtype: torch.dtype, *, merge: bool = False
    ) -> MoRSuperResolver | PlainSR:
        """Backbone in ``dtype`` on ``device``; the estimator and the MoR layers stay float32
        there, so routing and folding do not depend on ``dtype`` (:func:`cast_network`).

        With ``merge``, plain LoRA adapters (no layer routed) are merged into the weights in
        float32 (:func:`~mordasr.mor.model.merge_lora`, non-finite results refused) before the
        cast, and the result is the plain backbone (:class:`PlainSR`: no adapter, no estimator,
        the backbone's own inference cost; this model is then spent). Routed ranks are folded
        per image anyway, so ``merge`` changes nothing for a routed model."""
        layers = [layer for _, layer in mor_layers(self.backbone)]
        if merge and layers and all(layer.router is None for layer in layers):
            multiple_of = self.multiple_of
            backbone = merge_lora(self.backbone)
            merged = PlainSR(
                backbone, self.scale, multiple_of, f"LoRA merged into {self.spec.backbone}"
            )
            return merged.to_inference(device, dtype)
        self.to(device)
        cast_network(self.backbone, dtype)
        return self.eval()

    @classmethod
    def build(
        cls, spec: SRModelSpec, mor: MoRConfig | None, base_dir: Path | None = None
    ) -> MoRSuperResolver:
        """Load the backbone and estimator and, if ``mor`` is given, inject fresh adapters."""
        backbone_path = _resolve(spec.backbone, base_dir)
        with loading(backbone_path):
            backbone = load_network(backbone_path)
        backbone.requires_grad_(False)
        if mor is not None:
            inject_mor(backbone, mor)
        if spec.estimator == "learned" and spec.estimator_weights:
            weights = Path(spec.estimator_weights)
            if base_dir is not None and not weights.is_absolute():
                weights = base_dir / weights
            with loading(weights):
                estimator: DegradationEstimator = LearnedEstimator.from_pretrained(weights)
        else:
            with loading(spec.clip_model or f"the {spec.estimator} estimator"):
                estimator = load_estimator(spec.estimator, clip_model=spec.clip_model)
        return cls(backbone, estimator, spec)

    def estimate(self, lr: Tensor) -> Tensor:
        """(B, 7) degradation scores of the LR images."""
        return estimate_scores(self.estimator, lr)

    @torch.no_grad()
    def route_input(self, lr: Tensor) -> Tensor:
        """What the routers see for the LR images, as ``spec.router_input`` says (by default
        the seven scores of :meth:`estimate`)."""
        image = _estimator_view(lr)
        return router_input(self.spec.router_input, self.estimator, image).to(lr.dtype)

    def plan(self, lr: Tensor, scores: Tensor | None = None, *, fold: bool = False) -> RoutingPlan:
        """The backbone's routing plan for ``lr`` (B, 3, h, w), routed by ``scores`` (default:
        :meth:`route_input` of ``lr``); ``fold`` adds the folded weights (float32)."""
        if scores is None:
            scores = self.route_input(lr)
        return route(self.backbone, scores.float(), fold=fold)

    def prepare(
        self,
        lr: Tensor,
        scores: Tensor | None = None,
        *,
        routing: RoutingMode = "image",
        region_window: int = REGION_WINDOW,
    ) -> ImageWork:
        """The backbone and its folded plan for ``lr``: one fold per layer and image, however
        many tiles then run. ``routing="region"`` adds the region scores of ``lr``
        (:meth:`region_scores` on windows of ``region_window`` pixels tiling the image), from
        which every tile folds its own plan; ``plan`` is then the one of the whole image's
        regions."""
        if check_routing(routing) == "image":
            return ImageWork(self.backbone, self.plan(lr, scores, fold=True))
        if scores is not None:
            raise ValueError("region routing scores every region itself: give no scores")
        regions = self.region_scores(lr, window=region_window, stride=region_window)
        whole = regions.for_box((0, 0, *lr.shape[-2:]))
        return ImageWork(self.backbone, route(self.backbone, whole, fold=True), regions)

    @torch.no_grad()
    def region_scores(
        self,
        lr: Tensor,
        source: RegionSource | None = None,
        *,
        window: int = REGION_WINDOW,
        stride: int = REGION_STRIDE,
        smoothing: float = REGION_SMOOTHING,
    ) -> RegionScores:
        """What the routers see for every region of ``lr`` (B, 3, h, w), on a grid of
        ``window``-sided windows ``stride`` apart, smoothed over ``smoothing`` regions. ``source``
        (default ``spec.region_scores``): ``estimator`` runs :meth:`route_input` on every window;
        ``uncertainty`` scales the image's scores by each window's pooled :meth:`uncertainty`
        relative to the image's mean."""
        if window < MIN_SIDE:
            raise ValueError(f"region windows need sides >= {MIN_SIDE} px (the estimator's)")
        source = source or self.spec.region_scores
        grid = RegionGrid.over(lr.shape[-2], lr.shape[-1], window, stride)
        rows, cols = grid.shape
        if source == "estimator":
            windows = grid.crops(lr.float())
            inputs = torch.cat([self.route_input(w) for w in windows.split(ESTIMATOR_BATCH)])
            raw = inputs.float().view(lr.shape[0], rows, cols, -1).permute(0, 3, 1, 2)
        elif source == "uncertainty":
            if self.spec.router_input == "lr-features":
                raise ValueError("uncertainty region scores scale degradation scores, not features")
            pooled = grid.pool(self.uncertainty(lr), self.scale)
            raw = relative_uncertainty_scores(self.route_input(lr), pooled)
        else:
            raise ValueError(f"unknown region source {source!r}; choose one of {REGION_SOURCES}")
        return RegionScores(grid, smooth(raw, smoothing))

    def uncertainty(self, lr: Tensor) -> Tensor:
        """(B, scale * h, scale * w) M3ESR's uncertainty map of ``lr``: how far the backbone
        without adapters moves from bicubic enlargement, per SR pixel."""
        return uncertainty_map(self.backbone, lr, self.scale, self.multiple_of)

    def forward(self, lr: Tensor, scores: Tensor | None = None) -> Tensor:
        """Super-resolve ``lr`` (B, 3, h, w) in [0, 1]; ``scores`` (the routers' input)
        default to :meth:`route_input`."""
        with self.plan(lr, scores).applied(self.backbone) as network:
            return network(lr)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the manifest, ``model.json`` and the adapter into ``directory``."""
        directory = Path(directory)
        save_mor_adapter(self.backbone, directory)
        spec = replace(self.spec)
        if isinstance(self.estimator, LearnedEstimator):
            self.estimator.save_heads(directory / ESTIMATOR_FILE)
            spec.estimator_weights = ESTIMATOR_FILE
        (directory / MODEL_FILE).write_text(json.dumps(asdict(spec), indent=2) + "\n")
        write_manifest(directory, self.model_type)
        return directory

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "default") -> MoRSuperResolver:
        """Load a built-in model by name (``default``, ``mor-dasr``) or a folder written by
        save_pretrained (of this version or an earlier one); a bad file is a one-line
        :class:`~mordasr.sr.manifest.ModelLoadError` naming it."""
        directory = builtin_model_dir(str(name_or_path)) or Path(name_or_path)
        check_model_type(directory, cls.model_type)
        spec = read_json_dataclass(directory / MODEL_FILE, SRModelSpec)
        config_file = directory / MOR_CONFIG_FILE
        with loading(config_file):
            mor = MoRConfig.from_dict(json.loads(config_file.read_text()))
        model = cls.build(spec, mor=mor, base_dir=directory)
        weights_file = directory / MOR_WEIGHTS_FILE
        with loading(weights_file):
            load_mor_state_dict(model.backbone, load_file(str(weights_file)))
        model.backbone.requires_grad_(False)
        return model.eval()


@torch.no_grad()
def estimate_scores(estimator: DegradationEstimator, lr: Tensor) -> Tensor:
    """(B, 7) degradation scores of LR images (B, 3, h, w) in [0, 1], in ``lr``'s dtype
    (small images are enlarged first, see :func:`_estimator_view`)."""
    return estimator(_estimator_view(lr)).to(lr.dtype)


def builtin_model_dir(name: str) -> Path | None:
    """The package folder of a built-in model, or None when ``name`` is not one."""
    if name not in BUILTIN:
        return None
    return Path(str(resources.files("mordasr") / "weights" / BUILTIN[name]))


def _estimator_view(lr: Tensor) -> Tensor:
    """``lr`` in float32, bicubically enlarged when a side is under ``MIN_SIDE``: the
    estimator's features need a minimum extent."""
    image = lr.float()
    short = min(image.shape[-2:])
    if short < MIN_SIDE:
        height, width = image.shape[-2:]
        size = (math.ceil(height * MIN_SIDE / short), math.ceil(width * MIN_SIDE / short))
        image = F.interpolate(image, size=size, mode="bicubic", align_corners=False)
        image = image.clamp(0.0, 1.0)
    return image


def _resolve(backbone: str, base_dir: Path | None) -> str:
    path = Path(backbone)
    if base_dir is not None and not path.is_absolute() and (base_dir / path).exists():
        return str(base_dir / path)
    return backbone
