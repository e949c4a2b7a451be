"""Router input options: raw scores (eq. 9), centred scores and log-odds scores."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mordasr.mor import MoRConfig, MoRLinear, Router, route, transform_scores

SMALL = {"num_shared": 2, "num_routed": 8, "num_zero": 2, "top_k": 3}


def _severe_and_mild(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A severe score vector and the same vector scaled down: only the severity differs."""
    severe = 0.6 + 0.35 * torch.rand(1, 7, generator=torch.Generator().manual_seed(seed))
    return severe, 0.3 * severe


def test_raw_scores_are_the_paper_eq9_exactly() -> None:
    router = Router(7, 8, 6, 3)
    scores = torch.rand(4, 7)
    expected = torch.softmax(scores @ router.gate.weight.t(), dim=-1)
    assert router.score_transform == "raw"
    assert torch.allclose(router(scores).probs, expected)


def test_raw_scores_keep_the_slot_order_when_only_the_severity_changes() -> None:
    for seed in range(20):
        torch.manual_seed(seed)
        router = Router(7, 8, 6, 3)
        severe, mild = _severe_and_mild(seed)
        assert torch.equal(router(severe).indices, router(mild).indices)


@pytest.mark.parametrize("kind", ["centred", "log-odds"])
def test_centred_and_log_odds_routers_reorder_experts_when_only_the_severity_changes(
    kind: str,
) -> None:
    reordered = 0
    for seed in range(20):
        torch.manual_seed(seed)
        router = Router(7, 8, 6, 3, score_transform=kind)
        severe, mild = _severe_and_mild(seed)
        reordered += not torch.equal(router(severe).indices, router(mild).indices)
    assert reordered == 20


def test_the_routed_recipe_router_reorders_experts_and_keeps_gates_summing_to_top_k() -> None:
    """configs/realesrgan_mor_routed.yaml: centred scores, a bias, renormalised gates x 8."""
    reordered = 0
    for seed in range(20):
        torch.manual_seed(seed)
        router = Router(
            7, 32, 28, 8, renormalize=True, bias=True, score_transform="centred", gate_scale=8
        )
        severe, mild = _severe_and_mild(seed)
        kept_severe, kept_mild = router(severe), router(mild)
        reordered += not torch.equal(kept_severe.indices, kept_mild.indices)
        assert kept_severe.gates.sum().item() == pytest.approx(8.0)
    assert reordered == 20


def test_the_transforms_change_sign_at_one_half() -> None:
    scores = torch.tensor([[0.1, 0.5, 0.9]])
    assert transform_scores(scores, "centred")[0].tolist() == pytest.approx([-0.4, 0.0, 0.4])
    log_odds = transform_scores(scores, "log-odds")
    assert log_odds[0, 1] == 0 and log_odds[0, 0] == pytest.approx(-log_odds[0, 2])
    assert torch.isfinite(transform_scores(torch.tensor([[0.0, 1.0]]), "log-odds")).all()


def test_config_switch_reaches_the_layer_router_and_the_batched_routing() -> None:
    layer = MoRLinear(nn.Linear(6, 6), MoRConfig(router_scores="log-odds", **SMALL))
    assert layer.router.score_transform == "log-odds"
    scores = torch.rand(3, 7)
    planned = route(layer, scores).layers[""].routing
    direct = layer.router(scores)
    assert torch.equal(planned.indices, direct.indices)
    torch.testing.assert_close(planned.probs, direct.probs)


def test_unknown_score_transform_is_rejected() -> None:
    with pytest.raises(ValueError, match="router_scores"):
        MoRConfig(router_scores="softplus", **SMALL)
