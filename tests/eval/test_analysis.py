"""Expert-activation analysis: routing without a forward pass, the tables, the severity claim."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from mor_helpers import randomise
from torch import Tensor, nn
from toy_nets import small_conv_net

from mordasr.eval import analysis
from mordasr.eval.analysis import SetRouting
from mordasr.mor import (
    LayerRouting,
    MoRConfig,
    inject_mor,
    mor_layers,
    route,
)


def routed_net(num_zero: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    config = MoRConfig(
        target_modules=["0", "2", "4"], num_shared=1, num_routed=8, num_zero=num_zero, top_k=4
    )
    return inject_mor(small_conv_net(), config)


def scores_from_brightness(brightness: Tensor) -> Tensor:
    """Seven scores that grow with brightness, each at its own rate (so dark and bright score
    vectors point in different directions, as mild and severe ones do)."""
    return torch.stack([brightness ** (d + 1) for d in range(7)], dim=1)


class BrightnessScored(nn.Module):
    """A MoR network whose stand-in estimator reads an image's severity from its brightness."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def estimate(self, lr: Tensor) -> Tensor:
        return scores_from_brightness(lr.mean(dim=(1, 2, 3)))


def train_routers_on_mild_and_severe(net: nn.Module, steps: int = 150) -> None:
    """Degradation-aware balance loss alone, half of every batch dark (mild), half bright."""
    routers = [layer.router.gate.weight for _, layer in mor_layers(net)]
    optimiser = torch.optim.Adam(routers, lr=0.05)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 8, 8, generator=gen)
    for _ in range(steps):
        mild = 0.05 + 0.15 * torch.rand(4, generator=gen)
        severe = 0.8 + 0.2 * torch.rand(4, generator=gen)
        plan = route(net, scores_from_brightness(torch.cat([mild, severe])))
        with plan.applied(net):
            net(x)
            loss = plan.balance_loss(alpha=1.0, degradation_aware=True)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def images(count: int = 6) -> list[tuple[str, Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(f"img{i}", torch.rand(1, 3, 16, 16, generator=gen)) for i in range(count)]


def mild(hr: Tensor, seed: int) -> Tensor:
    return 0.05 + 0.15 * hr


def severe(hr: Tensor, seed: int) -> Tensor:
    return 0.8 + 0.2 * hr


def hand_made_set(name: str, indices: dict[str, list[list[int]]], num_real: int = 3) -> SetRouting:
    layers = {}
    for layer, kept in indices.items():
        idx = torch.tensor(kept)
        layers[layer] = LayerRouting(
            indices=idx,
            gates=torch.full(idx.shape, 0.25),
            probs=torch.full((idx.shape[0], 5), 0.2),
            num_zero=(idx >= num_real).sum(dim=1),
            num_real=num_real,
        )
    count = len(next(iter(indices.values())))
    return SetRouting(
        name,
        [f"img{i}" for i in range(count)],
        torch.zeros(count, 7),
        torch.linspace(0, 1, count),
        layers,
    )


def test_routing_scores_matches_what_every_router_decides_on_its_own() -> None:
    net = routed_net()
    scores = torch.rand(3, 7, generator=torch.Generator().manual_seed(2))
    direct = analysis.route_scores(net, scores)
    routed = {name: layer for name, layer in mor_layers(net) if layer.router is not None}
    assert direct.keys() == routed.keys()
    for name, layer in routed.items():
        decision = layer.router(scores)
        assert torch.equal(direct[name].indices, decision.indices)
        assert torch.equal(direct[name].num_zero, decision.num_zero_active)


def test_a_model_without_routed_layers_cannot_be_analysed() -> None:
    lora = inject_mor(small_conv_net(), MoRConfig.lora(2, target_modules=["0", "2"]))
    with pytest.raises(ValueError, match="no routed MoR layers"):
        analysis.route_scores(lora, torch.rand(1, 7))


def test_degradation_aware_training_makes_severe_images_keep_more_real_experts() -> None:
    net = routed_net()
    train_routers_on_mild_and_severe(net)
    route = analysis.model_router(BrightnessScored(net))
    sets = [
        analysis.analyse_set(n, images(), fn, route) for n, fn in (("mild", mild), ("s", severe))
    ]
    comparison = analysis.compare_sets(*sets)
    assert comparison["severe_keeps_more"]
    assert comparison["images_severe_more"] == len(images())
    zero = analysis.zero_experts_per_layer(sets)
    assert all(row["mild"] > row["s"] for row in zero)


def test_expert_frequency_is_the_share_of_images_keeping_each_slot() -> None:
    s = hand_made_set("blur", {"conv": [[0, 1], [0, 3], [0, 4], [2, 1]]})
    rows = analysis.expert_frequency([s], "conv")
    assert [r["blur"] for r in rows] == [0.75, 0.5, 0.25, 0.25, 0.25]
    assert [r["kind"] for r in rows] == ["real", "real", "real", "zero", "zero"]


def test_real_experts_are_top_k_minus_zero_experts_averaged_over_layers() -> None:
    s = hand_made_set("x", {"a": [[0, 3], [0, 1]], "b": [[3, 4], [0, 4]]})
    assert s.real_experts().tolist() == [0.5, 1.5]
    rows = analysis.real_experts_vs_score([s])
    assert [(r["image"], r["real_experts"]) for r in rows] == [("img0", 0.5), ("img1", 1.5)]


def test_the_default_frequency_layer_is_the_one_whose_choices_vary() -> None:
    s = hand_made_set("x", {"fixed": [[0, 1], [0, 1], [0, 1]], "varied": [[0, 1], [2, 3], [1, 4]]})
    assert analysis.most_varied_layer([s]) == "varied"


def test_kept_overlap_is_the_jaccard_of_real_experts_averaged_over_images_and_layers() -> None:
    a = hand_made_set("a", {"x": [[0, 1], [0, 3]], "y": [[3, 4], [2, 1]]})
    b = hand_made_set("b", {"x": [[1, 2], [0, 4]], "y": [[4, 3], [1, 2]]})
    # x: {0,1} vs {1,2} -> 1/3; {0} vs {0} -> 1. y: nothing vs nothing -> 1; {1,2} vs {1,2} -> 1.
    assert analysis.kept_overlap(a, b) == pytest.approx((1 / 3 + 1 + 1 + 1) / 4)
    assert analysis.overlap_table([a, b])["b"]["a"] == analysis.kept_overlap(a, b)


def test_within_overlap_compares_every_pair_of_images_of_a_set() -> None:
    s = hand_made_set("s", {"x": [[0, 1], [0, 2], [0, 1]]})
    # {0,1}-{0,2}: 1/3, {0,1}-{0,1}: 1, {0,2}-{0,1}: 1/3
    assert analysis.within_overlap(s) == pytest.approx((1 / 3 + 1 + 1 / 3) / 3)
    assert analysis.overlap_table([s])["s"]["s"] == analysis.within_overlap(s)


def test_sets_of_different_images_are_not_compared() -> None:
    a = hand_made_set("a", {"conv": [[0, 1], [0, 1]]})
    b = hand_made_set("b", {"conv": [[0, 1], [0, 1], [0, 1]]})
    with pytest.raises(ValueError, match="same images"):
        analysis.compare_sets(a, b)


@pytest.mark.parametrize("kind", list(analysis.TYPE_DEGRADATIONS))
def test_single_factor_degradations_give_quarter_size_8_bit_images(kind: str) -> None:
    hr = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(3))
    lr = analysis.TYPE_DEGRADATIONS[kind](hr, 0)
    assert lr.shape == (2, 3, 8, 12)
    assert torch.equal(lr, (lr * 255).round() / 255)


