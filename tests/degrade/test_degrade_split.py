"""The composite preset: two presets side by side in every image."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mordasr.degrade import PRESETS, SplitConfig, degrade


def _hr(b: int = 4, size: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return F.interpolate(torch.rand(b, 3, 8, 8, generator=gen), size=(size, size), mode="bicubic")


def test_each_side_of_the_column_comes_from_its_preset() -> None:
    hr = _hr().clamp(0, 1)
    config = SplitConfig(first="bicubic", second="noise-only")
    res = degrade(hr, config, scale=4, seed=1)
    plain = degrade(hr, "bicubic", scale=4, seed=0).lr  # bicubic draws nothing
    for i, params in enumerate(res.params):
        column, side = params["split"]["column"], params["split"]["first_side"]
        first = slice(0, column) if side == "left" else slice(column, None)
        second = slice(column, None) if side == "left" else slice(0, column)
        assert torch.equal(res.lr[i, ..., first], plain[i, ..., first])
        assert not torch.equal(res.lr[i, ..., second], plain[i, ..., second])


def test_the_column_lies_in_the_split_range() -> None:
    res = degrade(_hr(8), "mordasr-halves", scale=4, seed=2)
    columns = [p["split"]["column"] for p in res.params]
    assert all(4 <= c <= 12 for c in columns)  # [1/4, 3/4] of 16 LR columns
    assert {p["split"]["first_side"] for p in res.params} == {"left", "right"}


def test_the_halves_preset_joins_mild_and_severe() -> None:
    config = PRESETS["mordasr-halves"]
    assert isinstance(config, SplitConfig)
    assert (config.first, config.second) == ("mordasr-mild", "mordasr-severe")


def test_a_split_of_splits_is_refused() -> None:
    with pytest.raises(ValueError, match="two plain presets"):
        degrade(_hr(1), SplitConfig(first="mordasr-halves"), scale=4, seed=0)
