"""Balance losses on hand-computed cases, and the direction the degradation-aware one pushes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mordasr.mor import MoRConfig, inject_mor, load_balance_loss, route, severity_from_scores
from mordasr.mor.balance import calibrate_severity, dispatch_fraction

PROBS = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.4, 0.3, 0.2, 0.1]])


def test_standard_loss_with_argmax_routing_matches_the_paper_formula() -> None:
    # f = [1, 0, 0, 0], P = [0.55, 0.2, 0.15, 0.1] -> 0.5 * 4 * 0.55
    loss = load_balance_loss(PROBS, torch.tensor([[0], [0]]), num_real=4, alpha=0.5)
    assert loss.item() == pytest.approx(1.1)


def test_standard_loss_with_top_k_counts_every_kept_slot() -> None:
    # f = [2, 1, 1, 0] / 4 -> 4 * (0.5 * 0.55 + 0.25 * 0.2 + 0.25 * 0.15)
    loss = load_balance_loss(PROBS, torch.tensor([[0, 1], [0, 2]]), num_real=4)
    assert loss.item() == pytest.approx(1.45)


def test_dispatch_fraction_sums_to_one() -> None:
    f = dispatch_fraction(torch.tensor([[0, 1], [0, 2], [3, 0]]), num_slots=5)
    assert torch.allclose(f, torch.tensor([3, 1, 1, 1, 0]) / 6)


def test_a_uniform_router_scores_alpha() -> None:
    probs = torch.full((4, 8), 1 / 8)
    indices = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7]])
    loss = load_balance_loss(probs, indices, num_real=6, alpha=0.3)
    assert loss.item() == pytest.approx(0.3)


def test_any_imbalance_scores_more_than_a_uniform_router() -> None:
    probs = torch.softmax(torch.tensor([[3.0, 0, 0, 0]] * 4), -1)
    loss = load_balance_loss(probs, torch.tensor([[0]] * 4), num_real=4)
    assert loss.item() > 1.0


def test_degradation_aware_loss_weights_zero_experts_by_severity() -> None:
    # slots 2, 3 are zero experts; image 0 has s = 0, image 1 has s = 1; f = 1/4 each.
    # weighted P = [0.55, 0.2, (0 + 0.2) / 2, (0 + 0.1) / 2] -> 4 * 0.25 * 0.9
    loss = load_balance_loss(
        PROBS, torch.tensor([[0, 2], [1, 3]]), num_real=2, severity=torch.tensor([0.0, 1.0])
    )
    assert loss.item() == pytest.approx(0.9)


def test_degradation_aware_loss_at_full_severity_is_the_standard_loss() -> None:
    indices = torch.tensor([[0, 2], [1, 3]])
    standard = load_balance_loss(PROBS, indices, num_real=2, alpha=0.7)
    aware = load_balance_loss(PROBS, indices, num_real=2, alpha=0.7, severity=torch.ones(2))
    assert aware.item() == pytest.approx(standard.item())


def test_degradation_aware_loss_sends_mild_images_to_zero_experts_and_severe_ones_away() -> None:
    torch.manual_seed(0)
    num_slots, num_real, top_k = 8, 6, 2
    logits = (0.01 * torch.randn(2, num_slots)).requires_grad_()
    severity = torch.tensor([0.05, 0.95])
    optimizer = torch.optim.SGD([logits], lr=2.0)
    for _ in range(300):
        probs = torch.softmax(logits, -1)
        indices = torch.topk(probs, top_k).indices
        loss = load_balance_loss(probs, indices, num_real, severity=severity)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    kept = torch.topk(logits.detach(), top_k).indices
    zero_experts_kept = (kept >= num_real).sum(dim=1)
    assert zero_experts_kept[0] > zero_experts_kept[1]
    zero_mass = torch.softmax(logits.detach(), -1)[:, num_real:].sum(-1)
    assert zero_mass[0] > 0.5 > zero_mass[1]


def test_standard_loss_treats_mild_and_severe_images_alike() -> None:
    torch.manual_seed(0)
    logits = (0.01 * torch.randn(1, 8)).expand(2, -1).clone().requires_grad_()
    probs = torch.softmax(logits, -1)
    load_balance_loss(probs, torch.topk(probs, 2).indices, num_real=6).backward()
    assert torch.allclose(logits.grad[0], logits.grad[1])


@pytest.mark.parametrize(
    ("reduce", "expected"), [("mean", [0.4, 0.5]), ("overall", [0.1, 0.9]), ("max", [0.7, 0.9])]
)
def test_severity_reduces_the_score_vector(reduce: str, expected: list[float]) -> None:
    scores = torch.tensor([[0.1, 0.4, 0.7], [0.9, 0.3, 0.3]])
    assert torch.allclose(severity_from_scores(scores, reduce), torch.tensor(expected))


def test_severity_range_maps_its_band_onto_zero_to_one() -> None:
    severity = torch.tensor([0.2, 0.33, 0.41, 0.49, 0.8])
    calibrated = calibrate_severity(severity, (0.33, 0.49))
    torch.testing.assert_close(calibrated, torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def test_the_full_severity_range_leaves_severity_unchanged() -> None:
    severity = torch.tensor([0.2, 0.7])
    assert torch.equal(calibrate_severity(severity, (0.0, 1.0)), severity)


def test_the_balance_loss_uses_the_configured_severity_range() -> None:
    # every slot is kept (top_k = num_routed), so the zero experts' weights always count
    scores = torch.tensor([[0.40] * 7, [0.48] * 7])
    losses = {}
    for band in ((0.0, 1.0), (0.40, 0.48)):
        torch.manual_seed(0)
        config = MoRConfig(
            target_modules="0", num_shared=1, num_routed=4, num_zero=2, top_k=4, severity_range=band
        )
        plan = route(inject_mor(nn.Sequential(nn.Linear(4, 4)), config), scores)
        losses[band] = plan.balance_loss().item()
        probs = plan.layers["0"].routing.probs
        zero_mass = probs[:, 2:].sum(-1)
        weights = (0.40, 0.48) if band == (0.0, 1.0) else (0.0, 1.0)
        expected = 4 * 0.25 * (probs[:, :2].sum() + (zero_mass * torch.tensor(weights)).sum()) / 2
        assert losses[band] == pytest.approx(expected.item())