def test_noise_only_images_are_reproducible_per_seed() -> None:
    hr = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    assert torch.equal(analysis.noise_only(hr, 5), analysis.noise_only(hr, 5))
    assert not torch.equal(analysis.noise_only(hr, 5), analysis.noise_only(hr, 6))


def test_score_cosine_is_one_when_severe_scores_are_mild_ones_scaled() -> None:
    a = hand_made_set("a", {"conv": [[0, 1], [0, 1]]})
    mild_scores = torch.rand(2, 7, generator=torch.Generator().manual_seed(4))
    a = replace(a, scores=mild_scores)
    b = replace(a, name="b", scores=3 * mild_scores)
    assert analysis.compare_sets(a, b)["score_cosine"] == pytest.approx(1.0)


def test_severity_correlation_is_positive_when_worse_images_keep_more_real_experts() -> None:
    s = hand_made_set("x", {"conv": [[3, 4], [0, 4], [0, 1]]})
    assert analysis.severity_correlation([s]) == pytest.approx(1.0)


class _Rerouted(BrightnessScored):
    """``BrightnessScored`` that upscales with given scores (here: returns the routed output)."""

    def forward(self, lr: Tensor, scores: Tensor | None = None) -> Tensor:
        plan = route(self.net, self.estimate(lr) if scores is None else scores)
        with plan.applied(self.net):
            return self.net(lr)


def _brightened(by: float) -> analysis.DegradeFn:
    return lambda hr, seed: (hr * by).clamp(0, 1)


def test_swap_change_is_zero_when_both_versions_route_alike_and_positive_otherwise() -> None:
    model = _Rerouted(randomise(routed_net()))
    images = [("a", torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2)))]
    same = analysis.swap_change(model, images, _brightened(0.3), _brightened(0.3))
    assert same == {"mean": 0.0, "p99": 0.0}
    other = analysis.swap_change(model, images, _brightened(0.3), _brightened(3.0))
    assert 0 < other["mean"] <= other["p99"]
