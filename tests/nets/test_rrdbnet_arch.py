from __future__ import annotations

import pytest
import torch

from mordasr.nets.rrdbnet import (
    RRDBNet,
    RRDBNetConfig,
    UnknownArchitectureError,
    detect_rrdbnet_config,
    rrdbnet_from_state_dict,
)

TINY = {"num_feat": 8, "num_block": 2, "num_grow_ch": 4}

# The published parameter count of RealESRGAN_x4plus.pth.
X4PLUS_PARAMETERS = 16_697_987


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_output_is_input_size_times_scale(scale: int) -> None:
    model = RRDBNet(scale=scale, **TINY)
    out = model(torch.rand(2, 3, 12, 16))
    assert out.shape == (2, 3, 12 * scale, 16 * scale)


def test_default_network_has_the_x4plus_parameter_count() -> None:
    with torch.device("meta"):
        model = RRDBNet()
    assert sum(p.numel() for p in model.parameters()) == X4PLUS_PARAMETERS


def test_parameter_names_follow_the_official_release() -> None:
    keys = set(RRDBNet(**TINY).state_dict())
    expected = {
        "conv_first.weight",
        "body.0.rdb1.conv1.weight",
        "body.1.rdb3.conv5.bias",
        "conv_body.weight",
        "conv_up1.weight",
        "conv_up2.weight",
        "conv_hr.weight",
        "conv_last.bias",
    }
    assert expected <= keys


def test_pixel_unshuffle_scales_need_divisible_input() -> None:
    with pytest.raises(ValueError, match="divisible by 2"):
        RRDBNet(scale=2, **TINY)(torch.rand(1, 3, 9, 8))


def test_unsupported_scale_is_rejected() -> None:
    with pytest.raises(ValueError, match="scale"):
        RRDBNet(scale=3)


@pytest.mark.parametrize(
    "config",
    [
        RRDBNetConfig(),
        RRDBNetConfig(scale=2, num_block=6, num_feat=32, num_grow_ch=16),
        RRDBNetConfig(num_in_ch=1, num_out_ch=1, scale=1, num_block=3),
    ],
)
def test_config_is_detected_from_state_dict_shapes(config: RRDBNetConfig) -> None:
    with torch.device("meta"):
        state = RRDBNet.from_config(config).state_dict()
    assert detect_rrdbnet_config(state) == config


def test_detection_rejects_a_foreign_state_dict() -> None:
    state = torch.nn.Conv2d(3, 8, 3).state_dict()
    with pytest.raises(UnknownArchitectureError, match="missing"):
        detect_rrdbnet_config(state)


def test_rebuilt_network_computes_the_same_function() -> None:
    torch.manual_seed(0)
    model = RRDBNet(scale=2, **TINY).eval()
    rebuilt = rrdbnet_from_state_dict(model.state_dict()).eval()
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


def _legacy_names(state: dict[str, torch.Tensor], num_block: int) -> dict[str, torch.Tensor]:
    """The same weights under the original ESRGAN repository's names, written out by hand."""
    top = {"conv_first": 0, "conv_up1": 3, "conv_up2": 6, "conv_hr": 8, "conv_last": 10}
    legacy = {}
    for key, value in state.items():
        module, kind = key.rsplit(".", 1)
        if module in top:
            legacy[f"model.{top[module]}.{kind}"] = value
        elif module == "conv_body":
            legacy[f"model.1.sub.{num_block}.{kind}"] = value
        else:
            _, block, rdb, conv = module.split(".")
            legacy[f"model.1.sub.{block}.RDB{rdb[-1]}.{conv}.0.{kind}"] = value
    return legacy


def test_original_esrgan_key_names_load_to_the_same_network() -> None:
    torch.manual_seed(0)
    model = RRDBNet(**TINY).eval()
    rebuilt = rrdbnet_from_state_dict(_legacy_names(model.state_dict(), TINY["num_block"]))
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(rebuilt.eval()(x), model(x), rtol=0, atol=0)


def test_rebuilding_fails_loudly_on_missing_keys() -> None:
    state = RRDBNet(**TINY).state_dict()
    del state["conv_hr.bias"]
    with pytest.raises(UnknownArchitectureError, match=r"conv_hr\.bias"):
        rrdbnet_from_state_dict(state)
