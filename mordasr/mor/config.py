"""Configuration of a Mixture-of-Ranks (MoR) adapter."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from mordasr.mor.router import SCORE_TRANSFORMS, ScoreTransform
from mordasr.schema import from_mapping

ConvVariant = Literal["kxk_1x1", "1x1_kxk"]
ComputePath = Literal["auto", "lowrank", "merged"]
SeverityReduce = Literal["mean", "overall", "max"]

DEFAULT_TARGETS: tuple[str, ...] = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
    "conv_shortcut",
    "conv_in",
    "conv_out",
)


@dataclass
class MoRConfig:
    """Where to put MoR adapters and how big they are.

    A MoR adapter on a frozen layer ``W0`` has ``num_shared`` rank-1 experts that are always on and
    ``num_routed`` routed slots, of which the last ``num_zero`` are parameter-free zero experts.
    A per-layer router maps the image's degradation scores (``score_dim`` values in [0, 1]) to a
    softmax over the routed slots and keeps the ``top_k`` largest. The layer computes
    ``W0 x + scaling * (sum_topk g_i B_i A_i x + sum_shared B_j A_j x)`` with
    ``scaling = alpha / rank`` and ``rank = num_shared + num_routed * expert_rank`` (the paper's
    "40 ranks").

    With ``num_routed == 0`` the adapter is a plain LoRA of rank ``num_shared`` (no router); use
    :meth:`lora` to build one, so LoRA and MoR are compared on the same code. With
    ``expert_rank > 1`` every routed slot is a whole rank-``expert_rank`` LoRA (a LoRA-MoE).
    """

    target_modules: list[str] | str = field(default_factory=lambda: list(DEFAULT_TARGETS))
    """Module names to adapt: a list matches a name exactly or as a dotted suffix
    (``"to_q"`` matches ``"down.0.attn.to_q"``); a string is a regular expression that must match
    the whole module name. Only ``nn.Linear`` and ``nn.Conv2d`` modules are adapted."""
    exclude_modules: list[str] = field(default_factory=list)
    """Names (exact or dotted suffix) never adapted, even when ``target_modules`` matches."""
    num_shared: int = 8
    """Always-active rank-1 experts per layer (paper: 8)."""
    num_routed: int = 32
    """Routed slots per layer, zero experts included (paper: 32)."""
    num_zero: int = 4
    """How many routed slots are zero experts: no parameters, no computation (paper: 4)."""
    top_k: int = 8
    """Routed slots kept per image (paper: 8)."""
    expert_rank: int = 1
    """Ranks per routed slot. 1 is MoR: every rank is its own expert. ``r > 1`` makes every real
    slot a rank-r LoRA whose r ranks share one gate: the "LoRA+MoE" baseline of the paper's
    Table 2, built on the same layers so both compute paths and merging work unchanged."""
    score_dim: int = 7
    """Length of the degradation score vector fed to the routers (paper: 7 quality dimensions)."""
    alpha: float | None = None
    """LoRA alpha; ``None`` means ``alpha = rank`` so that ``scaling = 1``."""
    router_bias: bool = False
    """Give every router a learnable per-slot bias, ``softmax(s W_g + b)`` (starts at 0). Off by
    default, as in the paper's eq. 9; an ablation for routers that barely separate mild from
    severe images (their score vectors point nearly the same way)."""
    router_scores: ScoreTransform = "raw"
    """What the gating matrix multiplies: ``raw`` scores (the paper's eq. 9, the default),
    ``centred`` (``s - 0.5``) or ``log-odds`` (``log(s / (1 - s))``). The last two change sign at
    0.5, so severity alone can reorder the slots of a bias-free router
    (:func:`mordasr.mor.router.transform_scores`)."""
    renormalize_gates: bool = False
    """Renormalise the kept gates to sum to 1. The paper's eq. 9 keeps the raw softmax values of
    the top-k slots (no renormalisation), which is the default."""
    gate_scale: float = 1.0
    """Multiplies the kept gates (after any renormalisation), like DeepSeek's routed scaling
    factor. 1 is the paper's eq. 9; with ``renormalize_gates`` and ``gate_scale = top_k`` a kept
    expert starts out weighing like a shared rank (:func:`mordasr.mor.router.keep_top_k`)."""
    conv_variant: ConvVariant = "kxk_1x1"
    """Convolution factorisation: ``"kxk_1x1"`` puts the kernel in A (in -> r, k x k) and a 1x1 B
    (r -> out), as peft does; ``"1x1_kxk"`` is AdaptSR's variant, 1x1 A and k x k B."""
    compute_path: ComputePath = "auto"
    """``"lowrank"`` computes ``B(g * (A x))``; ``"merged"`` folds each image's delta into the
    weight and runs one convolution/matmul; ``"auto"`` picks the cheaper per call."""
    severity_reduce: SeverityReduce = "mean"
    """How the degradation-aware balance loss reduces the score vector to one severity ``s``:
    the mean of all dimensions, the first ("overall quality") dimension, or the maximum."""
    severity_range: tuple[float, float] = (0.0, 1.0)
    """Severities the degradation-aware balance loss maps onto [0, 1]: ``(lo, hi)`` with ``lo``
    and below as clean and ``hi`` and above as worst
    (:func:`mordasr.mor.balance.calibrate_severity`). ``(0, 1)`` is the paper; a narrow band of
    training severities needs a narrower range."""
    layer_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-layer sizes, like peft's ``rank_pattern``: module name (exact, dotted suffix or a
    regular expression matching the whole name) -> fields to change for that layer, e.g.
    ``{"conv_hr": {"num_shared": 4, "num_routed": 16, "num_zero": 2, "top_k": 4}}``.
    The first matching entry wins. A rank allocator (AdaptSR) writes these."""

    def __post_init__(self) -> None:
        if self.num_shared < 0 or self.num_routed < 0:
            raise ValueError("num_shared and num_routed must be >= 0")
        if self.num_shared + self.num_routed == 0:
            raise ValueError("an adapter needs at least one rank")
        if not 0 <= self.num_zero <= self.num_routed:
            raise ValueError("num_zero must lie in [0, num_routed]")
        if self.num_routed and not 1 <= self.top_k <= self.num_routed:
            raise ValueError("top_k must lie in [1, num_routed]")
        if self.expert_rank < 1:
            raise ValueError("expert_rank must be >= 1")
        if self.score_dim < 1:
            raise ValueError("score_dim must be >= 1")
        if self.conv_variant not in ("kxk_1x1", "1x1_kxk"):
            raise ValueError(f"unknown conv_variant {self.conv_variant!r}")
        if self.compute_path not in ("auto", "lowrank", "merged"):
            raise ValueError(f"unknown compute_path {self.compute_path!r}")
        if self.router_scores not in SCORE_TRANSFORMS:
            raise ValueError(f"unknown router_scores {self.router_scores!r}")
        if self.severity_reduce not in ("mean", "overall", "max"):
            raise ValueError(f"unknown severity_reduce {self.severity_reduce!r}")
        if not self.gate_scale > 0:
            raise ValueError("gate_scale must be > 0")
        lo, hi = (float(v) for v in self.severity_range)
        self.severity_range = (lo, hi)
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError("severity_range must be (lo, hi) with 0 <= lo < hi <= 1")

    @classmethod
    def lora(cls, rank: int, **kwargs: Any) -> MoRConfig:
        """A plain LoRA of ``rank``: every rank shared, no router, no zero experts."""
        return cls(num_shared=rank, num_routed=0, num_zero=0, top_k=0, **kwargs)

    @property
    def rank(self) -> int:
        """Nominal rank of the adapter: shared ranks plus the ranks of all routed slots."""
        return self.num_shared + self.num_routed * self.expert_rank

    @property
    def num_real(self) -> int:
        """Routed slots that are real experts (not zero experts)."""
        return self.num_routed - self.num_zero

    @property
    def num_real_ranks(self) -> int:
        """Ranks owned by the real routed experts: the rows of ``routed_A``."""
        return self.num_real * self.expert_rank

    @property
    def is_lora(self) -> bool:
        """Whether this is a plain LoRA (no routed slots)."""
        return self.num_routed == 0

    @property
    def scaling(self) -> float:
        """Factor applied to every adapter rank: ``alpha / rank``."""
        alpha = float(self.rank) if self.alpha is None else self.alpha
        return alpha / self.rank

    def matches(self, name: str) -> bool:
        """Whether the module called ``name`` should be adapted."""
        if any(_name_matches(name, pattern) for pattern in self.exclude_modules):
            return False
        if isinstance(self.target_modules, str):
            return re.fullmatch(self.target_modules, name) is not None
        return any(_name_matches(name, pattern) for pattern in self.target_modules)

    def for_layer(self, name: str) -> MoRConfig:
        """The config of the layer called ``name``: this one with its override applied."""
        for pattern, changes in self.layer_overrides.items():
            if _name_matches(name, pattern) or re.fullmatch(pattern, name):
                forbidden = set(changes) & {"target_modules", "exclude_modules", "layer_overrides"}
                if forbidden:
                    raise ValueError(f"layer_overrides cannot change {sorted(forbidden)}")
                return replace(self, **changes, layer_overrides={})
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy of the fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MoRConfig:
        """Rebuild a config from :meth:`to_dict` output; an unknown key or a value of the wrong
        type is a one-line :class:`~mordasr.schema.SchemaError` (a ``ValueError``)."""
        return from_mapping(cls, data)


def _name_matches(name: str, pattern: str) -> bool:
    return name == pattern or name.endswith("." + pattern)
