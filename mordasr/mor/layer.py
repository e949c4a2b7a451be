"""MoR layers: a frozen ``nn.Linear``/``nn.Conv2d`` plus shared and routed rank-1 experts.

Every rank of the adapter is an expert: row ``i`` of ``A`` and column ``i`` of ``B`` form expert
``i``. The shared experts are always on; the routed ones are weighted by the router's gates; the
zero experts exist only as router slots, so they have no parameters and are never computed.
With ``expert_rank = r > 1`` (LoRA-MoE) routed slot ``i`` owns rows ``i r .. i r + r - 1`` of the
routed factors and its gate multiplies all of them.

A layer runs the :class:`~mordasr.mor.plan.LayerPlan` it is given by
``RoutingPlan.applied`` (:mod:`mordasr.mor.plan`). Because routing depends on the image only,
image ``b`` has one fixed update ``delta_b = scaling * B diag(c_b) A`` (``c_b`` holds 1 for
shared ranks and the gate for routed ranks), applied in one of two ways:

- folded (inference): the plan carries ``W0 + delta_b``, made once per image by :meth:`fold`;
  the layer costs what the frozen layer costs;
- from the routing (training, or a plan made without ``fold``): ``W0 x + scaling * B (c_b *
  (A x))`` (low-rank, ``tokens * r * (d_in + d_out)``) or ``(W0 + delta_b) x`` (merged,
  ``r * d_in * d_out`` to build), whichever is cheaper for the call (``compute_path="auto"``).
  Only the ranks that some image keeps are gathered: zero and unused experts cost nothing.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mordasr.mor.config import MoRConfig
from mordasr.mor.router import Router, Routing

if TYPE_CHECKING:
    from mordasr.mor.plan import LayerPlan, RoutingPlan

ComputePath = Literal["lowrank", "merged"]


def choose_path(
    *,
    tokens: int,
    rank: int,
    lowrank_cost_per_token: int,
    weight_numel: int,
    input_batch: int,
    update_batch: int,
    training: bool,
) -> ComputePath:
    """Pick the cheaper compute path by counting multiply-adds beyond the frozen layer's own.

    ``update_batch`` is 1 when every image shares the same update (plain LoRA, one score row).
    In training the merged path also pays a full weight gradient per image, while the low-rank
    path pays about twice its forward cost again in the backward pass.
    """
    lowrank = input_batch * tokens * lowrank_cost_per_token
    merged = update_batch * rank * weight_numel
    if training:
        lowrank *= 3
        merged = 3 * merged + input_batch * tokens * weight_numel
    return "merged" if merged < lowrank else "lowrank"


def _used_experts(routing: Routing) -> tuple[Tensor, Tensor]:
    """Real experts kept for some image of the batch and their (B, used) gates.

    Zero experts are dropped here, so they are never gathered or computed. With one image the
    kept slots are already distinct, so no union is needed.
    """
    if routing.indices.shape[0] == 1:
        keep = routing.indices[0] < routing.num_real
        return routing.indices[0][keep], routing.gates[:, keep]
    real = routing.indices[routing.indices < routing.num_real]
    used = torch.unique(real)
    return used, routing.real_gates()[:, used]


def _slot_ranks(slots: Tensor, gates: Tensor, expert_rank: int) -> tuple[Tensor, Tensor]:
    """Rows of ``routed_A`` owned by ``slots`` and their gates (..., len(slots) * expert_rank).

    Slot ``i`` owns rows ``i * r .. i * r + r - 1``; its gate is repeated over its ``r`` ranks,
    so a whole-LoRA expert is switched and weighted as one.
    """
    if expert_rank == 1:
        return slots, gates
    offsets = torch.arange(expert_rank, device=slots.device)
    rows = (slots.unsqueeze(-1) * expert_rank + offsets).flatten()
    return rows, gates.repeat_interleave(expert_rank, dim=-1)


def _check_batch(rows: int, x: Tensor) -> None:
    """Refuse an input batch that the plan's ``rows`` score rows do not cover (1 row covers any
    batch): the folded path would otherwise drop or mismatch images silently."""
    if rows not in (1, x.shape[0]):
        raise ValueError(f"scores hold {rows} images but the input batch is {x.shape[0]}")


class MoRLayer(nn.Module):
    """Shared logic of :class:`MoRLinear` and :class:`MoRConv2d`; the base layer stays frozen."""

    base_layer: nn.Linear | nn.Conv2d

    def __init__(self, base_layer: nn.Linear | nn.Conv2d, config: MoRConfig) -> None:
        super().__init__()
        self.base_layer = base_layer
        base_layer.requires_grad_(False)
        self.config = config
        self.source_config = config
        self.scaling = config.scaling
        self.strength = 1.0
        """Multiplies the adapter delta (see :meth:`set_strength`)."""
        weight = base_layer.weight
        self.shared_A, self.shared_B = self._new_factors(config.num_shared, weight)
        self.routed_A, self.routed_B = self._new_factors(config.num_real_ranks, weight)
        self.router: Router | None = None
        if config.num_routed:
            self.router = Router(
                config.score_dim,
                config.num_routed,
                config.num_real,
                config.top_k,
                renormalize=config.renormalize_gates,
                bias=config.router_bias,
                score_transform=config.router_scores,
                gate_scale=config.gate_scale,
            ).to(device=weight.device, dtype=weight.dtype)
        self.shared_merged = False
        self.plan: LayerPlan | None = None
        """What this layer runs now; set only by ``RoutingPlan.applied``."""
        self.routing_plan: RoutingPlan | None = None
        """The whole plan :attr:`plan` belongs to (for model-level readers)."""

    @property
    def delta_scaling(self) -> float:
        """The factor of the adapter delta: ``scaling * strength``."""
        return self.scaling * self.strength

    def set_strength(self, strength: float) -> None:
        """Scale the adapter delta by ``strength``: 0 gives the frozen layer exactly, 1 the
        trained adapter; values in between (or beyond) move along the delta linearly. Plans
        folded before keep the strength they were folded with.

        Refused while the shared ranks are merged into the frozen weight (they could not be
        scaled there)."""
        if self.shared_merged and strength != 1.0:
            raise RuntimeError("unmerge the shared ranks before setting a strength other than 1")
        self.strength = float(strength)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_layer":
                raise
            return getattr(self.base_layer, name)

    # Subclass hooks -------------------------------------------------------------------------
    def _factor_shapes(self, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        raise NotImplementedError

    def _delta(self, a: Tensor, b: Tensor, coeff: Tensor) -> Tensor:
        """(U, *weight.shape) weight updates, one per row of ``coeff`` (U, r); unscaled."""
        raise NotImplementedError

    def _lowrank(self, x: Tensor, a: Tensor, b: Tensor, coeff: Tensor) -> Tensor:
        """``B (coeff * (A x))`` for ``coeff`` of shape (1 or batch, r); unscaled."""
        raise NotImplementedError

    def _with_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        """The base layer's operation with ``weight`` of shape (1 or batch, *weight.shape)."""
        raise NotImplementedError

    def _tokens_and_cost(self, x: Tensor, rank: int) -> tuple[int, int]:
        """Positions per image and the low-rank path's multiply-adds per position."""
        raise NotImplementedError

    # Parameters --------------------------------------------------------------------------------
    def _new_factors(self, rank: int, weight: Tensor) -> tuple[nn.Parameter, nn.Parameter]:
        a_shape, b_shape = self._factor_shapes(rank)
        a = torch.empty(a_shape, device=weight.device, dtype=weight.dtype)
        if rank:
            nn.init.kaiming_uniform_(a.view(rank, -1), a=math.sqrt(5))
        b = torch.zeros(b_shape, device=weight.device, dtype=weight.dtype)
        return nn.Parameter(a), nn.Parameter(b)

    @property
    def adapter_parameters(self) -> list[nn.Parameter]:
        """Every trainable tensor of this adapter (factors and router)."""
        params = [self.shared_A, self.shared_B, self.routed_A, self.routed_B]
        if self.router is not None:
            params.extend(self.router.parameters())
        return params

    # The two paths -------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Frozen layer plus the routed and shared experts of each image (eq. 10)."""
        if self.strength == 0.0:
            return self._base(x)
        plan = self.plan
        if plan is not None and plan.weight is not None:
            _check_batch(plan.weight.shape[0], x)
            return self._with_weight(x, plan.weight.to(x.dtype))
        if self.router is not None and plan is None:
            raise RuntimeError(
                "this MoR layer routes by degradation scores: run the model inside "
                "`with mordasr.route(model, scores).applied(model):`"
            )
        a, b, coeff = self._active_factors(None if plan is None else plan.routing, x.dtype)
        rank = coeff.shape[1] if coeff.numel() else 0
        if rank == 0:
            return self._base(x)
        _check_batch(coeff.shape[0], x)
        if self._path(x, rank, coeff.shape[0]) == "lowrank":
            return self._base(x) + self.delta_scaling * self._lowrank(x, a, b, coeff)
        delta = self._delta(a, b, coeff)
        weight = self.base_layer.weight.to(x.dtype)
        return self._with_weight(x, weight + self.delta_scaling * delta)

    def _base(self, x: Tensor) -> Tensor:
        """The frozen layer alone, its weight cast to the input's dtype (a MoR layer stays
        float32 in a network run in lower precision: :func:`~mordasr.mor.model.cast_network`)."""
        if self.base_layer.weight.dtype == x.dtype:
            return self.base_layer(x)
        return self._with_weight(x, self.base_layer.weight[None].to(x.dtype))

    def _active_factors(
        self, routing: Routing | None, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Factors of the ranks in use and their per-image coefficients (U, r), U in {1, B}."""
        parts_a: list[Tensor] = []
        parts_b: list[Tensor] = []
        parts_c: list[Tensor] = []
        if self.config.num_shared and not self.shared_merged:
            parts_a.append(self.shared_A)
            parts_b.append(self.shared_B)
            parts_c.append(self.shared_A.new_ones(1, self.config.num_shared, dtype=dtype))
        if routing is not None:
            used, gates = _slot_ranks(*_used_experts(routing), self.config.expert_rank)
            if used.numel():
                parts_a.append(self.routed_A[used])
                parts_b.append(self.routed_B[:, used])
                parts_c.append(gates.to(dtype))
        if not parts_a:
            empty = self.shared_A.new_zeros(0)
            return empty, empty, empty
        batch = max(c.shape[0] for c in parts_c)
        coeff = torch.cat([c.expand(batch, -1) for c in parts_c], dim=1)
        return torch.cat(parts_a, dim=0).to(dtype), torch.cat(parts_b, dim=1).to(dtype), coeff

    @torch.no_grad()
    def fold(self, routing: Routing | None) -> Tensor:
        """(U, *weight.shape) in float32: the frozen weight plus this layer's update for each of
        the U rows of ``routing`` (U = 1 without a router), scaled by the strength. Zero experts
        and experts no image keeps are never gathered."""
        weight = self.base_layer.weight.float()
        if self.router is not None and routing is None:
            raise ValueError("a routed MoR layer folds for a routing decision")
        a, b, coeff = self._active_factors(routing, torch.float32)
        if not coeff.numel() or self.strength == 0.0:
            return weight[None].clone()
        return weight + self.delta_scaling * self._delta(a.float(), b.float(), coeff)

    def _path(self, x: Tensor, rank: int, update_batch: int) -> ComputePath:
        if self.config.compute_path != "auto":
            return self.config.compute_path
        tokens, per_token = self._tokens_and_cost(x, rank)
        return choose_path(
            tokens=tokens,
            rank=rank,
            lowrank_cost_per_token=per_token,
            weight_numel=self.base_layer.weight.numel(),
            input_batch=x.shape[0],
            update_batch=update_batch,
            training=torch.is_grad_enabled()
            and any(p.requires_grad for p in self.adapter_parameters),
        )

    # Shared-expert merging -------------------------------------------------------------------
    def _shared_delta(self) -> Tensor:
        """``scaling * B_s A_s`` in float32, shaped like the base weight."""
        ones = self.shared_A.new_ones(1, self.config.num_shared, dtype=torch.float32)
        delta = self._delta(self.shared_A.float(), self.shared_B.float(), ones)[0]
        return self.scaling * delta.view(self.base_layer.weight.shape)

    @torch.no_grad()
    def _write_weight(self, value: Tensor, action: str) -> None:
        """Round the float32 ``value`` once into the base weight, refusing non-finite values
        (peft's ``safe_merge``): the weight is left as it was."""
        if not torch.isfinite(value).all():
            raise ValueError(
                f"{action} the shared ranks gives non-finite weights (NaN or inf in the adapter, "
                "or an overflow of the weight dtype); the weight was left unchanged"
            )
        self.base_layer.weight.copy_(value)

    @torch.no_grad()
    def merge_shared(self) -> None:
        """Fold the always-on ranks into the frozen weight, computed in float32 and rounded
        once to the weight's dtype; a non-finite result is refused (ValueError)."""
        if self.strength != 1.0:
            raise RuntimeError("shared ranks are merged at strength 1 only; set_strength(1) first")
        if self.shared_merged or not self.config.num_shared:
            self.shared_merged = True
            return
        merged = self.base_layer.weight.float() + self._shared_delta()
        self._write_weight(merged.to(self.base_layer.weight.dtype).float(), "merging")
        self.shared_merged = True

    @torch.no_grad()
    def unmerge_shared(self) -> None:
        """Undo :meth:`merge_shared` (exact in float32; within one rounding in lower precision)."""
        if not self.shared_merged:
            return
        if self.config.num_shared:
            restored = self.base_layer.weight.float() - self._shared_delta()
            self._write_weight(restored, "unmerging")
        self.shared_merged = False

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"shared={c.num_shared}, routed={c.num_routed} (zero={c.num_zero}), top_k={c.top_k}, "
            f"expert_rank={c.expert_rank}, "
            f"scaling={self.scaling:g}, strength={self.strength:g}, path={c.compute_path}"
        )


class MoRLinear(MoRLayer):
    """MoR adapter around an ``nn.Linear``: A is (r, d_in), B is (d_out, r)."""

    base_layer: nn.Linear

    def __init__(self, base_layer: nn.Linear, config: MoRConfig) -> None:
        super().__init__(base_layer, config)

    def _factor_shapes(self, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        base = self.base_layer
        return (rank, base.in_features), (base.out_features, rank)

    def _delta(self, a: Tensor, b: Tensor, coeff: Tensor) -> Tensor:
        return (b.unsqueeze(0) * coeff.unsqueeze(1)) @ a

    def _lowrank(self, x: Tensor, a: Tensor, b: Tensor, coeff: Tensor) -> Tensor:
        h = F.linear(x, a)
        if coeff.shape[0] == 1:
            h = h * coeff[0]
        else:
            h = h * coeff.view(coeff.shape[0], *([1] * (x.ndim - 2)), coeff.shape[1])
        return F.linear(h, b)

    def _with_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        bias = _bias(self.base_layer, x)
        if weight.shape[0] == 1:
            return F.linear(x, weight[0], bias)
        return torch.cat([F.linear(x[i : i + 1], w, bias) for i, w in enumerate(weight)])

    def _tokens_and_cost(self, x: Tensor, rank: int) -> tuple[int, int]:
        tokens = x.numel() // (x.shape[0] * x.shape[-1]) if x.ndim > 1 else 1
        base = self.base_layer
        return tokens, rank * (base.in_features + base.out_features)


class MoRConv2d(MoRLayer):
    """MoR adapter around an ``nn.Conv2d`` (groups=1, zero padding).

    ``kxk_1x1``: A is the k x k convolution (in -> r) with the base stride/padding/dilation and B
    a 1x1 convolution (r -> out). ``1x1_kxk`` (AdaptSR): A is 1x1 (in -> r) and B carries the
    kernel (r -> out). Both compose to a single k x k update, so merging is exact.
    """

    base_layer: nn.Conv2d

    def __init__(self, base_layer: nn.Conv2d, config: MoRConfig) -> None:
        if base_layer.groups != 1:
            raise ValueError("MoRConv2d supports groups=1 convolutions only")
        if base_layer.padding_mode != "zeros":
            raise ValueError("MoRConv2d supports padding_mode='zeros' only")
        if isinstance(base_layer.padding, str) and base_layer.padding != "valid":
            raise ValueError("MoRConv2d needs explicit numeric padding (or 'valid')")
        super().__init__(base_layer, config)

    @property
    def _kernel_in_a(self) -> bool:
        return self.config.conv_variant == "kxk_1x1"

    def _factor_shapes(self, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        base = self.base_layer
        kh, kw = base.kernel_size
        if self._kernel_in_a:
            return (rank, base.in_channels, kh, kw), (base.out_channels, rank)
        return (rank, base.in_channels), (base.out_channels, rank, kh, kw)

    def _delta(self, a: Tensor, b: Tensor, coeff: Tensor) -> Tensor:
        base = self.base_layer
        if self._kernel_in_a:
            scaled_b = b.unsqueeze(0) * coeff.unsqueeze(1)
            return (scaled_b @ a.flatten(1)).view(coeff.shape[0], *base.weight.shape)
        return torch.einsum("orkl,ur,ri->uoikl", b, coeff, a)

    def _lowrank(self, x: Tensor, a: Tensor, b: Tensor, coeff: Tensor) -> Tensor:
        base = self.base_layer
        gate = coeff[:, :, None, None]
        if self._kernel_in_a:
            h = F.conv2d(x, a, None, base.stride, base.padding, base.dilation)
            return F.conv2d(h * gate, b[:, :, None, None])
        h = F.conv2d(x, a[:, :, None, None])
        return F.conv2d(h * gate, b, None, base.stride, base.padding, base.dilation)

    def _with_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        base = self.base_layer
        bias = _bias(base, x)
        if weight.shape[0] == 1:
            return F.conv2d(x, weight[0], bias, base.stride, base.padding, base.dilation)
        return torch.cat(
            [
                F.conv2d(x[i : i + 1], w, bias, base.stride, base.padding, base.dilation)
                for i, w in enumerate(weight)
            ]
        )

    def _tokens_and_cost(self, x: Tensor, rank: int) -> tuple[int, int]:
        base = self.base_layer
        sh, sw = base.stride
        tokens = (x.shape[-2] // sh) * (x.shape[-1] // sw)
        kh, kw = base.kernel_size
        if self._kernel_in_a:
            per_token = rank * (base.in_channels * kh * kw + base.out_channels)
        else:
            per_token = rank * (base.in_channels * sh * sw + base.out_channels * kh * kw)
        return tokens, per_token


def _bias(layer: nn.Conv2d | nn.Linear, x: Tensor) -> Tensor | None:
    """The layer's bias in the input's dtype (None without one)."""
    bias = layer.bias
    return None if bias is None else bias.to(x.dtype)
