"""Reader for ncnn models (a text ``.param`` graph plus a ``.bin`` weight blob), without ncnn.

Real-ESRGAN and RealSR weights are shipped in ncnn format by pip packages; this module decodes
them into numpy arrays so they can be mapped onto a PyTorch network.

Format summary (ncnn's own documentation calls these the param and model files):

* ``.param``: a magic line ``7767517``, a line ``<layer count> <blob count>``, then one line per
  layer ``<type> <name> <n inputs> <n outputs> <input blobs...> <output blobs...> k=v ...``.
  A key ``-23300 - k`` marks an array for key ``k`` written ``count,v1,v2,...``. Values holding a
  ``.`` or an exponent are floats, the others integers.
* ``.bin``: the weights of the layers that have any, in layer order, concatenated. Each weight
  blob starts with a 4-byte tag telling its storage (raw float32 when the tag is zero, float16
  padded to 4 bytes for ``0x01306B47``, an 8-bit index into a 256-entry float32 table for other
  non-zero tags); biases follow as untagged float32.

Only the layer types needed by convolutional SR networks are decoded (``Convolution`` and
``PReLU``, whose slopes are stored as untagged float32); a layer type that carries
weights but is not understood raises :class:`NcnnFormatError` instead of silently misreading the
rest of the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PARAM_MAGIC = 7767517
_ARRAY_KEY_BASE = -23300
TAG_FP32 = 0x00000000
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32_SCALED = 0x0002C056
_QUANT_TABLE_SIZE = 256

ParamValue = int | float | list[int] | list[float]

# Layer types known to carry no weights in the .bin file.
_WEIGHTLESS = frozenset(
    {
        "Input",
        "Split",
        "Concat",
        "Eltwise",
        "BinaryOp",
        "UnaryOp",
        "Interp",
        "ReLU",
        "Sigmoid",
        "Clip",
        "Crop",
        "PixelShuffle",
        "Reshape",
        "Permute",
        "Noop",
    }
)


class NcnnFormatError(ValueError):
    """An ncnn param or bin file is malformed or uses a feature this reader does not support."""


@dataclass(frozen=True)
class NcnnLayer:
    """One line of a ``.param`` file."""

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, ParamValue] = field(default_factory=dict)

    def get(self, key: int, default: ParamValue) -> ParamValue:
        """A parameter by its numeric key, with ncnn's default when absent."""
        return self.params.get(key, default)


@dataclass(frozen=True)
class ConvolutionWeights:
    """Decoded weights of a ``Convolution`` layer, shaped like a PyTorch ``Conv2d``."""

    layer: NcnnLayer
    weight: np.ndarray  # (out, in, kernel_h, kernel_w), float32
    bias: np.ndarray | None  # (out,), float32
    activation: int  # ncnn activation_type: 0 none, 1 ReLU, 2 leaky ReLU, ...
    activation_params: tuple[float, ...]
    weight_storage: int  # the tag the weight blob was stored with


@dataclass(frozen=True)
class PReLUWeights:
    """Decoded slopes of a ``PReLU`` layer, shaped like a PyTorch ``PReLU`` weight."""

    layer: NcnnLayer
    slopes: np.ndarray  # (num_slope,), float32


LayerWeights = ConvolutionWeights | PReLUWeights


def _parse_scalar(text: str) -> int | float:
    return float(text) if any(char in text for char in ".eE") else int(text)


def _parse_value(key: int, text: str) -> tuple[int, ParamValue]:
    if key > _ARRAY_KEY_BASE:
        return key, _parse_scalar(text)
    count_text, *items = text.split(",")
    if int(count_text) != len(items):
        raise NcnnFormatError(f"array parameter {key}={text} declares {count_text} items")
    return _ARRAY_KEY_BASE - key, [_parse_scalar(item) for item in items]


def _parse_layer(line: str) -> NcnnLayer:
    fields = line.split()
    if len(fields) < 4:
        raise NcnnFormatError(f"truncated layer line: {line!r}")
    layer_type, name = fields[0], fields[1]
    n_in, n_out = int(fields[2]), int(fields[3])
    blobs_end = 4 + n_in + n_out
    if len(fields) < blobs_end:
        raise NcnnFormatError(f"layer {name} lists fewer blobs than declared")
    params: dict[int, ParamValue] = {}
    for item in fields[blobs_end:]:
        key_text, sep, value_text = item.partition("=")
        if not sep:
            raise NcnnFormatError(f"layer {name}: parameter {item!r} is not key=value")
        key, value = _parse_value(int(key_text), value_text)
        params[key] = value
    return NcnnLayer(
        layer_type,
        name,
        tuple(fields[4 : 4 + n_in]),
        tuple(fields[4 + n_in : blobs_end]),
        params,
    )


