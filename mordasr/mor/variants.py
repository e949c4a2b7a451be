"""The adapter variants of the paper's Table 2, each derived from one MoR layout.

Every variant starts from the same template (targets, shared ranks, routed slots, top-k), so the
rows of an ablation differ only in what the table says:

- ``mor`` — MoR-full: the template as is, degradation-aware balance loss.
- ``mor-standard-balance`` — MoR-v2: the same layers, the standard balance loss (eq. 13), which
  treats zero experts like real ones.
- ``mor-no-zero`` — MoR-v1: every routed slot a real expert (``num_zero = 0``); the routed total
  stays fixed, as in Table 9's first row.
- ``lora-moe`` — LoRA+MoE: no zero experts, and the routed ranks grouped into whole rank-r LoRA
  experts (``expert_rank = r``; slots and top-k divided by r), so the total and the active rank
  per image are the template's.
- ``lora`` — vanilla LoRA with the template's trainable ranks (shared + real routed), no router:
  the same adapter parameters as the MoR minus its routers.
- ``lora-16`` — vanilla LoRA with the template's active ranks (shared + top-k: the most real
  ranks one image gets; 16 for the paper's 8 shared + top-8), no router: the control of equal
  active ranks rather than equal parameters (issue 25). The name is the paper layout's count.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal, get_args

from mordasr.mor.config import MoRConfig

Variant = Literal["mor", "mor-standard-balance", "mor-no-zero", "lora-moe", "lora", "lora-16"]
VARIANTS: tuple[str, ...] = get_args(Variant)


def variant_config(template: MoRConfig, variant: Variant, expert_rank: int = 4) -> MoRConfig:
    """The adapter layout of ``variant`` built from ``template`` (see the module docstring).

    ``expert_rank`` is the rank of every LoRA expert of ``lora-moe`` (ignored otherwise); it must
    divide the template's routed slots and top-k.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {list(VARIANTS)}")
    if variant in ("mor", "mor-standard-balance"):
        return template
    if template.layer_overrides:
        raise ValueError(f"variant {variant!r} needs a uniform layout (no layer_overrides)")
    if template.expert_rank != 1:
        raise ValueError("variants start from a MoR template with rank-1 experts")
    if variant == "mor-no-zero":
        return replace(template, num_zero=0)
    if variant == "lora-moe":
        return _lora_moe(template, expert_rank)
    extra = template.top_k if variant == "lora-16" else template.num_real
    return replace(
        template,
        num_shared=template.num_shared + extra,
        num_routed=0,
        num_zero=0,
        top_k=0,
    )


def degradation_aware_balance(variant: Variant) -> bool:
    """Whether ``variant`` trains with the degradation-aware balance loss (eq. 16-17).

    Only MoR-v2 uses the standard loss. Without zero experts both losses are the same, and plain
    LoRA has no router to balance.
    """
    return variant != "mor-standard-balance"


def _lora_moe(template: MoRConfig, expert_rank: int) -> MoRConfig:
    if expert_rank < 1 or template.num_routed % expert_rank or template.top_k % expert_rank:
        raise ValueError(
            f"expert_rank {expert_rank} must divide num_routed ({template.num_routed}) "
            f"and top_k ({template.top_k})"
        )
    return replace(
        template,
        num_routed=template.num_routed // expert_rank,
        num_zero=0,
        top_k=template.top_k // expert_rank,
        expert_rank=expert_rank,
    )
