"""Expert-activation analysis: which experts a MoR model keeps for which degradations.

The paper's appendix B (Figures 6-7) argues from behaviour: more degraded images keep more real
experts, zero experts concentrate in some layers, some experts specialise in blur or noise. This
module turns routing decisions into those tables, for any MoR model.

A router sees only the image's degradation scores (``p = softmax(s W_g)``), never the image, so
routing an image needs its scores and the routers, not a forward pass of the network:
:func:`route_scores` makes the network's routing plan (:func:`mordasr.mor.route`), exactly what
a forward pass runs. Models whose routing needs more than that can be analysed through any
:data:`RouteFn`, a callable from an LR batch to its :class:`RoutedBatch`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from mordasr.degrade import (
    add_gaussian_noise,
    degrade,
    filter2d,
    isotropic_gaussian_kernel,
    jpeg,
    resize,
)
from mordasr.mor import LayerRouting, mor_config, route, severity_from_scores


@dataclass(frozen=True)
class RoutedBatch:
    """How a MoR model routed a batch of LR images."""

    scores: Tensor
    """(B, D) degradation scores."""
    severity: Tensor
    """(B,) one severity per image, reduced from the scores as the model's config says."""
    layers: dict[str, LayerRouting]
    """Per routed layer, the kept slots of every image."""


RouteFn = Callable[[Tensor], RoutedBatch]
"""An LR batch (B, 3, h, w) in [0, 1] -> how the model routes it."""

DegradeFn = Callable[[Tensor, int], Tensor]
"""(HR batch (B, 3, H, W) in [0, 1], seed) -> LR batch at 1/scale, 8-bit levels."""


class Estimating(Protocol):
    """A MoR model that scores its own inputs (``MoRSuperResolver``, the SD one-step model)."""

    def estimate(self, lr: Tensor) -> Tensor: ...


@runtime_checkable
class Rerouting(Estimating, Protocol):
    """A MoR model that can upscale an image with router inputs other than its own."""

    def __call__(self, lr: Tensor, scores: Tensor | None = None) -> Tensor: ...


@torch.no_grad()
def route_scores(network: nn.Module, scores: Tensor) -> dict[str, LayerRouting]:
    """Every routed layer's decision for (B, D) ``scores`` (its routing plan), without running
    ``network``."""
    stats = route(network, scores).stats()
    if not stats:
        raise ValueError("the model has no routed MoR layers to analyse")
    return stats


def model_router(model: Estimating, network: nn.Module | None = None) -> RouteFn:
    """Route LR batches as ``model`` does: severity from ``model.estimate``, router input from
    ``model.route_input`` where the model has one (ablations that route by other features),
    else the scores; the routers are those inside ``network`` (default: inside ``model``)."""
    routed = model if network is None else network
    if not isinstance(routed, nn.Module):
        raise TypeError("pass the MoR-injected network as `network`")
    reduce = mor_config(routed).severity_reduce

    def route(lr: Tensor) -> RoutedBatch:
        scores = model.estimate(lr).float().cpu()
        severity = severity_from_scores(scores, reduce)
        route_input = getattr(model, "route_input", None)
        inputs = scores if route_input is None else route_input(lr).float().cpu()
        return RoutedBatch(scores, severity, route_scores(routed, inputs))

    return route


