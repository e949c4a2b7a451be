"""The mapping from degradation parameters to the learned estimator's training targets."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from mordasr.degrade import DegradationConfig, StageConfig, degrade, isotropic_gaussian_kernel
from mordasr.estimate import DIMENSIONS
from mordasr.estimate.training.labels import (
    Degradation,
    dimension_labels,
    factor_severities,
    kernel_spread,
    pipeline_degradation,
)

_INERT_STAGE = StageConfig(
    blur_prob=0.0,
    resize_prob=(0.0, 0.0, 1.0),
    noise_range=(0.0, 0.0),
    poisson_scale_range=(0.0, 0.0),
    jpeg_range=(100.0, 100.0),
)
_INERT = DegradationConfig(
    stage1=_INERT_STAGE,
    stage2=_INERT_STAGE,
    final_sinc_prob=0.0,
    gt_usm=False,
    degrade_usm=False,
)


def _label(name: str, degradation: Degradation) -> float:
    return float(dimension_labels(degradation)[DIMENSIONS.index(name)])


def test_clean_image_has_zero_targets():
    assert torch.equal(dimension_labels(Degradation()), torch.zeros(len(DIMENSIONS)))


@pytest.mark.parametrize(
    ("field", "values", "dimension"),
    [
        ("blur_sigma", (0.5, 1.0, 2.0, 4.0), "blurriness"),
        ("noise_sigma", (2.0, 5.0, 15.0, 40.0), "noise"),
        ("jpeg_quality", (90.0, 70.0, 40.0, 10.0), "details"),
        ("downscale", (1.2, 2.0, 3.0, 6.0), "resolution"),
    ],
)
def test_each_factor_raises_its_dimension_and_overall_quality(field, values, dimension):
    targets = [_label(dimension, Degradation(**{field: v})) for v in values]
    overall = [_label("overall_quality", Degradation(**{field: v})) for v in values]
    assert targets == sorted(targets) and len(set(targets)) == len(targets)
    assert overall == sorted(overall) and overall[0] > 0


def test_noise_does_not_count_as_blur_or_low_resolution():
    labels = dimension_labels(Degradation(noise_sigma=30.0))
    assert labels[DIMENSIONS.index("blurriness")] == 0
    assert labels[DIMENSIONS.index("resolution")] == 0


def test_severities_saturate_towards_one_for_extreme_degradations():
    extreme = Degradation(blur_sigma=50.0, noise_sigma=255.0, jpeg_quality=1.0, downscale=64.0)
    assert all(0.95 < s <= 1.0 for s in factor_severities(extreme))


def test_kernel_spread_of_a_gaussian_is_its_sigma_and_noise_gain():
    sigma, gain = kernel_spread(isotropic_gaussian_kernel(21, 2.0)[0])
    assert sigma == pytest.approx(2.0, rel=1e-4)
    assert gain == pytest.approx(1 / (2 * math.sqrt(math.pi) * 2.0), rel=1e-3)


def test_pipeline_with_every_stage_disabled_summarises_as_clean():
    params = degrade(torch.rand(1, 3, 64, 64), _INERT, scale=4, seed=0).params[0]
    summary = pipeline_degradation(params)
    assert summary.blur_sigma == 0
    assert summary.noise_sigma == 0
    assert summary.jpeg_quality == 100
    assert summary.downscale == 1


def test_pipeline_blur_is_measured_in_output_pixels():
    blur = replace(
        _INERT_STAGE, blur_prob=1.0, kernel_list=("iso",), kernel_prob=(1.0,), sinc_prob=0.0
    )
    config = replace(_INERT, stage1=replace(blur, blur_sigma=(2.0, 2.0)))
    params = degrade(torch.rand(1, 3, 64, 64), config, scale=4, seed=0).params[0]
    size = params["stage1"]["blur"]["kernel_size"]
    expected = kernel_spread(isotropic_gaussian_kernel(size, 2.0)[0])[0] / 4
    assert pipeline_degradation(params).blur_sigma == pytest.approx(expected, rel=1e-6)


def test_pipeline_gaussian_noise_of_the_last_stage_reaches_the_output_unchanged():
    noisy = replace(_INERT_STAGE, gaussian_noise_prob=1.0, noise_range=(12.0, 12.0))
    config = replace(_INERT, stage2=noisy)
    params = degrade(torch.rand(1, 3, 64, 64), config, scale=4, seed=0).params[0]
    assert pipeline_degradation(params).noise_sigma == pytest.approx(12.0)


def test_pipeline_shrink_below_output_size_is_a_loss_of_resolution():
    shrink = replace(_INERT_STAGE, resize_prob=(0.0, 1.0, 0.0), resize_range=(0.5, 1.0))
    config = replace(_INERT, stage2=shrink)
    params = degrade(torch.rand(1, 3, 64, 64), config, scale=4, seed=0).params[0]
    factor = params["stage2"]["resize"]["size"][0] / 16
    assert pipeline_degradation(params).downscale == pytest.approx(1 / factor)


@pytest.mark.parametrize(
    ("field", "value", "dimension"),
    [
        ("blur_sigma", 2.0, "blurriness"),
        ("noise_sigma", 15.0, "noise"),
        ("jpeg_quality", 40.0, "details"),
        ("downscale", 3.0, "resolution"),
    ],
)
def test_v2_each_factor_drives_its_own_dimension_most(field, value, dimension):
    labels = dimension_labels(Degradation(**{field: value}), "v2")
    assert int(labels.argmax()) == DIMENSIONS.index(dimension)
    assert int((labels > 0).sum()) == 3  # its own, its pair dimension, overall quality


def _max_abs_correlation_of_single_factor_dimensions(scheme: str) -> float:
    """Over degradations whose four factors are drawn independently."""
    generator = torch.Generator().manual_seed(0)
    draws = torch.rand(400, 4, generator=generator)
    summaries = [
        Degradation(
            blur_sigma=3 * b, noise_sigma=30 * n, jpeg_quality=100 - 70 * j, downscale=1 + 3 * r
        )
        for b, n, j, r in draws.tolist()
    ]
    targets = torch.stack([dimension_labels(d, scheme) for d in summaries])
    columns = [DIMENSIONS.index(n) for n in ("blurriness", "noise", "resolution", "details")]
    correlation = torch.corrcoef(targets[:, columns].T)
    return float(correlation[~torch.eye(len(columns), dtype=torch.bool)].abs().max())


def test_v2_single_factor_dimensions_are_uncorrelated_when_the_factors_are():
    assert _max_abs_correlation_of_single_factor_dimensions("v2") < 0.15
    assert _max_abs_correlation_of_single_factor_dimensions("v1") > 0.3


def test_severity_spreads_from_one_factor_to_all_four():
    one = dimension_labels(Degradation(noise_sigma=255.0), "v2")
    every = dimension_labels(
        Degradation(blur_sigma=50.0, noise_sigma=255.0, jpeg_quality=1.0, downscale=64.0), "v2"
    )
    assert float(one.mean()) < 0.35 < 0.9 < float(every.mean())


def test_unknown_label_scheme_is_rejected():
    with pytest.raises(ValueError, match="label scheme"):
        dimension_labels(Degradation(), "v9")
