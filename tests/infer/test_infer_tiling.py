from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from mordasr.infer.tiling import axis_weights, balanced_side, tile_starts, tiled_forward


class SmallSR(nn.Module):
    """A x2 conv net whose output depends on input pixels up to ``depth`` + 1/2 pixels away
    (the tail convolution runs after the x2 enlargement)."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *(layer for _ in range(depth) for layer in (nn.Conv2d(3, 3, 3, padding=1), nn.GELU()))
        )
        self.tail = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(self.body(x), scale_factor=2.0)
        return self.tail(x)


@pytest.fixture
def net() -> SmallSR:
    torch.manual_seed(0)
    return SmallSR(depth=3).eval()


@torch.no_grad()
@pytest.mark.parametrize(("overlap", "blend"), [(4, 0), (5, 2), (6, 4), (9, 8)])
def test_tiles_reproduce_the_untiled_output_within_the_receptive_guarantee(
    net: SmallSR, overlap: int, blend: int
) -> None:
    image = torch.rand(2, 3, 45, 61)
    tiled = tiled_forward(net, image, scale=2, tile=24, overlap=overlap, blend=blend)
    torch.testing.assert_close(tiled, net(image), rtol=0, atol=1e-5)


@torch.no_grad()
def test_overlap_below_the_receptive_radius_is_not_exact(net: SmallSR) -> None:
    image = torch.rand(2, 3, 45, 61)
    tiled = tiled_forward(net, image, scale=2, tile=24, overlap=2, blend=0)
    assert (tiled - net(image)).abs().max() > 1e-3


@torch.no_grad()
def test_blending_softens_seams_when_the_overlap_is_too_small() -> None:
    torch.manual_seed(1)
    deep = SmallSR(depth=8).eval()
    image = torch.rand(1, 3, 40, 40)
    reference = deep(image)
    hard = tiled_forward(deep, image, 2, tile=20, overlap=2, blend=0)
    soft = tiled_forward(deep, image, 2, tile=20, overlap=2, blend=2)
    hard_error = (hard - reference).abs().max()
    soft_error = (soft - reference).abs().max()
    assert 0 < soft_error < hard_error
    assert soft_error < 0.05 * reference.abs().max()


def test_each_tile_is_at_most_the_tile_size() -> None:
    sizes: list[tuple[int, int]] = []

    def record(x: torch.Tensor) -> torch.Tensor:
        sizes.append(tuple(x.shape[-2:]))
        return x.repeat_interleave(3, -1).repeat_interleave(3, -2)

    image = torch.rand(1, 1, 50, 33)
    out = tiled_forward(record, image, scale=3, tile=20, overlap=3)
    assert max(h for h, _ in sizes) <= 20 and max(w for _, w in sizes) <= 20
    torch.testing.assert_close(out[..., ::3, ::3], image, rtol=0, atol=1e-6)


def test_image_smaller_than_a_tile_is_processed_in_one_call() -> None:
    calls: list[torch.Size] = []

    def identity(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape)
        return x

    image = torch.rand(1, 3, 10, 12)
    assert torch.equal(tiled_forward(identity, image, scale=1, tile=64, overlap=8), image)
    assert calls == [image.shape]


def test_tile_shorter_than_the_image_along_one_axis_only() -> None:
    image = torch.rand(1, 2, 9, 70)
    out = tiled_forward(lambda x: 2 * x, image, scale=1, tile=32, overlap=4)
    torch.testing.assert_close(out, 2 * image)


@pytest.mark.parametrize("length", [33, 64, 65, 100, 257])
def test_tiles_cover_the_axis_with_the_required_overlap(length: int) -> None:
    starts = tile_starts(length, tile=32, overlap=5)
    assert starts[0] == 0 and starts[-1] + 32 == length
    assert all(prev + 32 - nxt >= 10 for prev, nxt in itertools.pairwise(starts))


@pytest.mark.parametrize(("length", "blend"), [(40, 0), (97, 6), (300, 12), (33, 12)])
def test_axis_weights_sum_to_one_everywhere(length: int, blend: int) -> None:
    total = torch.zeros(length * 4, dtype=torch.float64)
    for start, size, weight in axis_weights(length, 32, 6, blend, scale=4):
        total[start * 4 : (start + size) * 4] += weight
    torch.testing.assert_close(total, torch.ones_like(total))


def test_wrong_output_size_is_reported() -> None:
    with pytest.raises(ValueError, match="expected"):
        tiled_forward(lambda x: x, torch.rand(1, 1, 40, 40), scale=2, tile=16, overlap=2)


def test_tile_must_exceed_twice_the_overlap() -> None:
    with pytest.raises(ValueError, match="twice the overlap"):
        tiled_forward(lambda x: x, torch.rand(1, 1, 40, 40), scale=1, tile=16, overlap=8)


def test_progress_bar_reports_tiles(capsys: pytest.CaptureFixture[str]) -> None:
    tiled_forward(lambda x: x, torch.rand(1, 1, 40, 40), 1, tile=16, overlap=2, progress=True)
    assert "tiles" in capsys.readouterr().err


def test_aligned_tile_starts_are_multiples_of_the_alignment() -> None:
    starts = tile_starts(100, 32, 8, align=4)
    assert starts[0] == 0 and starts[-1] == 68
    assert all(start % 4 == 0 for start in starts)


def test_progress_callback_counts_every_tile_then_the_total() -> None:
    calls: list[tuple[int, int]] = []
    image = torch.rand(1, 1, 40, 40)
    tiled_forward(lambda x: x, image, 1, tile=16, overlap=2, progress=lambda *c: calls.append(c))
    count = len(tile_starts(40, 16, 2)) ** 2
    assert calls == [(done, count) for done in range(count + 1)]


def test_untiled_pass_reports_as_one_tile() -> None:
    calls: list[tuple[int, int]] = []
    tiled_forward(
        lambda x: x, torch.rand(1, 1, 8, 8), 1, tile=0, progress=lambda *c: calls.append(c)
    )
    assert calls == [(0, 1), (1, 1)]


def test_an_exception_in_the_callback_stops_before_the_next_tile() -> None:
    seen: list[int] = []

    def network(x: torch.Tensor) -> torch.Tensor:
        seen.append(1)
        return x

    def stop_after_two(done: int, total: int) -> None:
        if done == 2:
            raise InterruptedError

    with pytest.raises(InterruptedError):
        tiled_forward(
            network, torch.rand(1, 1, 40, 40), 1, tile=16, overlap=2, progress=stop_after_two
        )
    assert len(seen) == 2


def test_an_axis_just_over_one_tile_is_cut_into_two_small_tiles() -> None:
    assert balanced_side(384, 352, 32) == 224


def test_balanced_tiles_cover_the_axis_with_as_few_tiles_as_the_largest_side() -> None:
    for length in (353, 500, 1000, 2000):
        side = balanced_side(length, 352, 16)
        assert len(tile_starts(length, side, 16)) == len(tile_starts(length, 352, 16))
        assert side <= 352


def test_an_axis_that_fits_one_tile_keeps_its_length() -> None:
    assert balanced_side(200, 352, 32) == 200
