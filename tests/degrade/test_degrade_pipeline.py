"""The two-stage pipeline: shapes, reproducibility, per-image draws, presets, parameters."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from mordasr.degrade import PRESETS, DegradationConfig, degrade, random_resize, usm_sharpen
from mordasr.degrade.canvas import (
    clamp_index,
    gather_cols,
    gather_rows,
    repeat_last_cols,
    repeat_last_rows,
    size_groups,
)


def _hr(b: int = 8, size: int = 64, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, size // 8, size // 8, generator=gen)
    return F.interpolate(coarse, size=(size, size), mode="bicubic").clamp(0, 1)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_lr_has_the_scaled_shape_and_8_bit_levels(preset: str) -> None:
    res = degrade(_hr(4, 64), preset, scale=4, seed=0)
    assert res.lr.shape == (4, 3, 16, 16) and res.gt.shape == (4, 3, 64, 64)
    assert res.lr.min() >= 0 and res.lr.max() <= 1
    torch.testing.assert_close(res.lr * 255, (res.lr * 255).round(), atol=1e-4, rtol=0)
    assert len(res.params) == 4


def test_non_square_input_and_scale_two() -> None:
    res = degrade(_hr(2, 64)[..., :48], "mordasr-mild", scale=2, seed=1)
    assert res.lr.shape == (2, 3, 32, 24)


def test_same_seed_reproduces_images_and_parameters() -> None:
    a = degrade(_hr(), "realesrgan", seed=7)
    b = degrade(_hr(), "realesrgan", seed=7)
    assert torch.equal(a.lr, b.lr) and a.params == b.params


def test_a_generator_works_as_seed() -> None:
    a = degrade(_hr(), "realesrgan", seed=torch.Generator().manual_seed(5))
    b = degrade(_hr(), "realesrgan", seed=torch.Generator().manual_seed(5))
    assert torch.equal(a.lr, b.lr)


def test_different_seeds_give_different_results() -> None:
    a = degrade(_hr(), "realesrgan", seed=1)
    b = degrade(_hr(), "realesrgan", seed=2)
    assert not torch.equal(a.lr, b.lr) and a.params != b.params


def test_every_random_choice_varies_within_one_batch() -> None:
    params = degrade(_hr(16), "realesrgan", seed=3).params

    def values(*path: str) -> set:
        out = set()
        for p in params:
            for key in path:
                p = p[key]
            out.add(p)
        return out

    for stage in ("stage1", "stage2"):
        assert len(values(stage, "resize", "factor")) > 8
        assert len(values(stage, "resize", "mode")) > 1
        assert len(values(stage, "resize", "direction")) > 1
        assert values(stage, "noise", "type") == {"gaussian", "poisson"}
        assert values(stage, "noise", "gray") == {True, False}
        assert len(values(stage, "jpeg_quality")) > 4
        assert len(values(stage, "blur", "kernel")) > 1
    assert values("final", "order") == {"sinc_then_jpeg", "jpeg_then_sinc"}
    assert values("final", "sinc", "applied") == {True, False}


def test_parameters_are_json_and_within_the_configured_ranges() -> None:
    cfg = PRESETS["mordasr-mild"]
    params = degrade(_hr(16), cfg, seed=4).params
    json.dumps(params)
    for p in params:
        for name, stage in (("stage1", cfg.stage1), ("stage2", cfg.stage2)):
            s = p[name]
            lo, hi = stage.jpeg_range
            assert lo <= s["jpeg_quality"] <= hi
            if s["noise"]["type"] == "gaussian":
                assert stage.noise_range[0] <= s["noise"]["sigma"] <= stage.noise_range[1]
            else:
                lo, hi = stage.poisson_scale_range
                assert lo <= s["noise"]["poisson_scale"] <= hi
            if s["blur"]["applied"]:
                assert 7 <= s["blur"]["kernel_size"] <= stage.kernel_size
            if s["blur"]["sigma_x"] is not None:
                assert stage.blur_sigma[0] <= s["blur"]["sigma_x"] <= stage.blur_sigma[1]
        assert p["stage2"]["blur"]["kernel_size"] in (None, 7, 9, 11)


def test_resize_sizes_follow_the_drawn_factors() -> None:
    for p in degrade(_hr(8, 64), "realesrgan", seed=5).params:
        one, two = p["stage1"]["resize"], p["stage2"]["resize"]
        assert one["size"] == [max(1, int(64 * one["factor"]))] * 2
        assert two["size"] == [max(1, int(16 * two["factor"]))] * 2


def test_config_without_blur_noise_or_jpeg_loss_gives_a_plain_downscale() -> None:
    cfg = PRESETS["mordasr-mild"]
    quiet = replace(
        cfg,
        stage1=replace(
            cfg.stage1,
            blur_prob=0.0,
            resize_prob=(0, 0, 1),
            noise_range=(0, 0),
            gaussian_noise_prob=1.0,
            jpeg_range=(100, 100),
        ),
        stage2=replace(
            cfg.stage2,
            blur_prob=0.0,
            resize_prob=(0, 0, 1),
            resize_modes=("area",),
            noise_range=(0, 0),
            gaussian_noise_prob=1.0,
            jpeg_range=(100, 100),
        ),
        final_sinc_prob=0.0,
        final_resize_modes=("area",),
    )
    hr = _hr(2, 64)[:, :1].expand(-1, 3, -1, -1)  # gray: 4:2:0 chroma subsampling is lossless
    res = degrade(hr, quiet, seed=0)
    expected = F.interpolate(hr, size=(16, 16), mode="area")
    assert (res.lr - expected).abs().max() < 3 / 255


def test_stronger_preset_degrades_more() -> None:
    hr = _hr(16, 64)
    mild = degrade(hr, "mordasr-mild", seed=0).lr
    severe = degrade(hr, "mordasr-severe", seed=0).lr
    ref = F.interpolate(hr, size=(16, 16), mode="area")
    assert (severe - ref).abs().mean() > (mild - ref).abs().mean()


def test_ground_truth_is_unsharp_masked_only_when_configured() -> None:
    hr = _hr(2, 64)
    torch.testing.assert_close(degrade(hr, "realesrgan").gt, usm_sharpen(hr))
    assert torch.equal(degrade(hr, "mordasr-severe").gt, hr)


TABLE_4 = {
    "stage1.noise_range": ((1, 15), (1, 30)),
    "stage1.poisson_scale_range": ((0.05, 1), (0.05, 3)),
    "stage1.jpeg_range": ((60, 95), (30, 95)),
    "stage2.blur_prob": (0.5, 0.8),
    "stage2.noise_range": ((1, 12), (1, 25)),
    "stage2.poisson_scale_range": ((0.05, 1), (0.05, 2.5)),
    "stage2.jpeg_range": ((60, 100), (30, 95)),
    "stage2.kernel_size": (11, 21),
    "stage2.blur_sigma": ((0.2, 1.0), (0.2, 1.5)),
    "stage2.betag_range": ((0.5, 2.0), (0.5, 4.0)),
    "stage2.betap_range": ((1, 1.5), (1, 2)),
}
"""Table 4 of the paper: ``stage.setting`` -> its value in (mordasr-mild, mordasr-severe)."""


@pytest.mark.parametrize(("setting", "expected"), TABLE_4.items(), ids=list(TABLE_4))
def test_presets_hold_table_4_of_the_paper(setting: str, expected: tuple[object, object]) -> None:
    stage, name = setting.split(".")
    mild, severe = (getattr(PRESETS[p], stage) for p in ("mordasr-mild", "mordasr-severe"))
    assert (getattr(mild, name), getattr(severe, name)) == expected


def test_realesrgan_preset_holds_the_x4plus_training_settings() -> None:
    cfg = PRESETS["realesrgan"]
    one, two = cfg.stage1, cfg.stage2
    assert one.resize_prob == (0.2, 0.7, 0.1) and one.resize_range == (0.15, 1.5)
    assert two.resize_prob == (0.3, 0.4, 0.3) and two.resize_range == (0.3, 1.2)
    assert one.kernel_prob == (0.45, 0.25, 0.12, 0.03, 0.12, 0.03) and one.sinc_prob == 0.1
    assert one.blur_sigma == (0.2, 3.0) and two.blur_sigma == (0.2, 1.5)
    assert one.gray_noise_prob == two.gray_noise_prob == 0.4
    assert cfg.final_sinc_prob == 0.8 and cfg.gt_usm and cfg.degrade_usm


def test_unknown_preset_and_bad_input_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        degrade(_hr(1), "nope")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        degrade(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="kernel"):
        DegradationConfig(
            stage1=replace(PRESETS["realesrgan"].stage1, kernel_list=("box",), kernel_prob=(1.0,))
        )


def test_random_resize_returns_each_image_at_its_drawn_size() -> None:
    images, params = random_resize(_hr(6, 40), seed=2)
    for img, p in zip(images, params, strict=True):
        assert list(img.shape[-2:]) == p["size"] == [max(1, int(40 * p["factor"]))] * 2


def test_size_groups_cover_every_image_once_and_split_very_different_sizes() -> None:
    groups = size_groups([100 * 100, 10 * 10, 98 * 98, 11 * 11, 400 * 400], overhead=50 * 50)
    assert sorted(i for g in groups for i in g) == [0, 1, 2, 3, 4]
    assert [4] in groups and any(set(g) == {0, 2} for g in groups)


def test_edge_repetition_equals_gathering_clamped_indices() -> None:
    x = torch.rand(3, 2, 20, 30, generator=torch.Generator().manual_seed(0))
    hs, ws = torch.tensor([20, 11, 1]), torch.tensor([30, 7, 1])
    expected = gather_cols(gather_rows(x, clamp_index(20, hs)), clamp_index(30, ws))
    assert torch.equal(repeat_last_cols(repeat_last_rows(x, hs), ws), expected)


def test_noise_measured_in_the_output_matches_each_images_drawn_sigma() -> None:
    cfg = PRESETS["realesrgan"]
    only_noise = dict(blur_prob=0.0, resize_prob=(0, 0, 1), jpeg_range=(100, 100))
    noisy_cfg = replace(
        cfg,
        stage1=replace(cfg.stage1, gaussian_noise_prob=1.0, gray_noise_prob=1.0, **only_noise),
        stage2=replace(cfg.stage2, gaussian_noise_prob=1.0, noise_range=(0, 0), **only_noise),
        final_sinc_prob=0.0,
        gt_usm=False,
        degrade_usm=False,
    )
    hr = torch.full((6, 3, 96, 96), 0.5)
    res = degrade(hr, noisy_cfg, scale=1, seed=11)
    for i, p in enumerate(res.params):
        measured = (res.lr[i] - hr[i]).std().item() * 255
        assert measured == pytest.approx(p["stage1"]["noise"]["sigma"], rel=0.05, abs=0.5)
