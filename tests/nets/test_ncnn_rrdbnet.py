from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mordasr.nets.loaders import (
    PRETRAINED,
    load_ncnn_state_dict,
    load_realesrgan,
    ncnn_to_rrdbnet_state_dict,
)
from mordasr.nets.ncnn import (
    TAG_FP16,
    NcnnFormatError,
    load_ncnn_convolutions,
    parse_param,
    read_convolutions,
)
from mordasr.nets.rrdbnet import RRDBNet, UnknownArchitectureError

TINY = {"num_feat": 8, "num_block": 2, "num_grow_ch": 4}


def _has_leaky_relu(name: str) -> bool:
    in_body = name.startswith("body.") and not name.endswith("conv5")
    return in_body or name in ("conv_up1", "conv_up2", "conv_hr")


def _encode_blob(values: np.ndarray, storage: str) -> bytes:
    flat = values.astype(np.float32).ravel()
    if storage == "fp32":
        return struct.pack("<I", 0) + flat.tobytes()
    if storage == "fp16":
        data = flat.astype("<f2").tobytes()
        return struct.pack("<I", TAG_FP16) + data + b"\0" * (-len(data) % 4)
    # 8-bit indices into a table of 256 floats, announced by any other non-zero tag
    table = np.linspace(flat.min(), flat.max(), 256).astype("<f4")
    indices = np.abs(flat[:, None] - table[None, :]).argmin(axis=1).astype(np.uint8)
    data = indices.tobytes()
    return struct.pack("<I", 0x01010101) + table.tobytes() + data + b"\0" * (-len(data) % 4)


