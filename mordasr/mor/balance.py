"""Load-balancing losses for the routed experts (paper eq. 13-17).

Notation: ``N`` routed slots, of which the first ``num_real`` are real experts and the rest zero
experts; each image keeps its top ``k`` slots.

``f_i`` — the share of all kept slots in the batch that went to slot ``i``:
``f_i = count_i / (k * B)``. With ``k = 1`` this is the paper's argmax fraction (eq. 14); for
top-k routing it counts every kept slot, and it sums to 1 over the slots.

``P_i`` — the mean router probability of slot ``i`` over the batch (eq. 15).

Standard loss (eq. 13): ``alpha * N * sum_i f_i P_i``. A perfectly uniform router has
``f_i = P_i = 1/N`` and scores exactly ``alpha``; any imbalance scores more. ``f_i`` carries no
gradient; the router learns through ``P_i``.

Degradation-aware loss (eq. 16-17): each image's probabilities are weighted per slot by
``alpha`` for real experts and ``alpha * s`` for zero experts, where ``s`` in [0, 1] is the
image's scalar severity: ``N * sum_i f_i * mean_b(w_{b,i} p_{b,i})``. For a badly degraded image
(s near 1) zero experts are penalised like real ones, so balancing spreads its load over real
experts; for a mildly degraded image (s near 0) the penalty on zero experts vanishes and its
probability mass drifts onto them. Images therefore end up using more real experts the more
degraded they are.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mordasr.mor.config import SeverityReduce


def severity_from_scores(scores: Tensor, reduce: SeverityReduce = "mean") -> Tensor:
    """One severity per image in [0, 1] from the (B, D) degradation scores.

    ``mean`` averages the D quality dimensions (the default: every dimension is "higher = worse");
    ``overall`` takes the first dimension (the paper's "overall quality" prompt pair);
    ``max`` takes the worst dimension.
    """
    if scores.ndim != 2:
        raise ValueError("scores must have shape (B, D)")
    if reduce == "mean":
        return scores.mean(dim=1)
    if reduce == "overall":
        return scores[:, 0]
    if reduce == "max":
        return scores.max(dim=1).values
    raise ValueError(f"unknown reduce {reduce!r}")


def calibrate_severity(severity: Tensor, severity_range: tuple[float, float]) -> Tensor:
    """Map ``severity_range = (lo, hi)`` linearly onto [0, 1], clamped: ``lo`` and below count as
    clean, ``hi`` and above as worst. ``(0, 1)`` leaves the severity as it is (the paper).

    An estimator whose training images all fall in a narrow band (the mild and severe presets
    average 0.37 and 0.45 with the v2 estimator) would otherwise weight zero experts almost alike
    for every image, and the degradation-aware loss could not tell them apart.
    """
    lo, hi = severity_range
    if (lo, hi) == (0.0, 1.0):
        return severity
    return ((severity - lo) / (hi - lo)).clamp(0.0, 1.0)


def dispatch_fraction(indices: Tensor, num_slots: int) -> Tensor:
    """``f``: (N,) share of the batch's kept slots that went to each slot; sums to 1."""
    counts = torch.zeros(num_slots, device=indices.device, dtype=torch.float32)
    counts.scatter_add_(0, indices.reshape(-1), torch.ones(indices.numel(), device=indices.device))
    return counts / indices.numel()


def slot_weights(
    num_slots: int, num_real: int, alpha: float, severity: Tensor | None, batch: int
) -> Tensor:
    """(B, N) per-image slot weights: ``alpha`` for real experts, ``alpha * s`` for zero ones."""
    weights = torch.full((batch, num_slots), float(alpha))
    if severity is not None:
        if severity.shape != (batch,):
            raise ValueError(f"severity must have shape ({batch},), got {tuple(severity.shape)}")
        weights = weights.to(severity.device)
        zero = alpha * severity.detach().float().clamp(0.0, 1.0)
        weights[:, num_real:] = zero.unsqueeze(1)
    return weights


def load_balance_loss(
    probs: Tensor,
    indices: Tensor,
    num_real: int,
    alpha: float = 1.0,
    severity: Tensor | None = None,
) -> Tensor:
    """Balance loss of one router: standard when ``severity`` is None, else degradation-aware.

    Args:
        probs: (B, N) router softmax (with its graph).
        indices: (B, k) kept slots.
        num_real: how many of the N slots are real experts (the rest are zero experts).
        alpha: the weighting factor.
        severity: (B,) scalar severity per image in [0, 1], see :func:`severity_from_scores`.
    """
    batch, num_slots = probs.shape
    f = dispatch_fraction(indices, num_slots).to(probs.device)
    weights = slot_weights(num_slots, num_real, alpha, severity, batch).to(probs.device)
    weighted_p = (weights * probs.float()).mean(dim=0)
    return num_slots * torch.sum(f * weighted_p)