def _to_lr(hr: Tensor, scale: int) -> Tensor:
    return resize(hr, (hr.shape[-2] // scale, hr.shape[-1] // scale), "bicubic").clamp(0, 1)


def _quantise(x: Tensor) -> Tensor:
    return (x.clamp(0, 1) * 255).round() / 255


BLUR_SIGMA = 1.5
"""Gaussian blur of the blur-only set, in LR pixels."""
NOISE_SIGMA = 20.0
"""Gaussian noise of the noise-only set, in 8-bit levels."""
JPEG_QUALITY = 20
"""JPEG quality of the JPEG-only set."""


def blur_only(hr: Tensor, seed: int, scale: int = 4) -> Tensor:
    """Bicubic downscaling, then an isotropic Gaussian blur of ``BLUR_SIGMA`` LR pixels."""
    del seed
    return _quantise(filter2d(_to_lr(hr, scale), isotropic_gaussian_kernel(13, BLUR_SIGMA)))


def noise_only(hr: Tensor, seed: int, scale: int = 4) -> Tensor:
    """Bicubic downscaling, then colour Gaussian noise of ``NOISE_SIGMA`` 8-bit levels."""
    generator = torch.Generator(device=hr.device).manual_seed(seed)
    return _quantise(add_gaussian_noise(_to_lr(hr, scale), NOISE_SIGMA, generator=generator))


def jpeg_only(hr: Tensor, seed: int, scale: int = 4) -> Tensor:
    """Bicubic downscaling, then JPEG at quality ``JPEG_QUALITY``."""
    del seed
    return jpeg(_quantise(_to_lr(hr, scale)), JPEG_QUALITY)


TYPE_DEGRADATIONS: dict[str, DegradeFn] = {
    "blur": blur_only,
    "noise": noise_only,
    "jpeg": jpeg_only,
}
"""One degradation factor at a fixed level each, for the per-type expert frequencies."""


def preset_degradation(preset: str, scale: int = 4) -> DegradeFn:
    """The full second-order chain of a ``mordasr.degrade`` preset."""

    def apply(hr: Tensor, seed: int) -> Tensor:
        return degrade(hr, preset, scale=scale, seed=seed).lr

    return apply


@dataclass(frozen=True)
class SetRouting:
    """The routing of one image set (the same images under one degradation), image by image."""

    name: str
    images: list[str]
    scores: Tensor
    """(n, D) degradation scores."""
    severity: Tensor
    """(n,) severities."""
    layers: dict[str, LayerRouting]
    """Per routed layer, the decisions of all n images."""

    def real_experts(self) -> Tensor:
        """(n,) real experts kept per layer by each image, averaged over the layers."""
        kept = [r.indices.shape[1] - r.num_zero.float() for r in self.layers.values()]
        return torch.stack(kept).mean(dim=0)


def analyse_set(
    name: str,
    images: Iterable[tuple[str, Tensor]],
    degradation: DegradeFn,
    route: RouteFn,
    seed: int = 0,
    progress: bool = False,
) -> SetRouting:
    """Degrade every (name, (1, 3, H, W) HR) image, image i with ``seed + i``, and route it."""
    names: list[str] = []
    batches: list[RoutedBatch] = []
    for index, (image_name, hr) in enumerate(
        tqdm(list(images), desc=name, unit="img", disable=not progress)
    ):
        names.append(image_name)
        batches.append(route(degradation(hr, seed + index)))
    if not batches:
        raise ValueError(f"no images to analyse for {name!r}")
    layers = {
        layer: LayerRouting(
            indices=torch.cat([b.layers[layer].indices for b in batches]),
            gates=torch.cat([b.layers[layer].gates for b in batches]),
            probs=torch.cat([b.layers[layer].probs for b in batches]),
            num_zero=torch.cat([b.layers[layer].num_zero for b in batches]),
            num_real=batches[0].layers[layer].num_real,
        )
        for layer in batches[0].layers
    }
    return SetRouting(
        name,
        names,
        torch.cat([b.scores for b in batches]),
        torch.cat([b.severity for b in batches]),
        layers,
    )


@torch.no_grad()
def swap_change(
    model: Rerouting,
    images: Iterable[tuple[str, Tensor]],
    own: DegradeFn,
    other: DegradeFn,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """How much routing changes the output: every image degraded by ``own`` is upscaled with its
    own router input and again with that of its ``other`` version (image i with ``seed + i``,
    as :func:`analyse_set`); mean and 99th percentile of ``|difference|`` over all pixels of all
    images, in 8-bit levels. Near 0 means the routed experts carry nothing routing could move."""
    route_input = getattr(model, "route_input", model.estimate)
    changes = []
    for index, (_, hr) in enumerate(tqdm(list(images), desc="swap", disable=not progress)):
        lr_own, lr_other = own(hr, seed + index), other(hr, seed + index)
        mine = model(lr_own).clamp(0, 1)
        swapped = model(lr_own, scores=route_input(lr_other)).clamp(0, 1)
        changes.append(((swapped - mine).abs() * 255).flatten())
    if not changes:
        raise ValueError("no images to swap")
    change = torch.cat(changes).double()
    return {"mean": float(change.mean()), "p99": float(torch.quantile(change, 0.99))}


def keep_frequency(routing: LayerRouting) -> Tensor:
    """(N,) fraction of images that kept each routed slot."""
    kept = torch.zeros(routing.probs.shape)
    kept.scatter_(1, routing.indices, 1.0)
    return kept.mean(dim=0)


def zero_experts_per_layer(sets: list[SetRouting]) -> list[dict[str, Any]]:
    """Per layer (in network order): mean zero experts kept per image, one column per set."""
    return [
        {"layer": layer, **{s.name: float(s.layers[layer].num_zero.float().mean()) for s in sets}}
        for layer in sets[0].layers
    ]


def expert_frequency(sets: list[SetRouting], layer: str) -> list[dict[str, Any]]:
    """Per routed slot of ``layer``: real or zero expert, and how often each set kept it."""
    num_real = sets[0].layers[layer].num_real
    frequencies = {s.name: keep_frequency(s.layers[layer]) for s in sets}
    slots = len(next(iter(frequencies.values())))
    return [
        {
            "slot": slot,
            "kind": "real" if slot < num_real else "zero",
            **{name: float(f[slot]) for name, f in frequencies.items()},
        }
        for slot in range(slots)
    ]


def real_experts_vs_score(sets: list[SetRouting]) -> list[dict[str, Any]]:
    """One row per (set, image): its severity and the real experts it keeps per layer."""
    return [
        {"set": s.name, "image": image, "severity": float(sev), "real_experts": float(real)}
        for s in sets
        for image, sev, real in zip(s.images, s.severity, s.real_experts(), strict=True)
    ]


def severity_correlation(sets: list[SetRouting]) -> float:
    """Pearson correlation of severity and real experts kept, over every image of every set
    (0 when either is constant)."""
    severity = torch.cat([s.severity for s in sets])
    real = torch.cat([s.real_experts() for s in sets])
    return float(torch.corrcoef(torch.stack([severity, real]))[0, 1].nan_to_num(0.0))


def most_varied_layer(sets: list[SetRouting]) -> str:
    """The layer whose kept slots vary most across all images (the last one on a tie).

    Variance is summed over slots of the 0/1 "kept" indicator, over every image of every set.
    """
    best, best_var = "", -1.0
    for layer in sets[0].layers:
        kept = []
        for s in sets:
            r = s.layers[layer]
            kept.append(torch.zeros(r.probs.shape).scatter_(1, r.indices, 1.0))
        variance = float(torch.cat(kept).var(dim=0, unbiased=False).sum())
        if variance >= best_var - 1e-12:
            best, best_var = layer, variance
    return best


def _require_same_images(a: SetRouting, b: SetRouting) -> None:
    """Paired comparisons need the same images in the same order (as :func:`analyse_set` makes
    them from one image list)."""
    if a.images != b.images:
        raise ValueError("compare sets built from the same images")


def compare_sets(mild: SetRouting, severe: SetRouting) -> dict[str, Any]:
    """Whether ``severe`` keeps more real experts than ``mild``, on average and image by image.

    The sets must hold the same images in the same order (as :func:`analyse_set` makes them
    from one image list), so the per-image differences are paired. ``score_cosine`` is the
    cosine of the two sets' mean score vectors: a router without bias keeps the top-k of
    ``s W_g``, whose order does not change when ``s`` is scaled, so near 1 the two sets keep
    nearly the same experts however different their severities.
    """
    _require_same_images(mild, severe)
    diff = severe.real_experts() - mild.real_experts()
    return {
        "mild": mild.name,
        "severe": severe.name,
        "images": len(mild.images),
        "mean_real_experts": {
            mild.name: float(mild.real_experts().mean()),
            severe.name: float(severe.real_experts().mean()),
        },
        "mean_severity": {
            mild.name: float(mild.severity.mean()),
            severe.name: float(severe.severity.mean()),
        },
        "difference": float(diff.mean()),
        "score_cosine": float(
            torch.cosine_similarity(mild.scores.mean(dim=0), severe.scores.mean(dim=0), dim=0)
        ),
        "images_severe_more": int((diff > 0).sum()),
        "images_severe_fewer": int((diff < 0).sum()),
        "severe_keeps_more": bool(diff.mean() > 0),
    }


def _jaccard(first: list[int], second: list[int], num_real: int) -> float:
    """Overlap of the real experts among two kept-slot lists (two empty sets count as equal)."""
    real_a = {i for i in first if i < num_real}
    real_b = {i for i in second if i < num_real}
    union = real_a | real_b
    return len(real_a & real_b) / len(union) if union else 1.0


def kept_overlap(a: SetRouting, b: SetRouting) -> float:
    """How alike the real experts are that the same image keeps under two degradations: the
    Jaccard overlap of the two kept sets (zero experts left out), averaged over images and
    layers. 1: the routers pick the same experts whatever the degradation; the real-expert
    counts alone cannot tell that from routing by kind."""
    _require_same_images(a, b)
    overlaps = [
        _jaccard(kept_a, kept_b, first.num_real)
        for name, first in a.layers.items()
        for kept_a, kept_b in zip(
            first.indices.tolist(), b.layers[name].indices.tolist(), strict=True
        )
    ]
    return sum(overlaps) / len(overlaps)


def within_overlap(s: SetRouting) -> float:
    """The same overlap between different images under one degradation (every pair, every
    layer): how much the choice follows the degradation rather than the image. 1 for a set of
    one image."""
    overlaps = []
    for routing in s.layers.values():
        kept = routing.indices.tolist()
        overlaps += [
            _jaccard(kept[i], kept[j], routing.num_real)
            for i in range(len(kept))
            for j in range(i + 1, len(kept))
        ]
    return sum(overlaps) / len(overlaps) if overlaps else 1.0


def overlap_table(sets: list[SetRouting]) -> dict[str, dict[str, float]]:
    """:func:`kept_overlap` of every pair of ``sets``, by name; on the diagonal, a set's
    :func:`within_overlap` (different images, the same degradation)."""
    return {
        a.name: {b.name: within_overlap(a) if a is b else kept_overlap(a, b) for b in sets}
        for a in sets
    }


def set_summary(s: SetRouting) -> dict[str, Any]:
    """Means of one set: severity, real and zero experts kept per layer."""
    zero = torch.stack([r.num_zero.float() for r in s.layers.values()]).mean(dim=0)
    return {
        "images": len(s.images),
        "mean_severity": float(s.severity.mean()),
        "mean_scores": [float(v) for v in s.scores.mean(dim=0)],
        "mean_real_experts_per_layer": float(s.real_experts().mean()),
        "mean_zero_experts_per_layer": float(zero.mean()),
    }
