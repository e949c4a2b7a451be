"""Paired statistics over seeds and images: hierarchical bootstrap, Holm, verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from mordasr.eval.stats import (
    POOLED,
    compare_groups,
    hierarchical_bootstrap,
    holm,
    verdict,
)

RESAMPLES = 4000


def _images(n: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.001, 0.004, n)


def test_identical_seeds_reduce_to_the_image_bootstrap_of_one_row() -> None:
    row = _images()
    one = hierarchical_bootstrap(row, RESAMPLES)
    three = hierarchical_bootstrap(np.stack([row] * 3), RESAMPLES)
    assert (three.ci_low, three.ci_high) == pytest.approx((one.ci_low, one.ci_high), rel=1e-12)
    assert three.mean == pytest.approx(one.mean)


def test_one_seed_matches_a_plain_percentile_bootstrap_of_the_images() -> None:
    row = _images(60)
    rng = np.random.default_rng(1)
    means = row[rng.integers(0, len(row), (RESAMPLES, len(row)))].mean(axis=1)
    plain = np.percentile(means, [2.5, 97.5])
    est = hierarchical_bootstrap(row, RESAMPLES)
    width = plain[1] - plain[0]
    assert est.ci_low == pytest.approx(plain[0], abs=0.1 * width)
    assert est.ci_high == pytest.approx(plain[1], abs=0.1 * width)


def test_seed_spread_widens_the_interval_beyond_averaging_over_seeds_first() -> None:
    offsets = np.array([-0.01, 0.0, 0.012, 0.004, -0.006])[:, np.newaxis]
    grid = _images() + offsets
    hierarchical = hierarchical_bootstrap(grid, RESAMPLES)
    seeds_averaged = hierarchical_bootstrap(grid.mean(axis=0), RESAMPLES)
    assert hierarchical.mean == pytest.approx(seeds_averaged.mean)
    width = hierarchical.ci_high - hierarchical.ci_low
    assert width > 2 * (seeds_averaged.ci_high - seeds_averaged.ci_low)


def test_the_interval_holds_the_mean_and_is_seeded() -> None:
    grid = _images().reshape(4, 10)
    a = hierarchical_bootstrap(grid, RESAMPLES, seed=3)
    assert a == hierarchical_bootstrap(grid, RESAMPLES, seed=3)
    assert a != hierarchical_bootstrap(grid, RESAMPLES, seed=4)
    assert a.ci_low < a.mean < a.ci_high
    assert (a.seeds, a.images) == (4, 10)


def test_a_clear_difference_has_a_small_p_value_and_none_a_large_one() -> None:
    clear = hierarchical_bootstrap(np.full((3, 20), 0.01) + _images(20) / 10, RESAMPLES)
    assert clear.p_value == pytest.approx(2 / (RESAMPLES + 1))
    centred = _images(200)
    null = hierarchical_bootstrap(centred - centred.mean(), RESAMPLES)
    assert null.p_value > 0.5


def test_malformed_differences_are_refused() -> None:
    with pytest.raises(ValueError, match="seeds, images"):
        hierarchical_bootstrap(np.zeros((2, 0)))
    with pytest.raises(ValueError, match="finite"):
        hierarchical_bootstrap([0.1, np.nan])


def test_holm_on_known_p_values() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


@pytest.mark.parametrize(
    ("low", "high", "p", "expected"),
    [
        (-0.001, 0.0015, None, "equivalent"),
        (0.0005, 0.0015, 0.001, "equivalent"),
        (-0.006, -0.003, None, "better"),
        (0.001, 0.004, 0.01, "worse"),
        (0.001, 0.004, 0.2, "inconclusive"),
        (-0.003, 0.001, None, "inconclusive"),
    ],
)
def test_verdicts_with_a_margin_of_0_002(
    low: float, high: float, p: float | None, expected: str
) -> None:
    assert verdict(low, high, 0.002, p_adjusted=p) == expected


def test_higher_is_better_flips_the_direction() -> None:
    assert verdict(0.1, 0.3, 0.05, lower_is_better=False) == "better"


def test_compare_groups_adjusts_the_groups_and_pools_their_images() -> None:
    better = -0.01 + _images(20, seed=1) / 10
    tie = (_images(20, seed=2) - _images(20, seed=2).mean()) / 4
    result = compare_groups(
        {"blur": np.stack([better] * 2), "noise": np.stack([tie] * 2)}, 0.002, RESAMPLES
    )
    assert set(result) == {"blur", "noise", POOLED}
    assert result["blur"].verdict == "better"
    assert result["noise"].verdict == "equivalent"
    raw = [result[g].estimate.p_value for g in ("blur", "noise")]
    assert [result[g].p_adjusted for g in ("blur", "noise")] == pytest.approx(holm(raw))
    assert result[POOLED].estimate.images == 40
    assert result[POOLED].estimate.mean == pytest.approx(np.concatenate([better, tie]).mean())


def test_compare_groups_needs_the_same_seeds_in_every_group() -> None:
    with pytest.raises(ValueError, match="same number of seeds"):
        compare_groups({"a": np.zeros((2, 5)), "b": np.zeros((3, 5))}, 0.002)
