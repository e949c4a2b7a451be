"""The bias-corrected EMA: its weights, its state and the distance to the live weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mordasr.train.ema import EMA, UPDATES_KEY

DECAY = 0.9
VALUES = (10.0, 2.0, 4.0, -1.0)
"""Values the parameter takes before updates 1, 2, 3 and 4."""


def _averaged(values: tuple[float, ...], start: float = 100.0) -> tuple[EMA, nn.Parameter]:
    param = nn.Parameter(torch.tensor([start]))
    ema = EMA({"w": param}, DECAY)
    for value in values:
        param.data.fill_(value)
        ema.update()
    return ema, param


def test_the_average_is_the_hand_computed_bias_corrected_one() -> None:
    ema, _ = _averaged(VALUES)
    t = len(VALUES)
    weights = [(1 - DECAY) * DECAY ** (t - i) / (1 - DECAY**t) for i in range(1, t + 1)]
    expected = sum(w * v for w, v in zip(weights, VALUES, strict=True))
    assert ema.shadow["w"].item() == pytest.approx(expected, rel=1e-6)


def test_the_initial_value_gets_no_weight() -> None:
    low, _ = _averaged(VALUES, start=-1000.0)
    high, _ = _averaged(VALUES, start=1000.0)
    assert torch.equal(low.shadow["w"], high.shadow["w"])


def test_the_first_update_copies_the_parameters() -> None:
    ema, _ = _averaged(VALUES[:1])
    assert ema.shadow["w"].item() == VALUES[0]


def test_a_constant_parameter_is_averaged_to_itself() -> None:
    ema, _ = _averaged((3.0,) * 50)
    assert ema.shadow["w"].item() == pytest.approx(3.0, rel=1e-6)


def test_resuming_from_the_state_equals_averaging_without_interruption() -> None:
    straight, _ = _averaged(VALUES)
    first, _ = _averaged(VALUES[:2])
    state = {name: t.clone() for name, t in first.state_dict().items()}
    param = nn.Parameter(torch.tensor([7.0]))
    resumed = EMA({"w": param}, DECAY)
    resumed.load_state_dict(state)
    for value in VALUES[2:]:
        param.data.fill_(value)
        resumed.update()
    assert resumed.updates == straight.updates == len(VALUES)
    assert resumed.shadow["w"].item() == pytest.approx(straight.shadow["w"].item(), rel=1e-6)


def test_the_state_holds_the_update_count() -> None:
    ema, _ = _averaged(VALUES[:3])
    assert int(ema.state_dict()[UPDATES_KEY]) == 3


def test_a_state_without_count_continues_as_a_plain_ema() -> None:
    param = nn.Parameter(torch.tensor([0.0]))
    ema = EMA({"w": param}, DECAY)
    ema.load_state_dict({"w": torch.tensor([5.0])})
    param.data.fill_(1.0)
    ema.update()
    assert ema.updates is None
    assert ema.shadow["w"].item() == pytest.approx(DECAY * 5.0 + (1 - DECAY) * 1.0)
    assert UPDATES_KEY not in ema.state_dict()


def test_a_parameter_may_not_take_the_count_s_name() -> None:
    with pytest.raises(ValueError, match=UPDATES_KEY):
        EMA({UPDATES_KEY: nn.Parameter(torch.zeros(1))}, DECAY)


def test_relative_distance_is_the_l2_gap_over_all_tensors() -> None:
    a = nn.Parameter(torch.tensor([3.0]))
    b = nn.Parameter(torch.tensor([0.0, 4.0]))
    ema = EMA({"a": a, "b": b}, DECAY)
    ema.shadow["a"].fill_(0.0)
    ema.shadow["b"].copy_(torch.tensor([0.0, 4.0]))
    assert ema.relative_distance() == pytest.approx(3.0 / 5.0)


def test_swapped_in_holds_the_average_then_restores_the_live_values() -> None:
    ema, param = _averaged(VALUES)
    with ema.swapped_in():
        assert torch.equal(param.detach(), ema.shadow["w"])
    assert param.item() == VALUES[-1]
