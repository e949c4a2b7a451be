"""Paired comparisons of two models over seeds and images: hierarchical bootstrap, Holm, verdicts.

A study scores every variant on the same images with several training seeds, so the paired
differences of a variant against a baseline form a ``(seeds, images)`` array (``differences[s, i]``
= variant seed ``s`` minus baseline seed ``s`` on image ``i``). Both the training seed and the
choice of test images vary the mean difference; averaging over seeds before bootstrapping images
ignores the first. Here:

- :func:`hierarchical_bootstrap`: each resample draws seeds with replacement, then images with
  replacement, and takes the mean of the drawn cells. The image draw is shared by all drawn seeds
  of a resample: images are crossed with seeds (every seed scores the same images), so one image
  resample is a resample of the test set. With one seed (or identical seeds) it is the image
  bootstrap. The interval is the percentile interval; the two-sided p-value of "mean difference
  0" is read from the same resamples (twice the smaller tail beyond 0, with the +1 correction so
  that it is never 0); a p below ``1 - level`` therefore goes with an interval that excludes 0.
- :func:`holm`: Holm's step-down adjustment of a family of p-values (the per-group bootstrap
  p-values in :func:`compare_groups`).
- :func:`verdict`: ``equivalent`` when the interval lies inside ``+-margin``, else ``better`` or
  ``worse`` when it excludes 0 (and the adjusted p-value, if given, is below ``alpha``), else
  ``inconclusive``. An interval inside the margin that also excludes 0 is ``equivalent``: the
  margin is the smallest difference that matters.

Only numpy is needed. Everything is seeded: the same input and seed give the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

RESAMPLES = 10_000
"""Bootstrap resamples by default."""
POOLED = "pooled"
"""The name :func:`compare_groups` gives to all groups' images together."""
VERDICTS = ("equivalent", "better", "worse", "inconclusive")
_CHUNK_CELLS = 4_000_000
"""Resamples are drawn in chunks of about this many (resample x image) counts."""


@dataclass(frozen=True)
class PairedEstimate:
    """The mean paired difference with its bootstrap interval and p-value."""

    mean: float
    ci_low: float
    ci_high: float
    p_value: float
    """Two-sided bootstrap p-value of a zero mean difference (unadjusted)."""
    seeds: int
    images: int


@dataclass(frozen=True)
class GroupComparison:
    """One group's estimate, its Holm-adjusted p-value and the verdict."""

    estimate: PairedEstimate
    p_adjusted: float
    verdict: str


def _as_grid(differences: ArrayLike) -> np.ndarray:
    grid = np.asarray(differences, dtype=np.float64)
    if grid.ndim == 1:
        grid = grid[np.newaxis]
    if grid.ndim != 2 or grid.shape[0] == 0 or grid.shape[1] == 0:
        raise ValueError(f"expected a non-empty (seeds, images) array, got shape {grid.shape}")
    if not np.all(np.isfinite(grid)):
        raise ValueError("the differences must be finite")
    return grid


def hierarchical_bootstrap(
    differences: ArrayLike,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> PairedEstimate:
    """Mean of a ``(seeds, images)`` array of paired differences (a 1-D array is one seed), its
    ``level`` percentile interval and two-sided p-value from resampling seeds, then images.

    Seed and image draws come from two independent streams of ``seed``, so the image draws do
    not depend on the number of seeds: one seed gives exactly the image bootstrap of that row.
    """
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    if not 0.0 < level < 1.0:
        raise ValueError("level must lie in (0, 1)")
    grid = _as_grid(differences)
    n_seeds, n_images = grid.shape
    seed_rng, image_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    means = np.empty(resamples)
    chunk = max(1, _CHUNK_CELLS // max(n_seeds, n_images))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        seed_counts = seed_rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=size)
        image_counts = image_rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=size)
        per_image = seed_counts @ grid
        means[start : start + size] = (per_image * image_counts).sum(axis=1) / (n_seeds * n_images)
    tail = (1.0 - level) / 2.0
    low, high = np.percentile(means, [100.0 * tail, 100.0 * (1.0 - tail)])
    below = (np.count_nonzero(means <= 0.0) + 1) / (resamples + 1)
    above = (np.count_nonzero(means >= 0.0) + 1) / (resamples + 1)
    return PairedEstimate(
        mean=float(grid.mean()),
        ci_low=float(low),
        ci_high=float(high),
        p_value=float(min(1.0, 2.0 * min(below, above))),
        seeds=n_seeds,
        images=n_images,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: the ``k``-th smallest of ``m`` is
    multiplied by ``m - k + 1``, made non-decreasing in that order and capped at 1."""
    p = np.asarray(p_values, dtype=np.float64)
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("p-values must lie in [0, 1]")
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (len(p) - np.arange(len(p)))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return [float(x) for x in adjusted]


def verdict(
    ci_low: float,
    ci_high: float,
    margin: float,
    p_adjusted: float | None = None,
    alpha: float = 0.05,
    lower_is_better: bool = True,
) -> str:
    """``equivalent``, ``better``, ``worse`` or ``inconclusive`` for an interval of
    ``variant - baseline`` (see the module docstring); ``lower_is_better`` for LPIPS-like
    metrics, False for PSNR-like ones."""
    if margin < 0:
        raise ValueError("margin must be non-negative")
    if ci_low > ci_high:
        raise ValueError("ci_low must not exceed ci_high")
    if -margin < ci_low and ci_high < margin:
        return "equivalent"
    significant = p_adjusted is None or p_adjusted < alpha
    if significant and (ci_high < 0 or ci_low > 0):
        return "better" if (ci_high < 0) == lower_is_better else "worse"
    return "inconclusive"


def compare_groups(
    groups: Mapping[str, ArrayLike],
    margin: float,
    resamples: int = RESAMPLES,
    seed: int = 0,
    alpha: float = 0.05,
    lower_is_better: bool = True,
) -> dict[str, GroupComparison]:
    """Per group of images, and for all of them together under ``POOLED``: the hierarchical
    bootstrap of its ``(seeds, images)`` differences, the Holm-adjusted p-value across the
    groups, and the verdict with that p-value.

    The groups must share the seeds (rows); the pooled array is their images side by side. The
    pooled comparison is the primary one and is not part of the Holm family: its p-value is
    reported unadjusted. Every group uses the same bootstrap ``seed``.
    """
    if POOLED in groups:
        raise ValueError(f"a group may not be called {POOLED!r}")
    grids = {name: _as_grid(values) for name, values in groups.items()}
    if not grids:
        raise ValueError("no groups to compare")
    if len({g.shape[0] for g in grids.values()}) != 1:
        raise ValueError("every group needs the same number of seeds")
    estimates = {
        name: hierarchical_bootstrap(grid, resamples, seed) for name, grid in grids.items()
    }
    adjusted = dict(zip(estimates, holm([e.p_value for e in estimates.values()]), strict=True))
    pooled = hierarchical_bootstrap(np.concatenate(list(grids.values()), axis=1), resamples, seed)
    estimates[POOLED] = pooled
    adjusted[POOLED] = pooled.p_value
    return {
        name: GroupComparison(
            estimate=e,
            p_adjusted=adjusted[name],
            verdict=verdict(e.ci_low, e.ci_high, margin, adjusted[name], alpha, lower_is_better),
        )
        for name, e in estimates.items()
    }
