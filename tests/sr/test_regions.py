"""Region scores: the window grid, smoothing, a tile's scores, and the two region sources."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_models import photo

from mordasr.mor import set_strength
from mordasr.sr import MoRSuperResolver
from mordasr.sr.regions import (
    RegionGrid,
    RegionScores,
    relative_uncertainty_scores,
    smooth,
    tile_core,
    window_starts,
)


@pytest.fixture(scope="module")
def model(model_dir: Path) -> MoRSuperResolver:
    return MoRSuperResolver.from_pretrained(model_dir)


def lr_photo(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(photo(height, width, seed)).permute(2, 0, 1).float()[None] / 255


def test_windows_cover_the_image_at_most_a_stride_apart() -> None:
    starts = window_starts(200, 64, 32)
    assert starts[0] == 0 and starts[-1] == 200 - 64
    assert max(b - a for a, b in itertools.pairwise(starts)) <= 32
    assert window_starts(50, 64, 32) == [0]


def test_a_tile_core_drops_the_context_it_shares_with_its_neighbours() -> None:
    assert tile_core((0, 16, 48, 64), 48, 64, 16) == (0, 32, 48, 64)  # last column, one row
    assert tile_core((16, 0, 64, 64), 96, 64, 16) == (32, 0, 48, 64)  # a middle row


def test_an_image_smaller_than_a_window_is_one_region_of_its_own_size() -> None:
    grid = RegionGrid.over(40, 50)
    assert grid.shape == (1, 1) and grid.window == (40, 50)


def test_smoothing_keeps_a_constant_grid_and_pulls_a_lone_region_towards_its_neighbours() -> None:
    constant = torch.full((1, 7, 3, 5), 0.4)
    torch.testing.assert_close(smooth(constant), constant)
    lone = torch.zeros(1, 1, 5, 5)
    lone[..., 2, 2] = 1.0
    smoothed = smooth(lone)
    assert smoothed[0, 0, 2, 2] < 0.9
    assert smoothed[0, 0, 2, 1] > 0 and smoothed[0, 0, 1, 2] > 0


def test_a_tiles_scores_weight_each_region_by_its_area_inside_the_tile() -> None:
    grid = RegionGrid.over(64, 128, window=64, stride=64)
    scores = torch.tensor([[[[0.0, 1.0]]]])
    regions = RegionScores(grid, scores)
    assert regions.for_box((0, 0, 64, 64)).item() == 0.0
    assert regions.for_box((0, 32, 64, 128)).item() == pytest.approx(2 / 3)


def test_estimator_regions_are_the_routers_input_on_each_window(model: MoRSuperResolver) -> None:
    lr = lr_photo(64, 192)
    regions = model.region_scores(lr, "estimator", smoothing=0)
    assert regions.grid.shape == (1, 3)
    left = regions.grid.lefts[1]
    expected = model.route_input(lr[..., :, left : left + 64])
    torch.testing.assert_close(regions.scores[:, :, 0, 1], expected.float())


def test_uncertainty_is_how_far_the_plain_backbone_moves_from_bicubic(
    model: MoRSuperResolver, model_dir: Path
) -> None:
    lr = lr_photo(40, 36)
    frozen = MoRSuperResolver.from_pretrained(model_dir)
    set_strength(frozen.backbone, 0.0)
    with torch.no_grad():
        plain = frozen.backbone(lr).clamp(0, 1)
    up = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    torch.testing.assert_close(model.uncertainty(lr), (plain - up).abs().mean(dim=1))


def test_regions_the_backbone_changes_more_route_as_more_degraded() -> None:
    image_scores = torch.full((1, 7), 0.4)
    uncertainty = torch.tensor([[[1.0, 3.0]]])
    scores = relative_uncertainty_scores(image_scores, uncertainty)
    torch.testing.assert_close(scores[0, :, 0, 0], torch.full((7,), 0.2))
    torch.testing.assert_close(scores[0, :, 0, 1], torch.full((7,), 0.6))


def test_uncertainty_regions_are_on_the_same_grid(model: MoRSuperResolver) -> None:
    regions = model.region_scores(lr_photo(64, 192), "uncertainty")
    assert regions.scores.shape == (1, 7, 1, 3)
    assert float(regions.scores.min()) >= 0 and float(regions.scores.max()) <= 1


def test_region_routing_scores_its_regions_itself(model: MoRSuperResolver) -> None:
    with pytest.raises(ValueError, match="give no scores"):
        model.prepare(lr_photo(32, 32), torch.rand(1, 7), routing="region")


def test_per_image_work_has_no_regions_and_serves_every_tile(model: MoRSuperResolver) -> None:
    work = model.prepare(lr_photo(32, 32))
    assert work.regions is None and work.for_tile((0, 0, 16, 16)) is work