def parse_param(text: str) -> list[NcnnLayer]:
    """Parse the text of an ncnn ``.param`` file into its layers, in file order."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise NcnnFormatError("param file is too short to hold the magic and count lines")
    try:
        magic = int(lines[0])
        layer_count, _blob_count = (int(value) for value in lines[1].split())
        layers = [_parse_layer(line) for line in lines[2:]]
    except ValueError as error:
        if isinstance(error, NcnnFormatError):
            raise
        raise NcnnFormatError(f"malformed param file: {error}") from error
    if magic != PARAM_MAGIC:
        raise NcnnFormatError(f"param magic is {magic}, expected {PARAM_MAGIC}")
    if len(layers) != layer_count:
        raise NcnnFormatError(f"param file declares {layer_count} layers but has {len(layers)}")
    return layers


def _aligned(size: int) -> int:
    return (size + 3) // 4 * 4


class _BlobReader:
    """Sequential reader over the bytes of a ``.bin`` file."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.offset = 0

    def take(self, size: int, what: str) -> memoryview:
        end = self.offset + size
        if end > len(self.data):
            raise NcnnFormatError(
                f"bin file ends at byte {len(self.data)} while reading {what} "
                f"({size} bytes from offset {self.offset})"
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def tagged(self, count: int, what: str) -> tuple[np.ndarray, int]:
        """A weight blob preceded by its storage tag; returns float32 values and the tag."""
        tag = int(np.frombuffer(self.take(4, what), "<u4")[0])
        if tag == TAG_FP16:
            raw = self.take(_aligned(2 * count), what)
            return np.frombuffer(raw, "<f2", count).astype(np.float32), tag
        if tag in (TAG_INT8, TAG_FP32_SCALED):
            raise NcnnFormatError(f"{what}: int8-quantized ncnn weights are not supported")
        if sum(tag.to_bytes(4, "little")) != 0:
            table = np.frombuffer(self.take(4 * _QUANT_TABLE_SIZE, what), "<f4")
            indices = np.frombuffer(self.take(_aligned(count), what), np.uint8, count)
            return table[indices].astype(np.float32), tag
        return self.raw(count, what), tag

    def raw(self, count: int, what: str) -> np.ndarray:
        """Untagged float32 values (ncnn stores biases this way)."""
        return np.frombuffer(self.take(4 * count, what), "<f4").astype(np.float32)


def _int_param(layer: NcnnLayer, key: int, default: int) -> int:
    value = layer.get(key, default)
    if not isinstance(value, int):
        raise NcnnFormatError(f"layer {layer.name}: parameter {key} should be an integer")
    return value


def _read_convolution(layer: NcnnLayer, reader: _BlobReader) -> ConvolutionWeights:
    num_output = _int_param(layer, 0, 0)
    kernel_w = _int_param(layer, 1, 0)
    kernel_h = _int_param(layer, 11, kernel_w)
    bias_term = _int_param(layer, 5, 0)
    weight_size = _int_param(layer, 6, 0)
    if _int_param(layer, 8, 0):
        raise NcnnFormatError(f"layer {layer.name}: int8 convolutions are not supported")
    if _int_param(layer, 7, 1) != 1:
        raise NcnnFormatError(f"layer {layer.name}: grouped convolutions are not supported")
    per_input = num_output * kernel_h * kernel_w
    if per_input <= 0 or weight_size <= 0 or weight_size % per_input:
        raise NcnnFormatError(
            f"layer {layer.name}: weight size {weight_size} is not a multiple of "
            f"{num_output}x{kernel_h}x{kernel_w}"
        )
    values, tag = reader.tagged(weight_size, f"weights of {layer.name}")
    weight = values.reshape(num_output, weight_size // per_input, kernel_h, kernel_w)
    bias = reader.raw(num_output, f"bias of {layer.name}") if bias_term else None
    act_params = layer.get(10, [])
    act_values = act_params if isinstance(act_params, list) else [act_params]
    return ConvolutionWeights(
        layer=layer,
        weight=weight,
        bias=bias,
        activation=_int_param(layer, 9, 0),
        activation_params=tuple(float(value) for value in act_values),
        weight_storage=tag,
    )


def read_weights(layers: list[NcnnLayer], data: bytes) -> list[LayerWeights]:
    """Decode the weights of every ``Convolution`` and ``PReLU`` layer from the bytes of a
    ``.bin`` file, in graph order.

    Fails if a layer type that may carry weights is not understood, or if bytes are left over
    after the last layer, so a successful return means the whole file was consumed.
    """
    reader = _BlobReader(data)
    weights: list[LayerWeights] = []
    for layer in layers:
        if layer.type == "Convolution":
            weights.append(_read_convolution(layer, reader))
        elif layer.type == "PReLU":
            count = _int_param(layer, 0, 1)
            weights.append(PReLUWeights(layer, reader.raw(count, f"slopes of {layer.name}")))
        elif layer.type not in _WEIGHTLESS:
            raise NcnnFormatError(f"layer {layer.name}: type {layer.type} is not supported")
    leftover = len(reader.data) - reader.offset
    if leftover:
        raise NcnnFormatError(f"{leftover} bytes of the bin file were not consumed by any layer")
    return weights


def read_convolutions(layers: list[NcnnLayer], data: bytes) -> list[ConvolutionWeights]:
    """The ``Convolution`` weights of a network made of convolutions only (see
    :func:`read_weights`); a ``PReLU`` layer is an error."""
    convolutions = []
    for weights in read_weights(layers, data):
        if not isinstance(weights, ConvolutionWeights):
            raise NcnnFormatError(f"layer {weights.layer.name}: a PReLU in a convolution-only net")
        convolutions.append(weights)
    return convolutions


def load_ncnn_convolutions(param_path: Path, bin_path: Path) -> list[ConvolutionWeights]:
    """Read a ``.param``/``.bin`` pair and return its convolutions in graph order."""
    layers = parse_param(Path(param_path).read_text(encoding="utf-8"))
    return read_convolutions(layers, Path(bin_path).read_bytes())


def load_ncnn_weights(
    param_path: Path, bin_path: Path
) -> tuple[list[NcnnLayer], list[LayerWeights]]:
    """Read a ``.param``/``.bin`` pair: its layers and its weighted layers' weights, in order."""
    layers = parse_param(Path(param_path).read_text(encoding="utf-8"))
    return layers, read_weights(layers, Path(bin_path).read_bytes())
