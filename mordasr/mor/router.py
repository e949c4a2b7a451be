"""The degradation-aware router: degradation scores -> top-k routed slots and their gates."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor, nn

ScoreTransform = Literal["raw", "centred", "log-odds"]
SCORE_TRANSFORMS: tuple[str, ...] = get_args(ScoreTransform)
SCORE_CENTRE = 0.5
"""Where ``centred`` puts the origin: a score of 0.5 is "as likely negative as positive"."""
LOG_ODDS_EPS = 1e-3
"""Scores are clamped to ``[eps, 1 - eps]`` before ``log-odds`` (finite, at most +-6.9)."""


def transform_scores(scores: Tensor, kind: ScoreTransform) -> Tensor:
    """What the gating matrix multiplies, in float32: the scores as they are (``raw``, the paper's
    eq. 9), ``scores - 0.5`` (``centred``) or ``log(s / (1 - s))`` (``log-odds``).

    With ``raw`` scores in ``[0, 1]``, a mild image whose seven scores are a scaled-down copy of a
    severe one's gets the same slot order (top-k of ``softmax(c s W)`` is the same for every
    ``c > 0``). Centred and log-odds scores change sign at 0.5, so a score vector that only grows
    can still move a slot past another: severity alone can change which experts are kept.
    """
    s = scores.float()
    if kind == "raw":
        return s
    if kind == "centred":
        return s - SCORE_CENTRE
    if kind == "log-odds":
        s = s.clamp(LOG_ODDS_EPS, 1.0 - LOG_ODDS_EPS)
        return torch.log(s) - torch.log1p(-s)
    raise ValueError(f"unknown score transform {kind!r}; choose one of {list(SCORE_TRANSFORMS)}")


def keep_top_k(
    probs: Tensor, top_k: int, renormalize: bool = False, gate_scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """The kept ``(gates, indices)`` of (..., N) router probabilities, largest first.

    ``renormalize`` makes the kept gates sum to 1; ``gate_scale`` then multiplies them (DeepSeek's
    routed scaling factor). The paper's eq. 9 is neither: each kept gate is its softmax value,
    about ``1/N`` at initialisation, so a routed rank starts ``N`` times weaker than a shared one
    and learns ``N^2`` times slower in output space. With ``renormalize`` and ``gate_scale =
    top_k`` a kept expert starts out weighing like a shared rank.
    """
    gates, indices = torch.topk(probs, top_k, dim=-1)
    if renormalize:
        gates = gates / gates.sum(dim=-1, keepdim=True)
    if gate_scale != 1.0:
        gates = gates * gate_scale
    return gates, indices


@dataclass(frozen=True)
class Routing:
    """One routing decision for a batch of images.

    Slots ``0 .. num_real-1`` are real rank-1 experts; slots ``num_real .. N-1`` are zero experts.
    """

    probs: Tensor
    """(B, N) softmax over all routed slots (keeps its graph: the balance loss needs it)."""
    indices: Tensor
    """(B, k) the kept slots, largest probability first."""
    gates: Tensor
    """(B, k) gate value of each kept slot (the softmax value, renormalised and scaled if
    configured, see :func:`keep_top_k`)."""
    num_real: int
    """Number of real experts among the N slots."""

    @property
    def zero_mask(self) -> Tensor:
        """(B, k) True where the kept slot is a zero expert."""
        return self.indices >= self.num_real

    @property
    def num_zero_active(self) -> Tensor:
        """(B,) how many of each image's kept slots are zero experts."""
        return self.zero_mask.sum(dim=1)

    def real_gates(self) -> Tensor:
        """(B, num_real) dense gates of the real experts; zero where an expert is not kept."""
        batch = self.indices.shape[0]
        dense = self.gates.new_zeros(batch, self.probs.shape[1])
        dense = dense.scatter(1, self.indices, self.gates)
        return dense[:, : self.num_real]


class Router(nn.Module):
    """``p = softmax(s W_g)`` over the routed slots, keep the top-k (the paper's eq. 9).

    The gating matrix ``W_g`` is stored as ``gate.weight`` with shape (N, score_dim). Softmax and
    top-k run in float32 whatever the parameter dtype, so routing does not flip under fp16.
    With ``bias`` the logits get a learnable per-slot offset, ``softmax(s W_g + b)``, starting at
    zero: without it, score vectors that point the same way (mild and severe images whose
    dimensions all rise together) can only scale the logits, never reorder a slot past its
    threshold. ``score_transform`` picks what ``W_g`` multiplies (:func:`transform_scores`):
    ``raw`` is eq. 9 exactly; ``centred`` and ``log-odds`` let severity reorder slots without a
    bias.
    """

    def __init__(
        self,
        score_dim: int,
        num_slots: int,
        num_real: int,
        top_k: int,
        renormalize: bool = False,
        bias: bool = False,
        score_transform: ScoreTransform = "raw",
        gate_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_slots:
            raise ValueError("top_k must lie in [1, num_slots]")
        if not gate_scale > 0:
            raise ValueError("gate_scale must be > 0")
        if score_transform not in SCORE_TRANSFORMS:
            raise ValueError(
                f"unknown score transform {score_transform!r}; choose one of {SCORE_TRANSFORMS}"
            )
        self.score_transform = score_transform
        self.gate = nn.Linear(score_dim, num_slots, bias=bias)
        nn.init.kaiming_uniform_(self.gate.weight, a=math.sqrt(5))
        if bias:
            nn.init.zeros_(self.gate.bias)
        self.num_real = num_real
        self.top_k = top_k
        self.renormalize = renormalize
        self.gate_scale = gate_scale

    def forward(self, scores: Tensor) -> Routing:
        """Route a (B, score_dim) batch of degradation scores."""
        if scores.ndim != 2 or scores.shape[1] != self.gate.in_features:
            raise ValueError(
                f"scores must have shape (B, {self.gate.in_features}), got {tuple(scores.shape)}"
            )
        logits = transform_scores(scores, self.score_transform) @ self.gate.weight.float().t()
        if self.gate.bias is not None:
            logits = logits + self.gate.bias.float()
        probs = torch.softmax(logits, dim=-1)
        gates, indices = keep_top_k(probs, self.top_k, self.renormalize, self.gate_scale)
        return Routing(probs=probs, indices=indices, gates=gates, num_real=self.num_real)