def write_ncnn_rrdbnet(model: RRDBNet, stem: Path, storage: str = "fp16") -> tuple[Path, Path]:
    """Write ``model`` as an ncnn param/bin pair the way onnx2ncnn lays out an RRDBNet."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    lines, blobs = ["Input in 0 1 data"], []
    previous = "data"
    for index, (name, conv) in enumerate(convs):
        if name in ("conv_up1", "conv_up2"):
            lines.append(f"Interp up_{name} 1 1 {previous} {previous}_up 0=1 1=2.0 2=2.0")
            previous = f"{previous}_up"
        weight = conv.weight.detach().numpy()
        activation = " 9=2 -23310=1,2.000000e-01" if _has_leaky_relu(name) else ""
        lines.append(
            f"Convolution conv_{index} 1 1 {previous} b{index} 0={weight.shape[0]} 1=3 4=1 5=1 "
            f"6={weight.size}{activation}"
        )
        previous = f"b{index}"
        blobs.append(_encode_blob(weight, storage))
        blobs.append(conv.bias.detach().numpy().astype("<f4").tobytes())
    param = stem.with_suffix(".param")
    param.write_text(f"7767517\n{len(lines)} {len(lines)}\n" + "\n".join(lines) + "\n")
    binary = stem.with_suffix(".bin")
    binary.write_bytes(b"".join(blobs))
    return param, binary


@pytest.fixture
def tiny() -> RRDBNet:
    torch.manual_seed(0)
    return RRDBNet(**TINY).eval()


def test_param_parser_reads_blobs_integers_floats_and_arrays() -> None:
    text = (
        "7767517\n2 3\nInput in 0 1 data\n"
        "Convolution c 1 1 data out 0=32 1=3 5=1 6=864 9=2 -23310=2,2.000000e-01,1.5\n"
    )
    conv = parse_param(text)[1]
    assert (conv.type, conv.inputs, conv.outputs) == ("Convolution", ("data",), ("out",))
    assert conv.params == {0: 32, 1: 3, 5: 1, 6: 864, 9: 2, 10: [0.2, 1.5]}


def test_param_parser_rejects_a_wrong_magic() -> None:
    with pytest.raises(NcnnFormatError, match="magic"):
        parse_param("123\n0 0\n")


def test_param_parser_rejects_a_wrong_layer_count() -> None:
    with pytest.raises(NcnnFormatError, match="declares 3 layers"):
        parse_param("7767517\n3 1\nInput in 0 1 data\n")


def test_fp16_ncnn_model_loads_to_the_same_weights(tmp_path: Path, tiny: RRDBNet) -> None:
    param, binary = write_ncnn_rrdbnet(tiny, tmp_path / "tiny", "fp16")
    state = ncnn_to_rrdbnet_state_dict(load_ncnn_convolutions(param, binary))
    expected = tiny.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        reference = value.half().float() if key.endswith("weight") else value
        torch.testing.assert_close(state[key], reference, rtol=0, atol=0)


def test_fp32_ncnn_model_loads_exactly(tmp_path: Path, tiny: RRDBNet) -> None:
    param, _ = write_ncnn_rrdbnet(tiny, tmp_path / "tiny", "fp32")
    model = load_realesrgan(param, cache=False)
    for key, value in tiny.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)


def test_table_quantized_weights_are_decoded(tmp_path: Path, tiny: RRDBNet) -> None:
    param, binary = write_ncnn_rrdbnet(tiny, tmp_path / "tiny", "table")
    convs = load_ncnn_convolutions(param, binary)
    weight = tiny.conv_first.weight.detach().numpy()
    step = (weight.max() - weight.min()) / 255
    assert np.abs(convs[0].weight - weight).max() <= step / 2 + 1e-6


def test_leftover_bytes_in_the_bin_are_an_error(tmp_path: Path, tiny: RRDBNet) -> None:
    param, binary = write_ncnn_rrdbnet(tiny, tmp_path / "tiny")
    binary.write_bytes(binary.read_bytes() + b"\0" * 4)
    with pytest.raises(NcnnFormatError, match="4 bytes of the bin file were not consumed"):
        load_ncnn_convolutions(param, binary)


def test_truncated_bin_is_an_error(tmp_path: Path, tiny: RRDBNet) -> None:
    param, binary = write_ncnn_rrdbnet(tiny, tmp_path / "tiny")
    binary.write_bytes(binary.read_bytes()[:-4])
    with pytest.raises(NcnnFormatError, match="bin file ends"):
        load_ncnn_convolutions(param, binary)


def test_unknown_weighted_layer_type_is_an_error() -> None:
    layers = parse_param("7767517\n1 1\nInnerProduct fc 1 1 a b 0=4 1=1 2=16\n")
    with pytest.raises(NcnnFormatError, match="InnerProduct"):
        read_convolutions(layers, b"")


def test_missing_activation_is_detected_as_a_different_network(
    tmp_path: Path, tiny: RRDBNet
) -> None:
    param, binary = write_ncnn_rrdbnet(tiny, tmp_path / "tiny")
    text = param.read_text().replace(" 9=2 -23310=1,2.000000e-01", "", 1)
    param.write_text(text)
    with pytest.raises(UnknownArchitectureError, match="activation"):
        ncnn_to_rrdbnet_state_dict(load_ncnn_convolutions(param, binary))


def test_conversion_is_cached_as_safetensors(tmp_path: Path, tiny: RRDBNet) -> None:
    param, binary = write_ncnn_rrdbnet(tiny, tmp_path / "tiny")
    cache = tmp_path / "cache"
    first = load_ncnn_state_dict(param, binary, cache=cache, cache_name="tiny")
    cached = list(cache.iterdir())
    assert [p.suffix for p in cached] == [".safetensors"]
    second = load_ncnn_state_dict(param, binary, cache=cache, cache_name="tiny")
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_corrupt_cache_file_is_replaced(tmp_path: Path, tiny: RRDBNet) -> None:
    param, binary = write_ncnn_rrdbnet(tiny, tmp_path / "tiny")
    cache = tmp_path / "cache"
    load_ncnn_state_dict(param, binary, cache=cache, cache_name="tiny")
    (cached,) = cache.iterdir()
    cached.write_bytes(b"not a safetensors file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = load_ncnn_state_dict(param, binary, cache=cache, cache_name="tiny")
    assert any("unreadable cache" in str(w.message) for w in caught)
    torch.testing.assert_close(state["conv_last.bias"], tiny.conv_last.bias.detach())
    assert cached.stat().st_size > 100


def test_shipped_x4plus_weights_super_resolve_a_smooth_image(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = load_realesrgan("realesrgan-x4plus", cache=tmp_path)
    assert sum(p.numel() for p in model.parameters()) == 16_697_987
    ramp = torch.linspace(0.2, 0.8, 32)
    across, down = ramp[None, :].expand(32, 32), ramp[:, None].expand(32, 32)
    lr = torch.stack([across, down, 0.5 * across])[None]
    with torch.no_grad():
        sr = model(lr)
    assert sr.shape == (1, 3, 128, 128)
    back = nn.functional.avg_pool2d(sr, 4)
    psnr = -10 * torch.log10(((back - lr) ** 2).mean())
    assert psnr > 30


def test_shipped_models_are_registered_by_name() -> None:
    for model in PRETRAINED.values():
        param, binary = model.files()
        assert param.suffix == ".param" and binary.stat().st_size > 1_000_000
