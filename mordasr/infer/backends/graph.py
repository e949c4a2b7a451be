"""The fed graph: a network exported once with every MoR layer's weight as a graph input.

ONNX Runtime and OpenVINO run the same file (cached per process and on disk, keyed by a hash of
the weights it holds); a backend feeds each image's (or tile's) folded weights from its
:class:`~mordasr.mor.RoutingPlan`, the same weights eager torch convolves with, so a new image
costs one fold per layer and no re-export.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mordasr.mor import MoRLayer, RoutingPlan, mor_layers, mor_parameters
from mordasr.nets.loaders import cache_dir

INPUT_NAME = "input"
OUTPUT_NAME = "output"
WEIGHT_INPUT_PREFIX = "weight:"
"""Graph inputs named ``weight:<layer name>`` carry a MoR layer's folded weight."""
OPSET = 17
_GRAPH_VERSION = "1"
"""Bump when the exported graph changes, so stale disk-cached graphs are not reused."""


def cached_graph(network: nn.Module, folder: Path | None = None) -> Path:
    """The fed graph of ``network`` as an ONNX file under ``folder`` (default
    ``cache_dir()/onnx``), exported on first use and written atomically."""
    folder = folder or cache_dir() / "onnx"
    path = folder / f"{graph_key(network)}.onnx"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".onnx", dir=folder)
    os.close(handle)
    try:
        export_fed_graph(network, temporary)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return path


def weight_feeds(plan: RoutingPlan) -> dict[str, np.ndarray]:
    """The graph inputs of a folded ``plan``: every layer's (U, out, in, ...) float32 weight."""
    return {
        WEIGHT_INPUT_PREFIX + name: weight.detach().float().cpu().numpy()
        for name, weight in folded_weights(plan).items()
    }


def feeds_for(weights: Mapping[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
    """The weights of image ``index`` of a batch (one weight row serves every image)."""
    return {name: w[min(index, w.shape[0] - 1)] for name, w in weights.items()}


class _WeightFed(nn.Module):
    """A MoR layer's frozen convolution or linear layer whose weight comes from outside: a
    graph input (``fed`` set per call while tracing) or a fixed folded constant."""

    def __init__(self, base: nn.Conv2d | nn.Linear, weight: Tensor | None = None) -> None:
        super().__init__()
        self.base = base
        self.weight = None if weight is None else nn.Parameter(weight, requires_grad=False)
        self.fed: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        weight = self.fed if self.fed is not None else self.weight
        if weight is None:
            raise RuntimeError("a weight-fed layer runs with a fed or a fixed weight")
        base = self.base
        if isinstance(base, nn.Conv2d):
            padding = 0 if base.padding == "valid" else base.padding
            return F.conv2d(x, weight, base.bias, base.stride, padding, base.dilation, base.groups)
        return F.linear(x, weight, base.bias)


def weight_fed_copy(
    network: nn.Module, weights: Mapping[str, Tensor] | None = None
) -> tuple[nn.Module, dict[str, _WeightFed]]:
    """A copy of ``network`` sharing its tensors, every MoR layer replaced by its frozen layer
    with the weight fed from outside (``weights`` given: fixed to those (out, in, ...) weights)."""
    shared = {id(t): t for t in [*network.parameters(), *network.buffers()]}
    clone = copy.deepcopy(network, memo=shared)
    fed: dict[str, _WeightFed] = {}
    for name, layer in list(mor_layers(clone)):
        module = _WeightFed(layer.base_layer, None if weights is None else weights[name])
        parent, _, leaf = name.rpartition(".")
        setattr(clone.get_submodule(parent) if parent else clone, leaf, module)
        fed[name] = module
    return clone, fed


class _FedGraph(nn.Module):
    """``network(image)`` with the MoR layers' weights as extra positional inputs."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.net, self.fed = weight_fed_copy(network)

    def forward(self, image: Tensor, *weights: Tensor) -> Tensor:
        for module, weight in zip(self.fed.values(), weights, strict=True):
            module.fed = weight
        return self.net(image)


def export_onnx_module(
    module: nn.Module, args: tuple[Tensor, ...], path: str | Path, input_names: list[str]
) -> None:
    """Trace ``module`` on ``args`` into an ONNX file whose first input and output have dynamic
    batch, height and width."""
    axes = {0: "batch", 2: "height", 3: "width"}
    out_axes = {0: "batch", 2: "out_height", 3: "out_width"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=input_names,
            output_names=[OUTPUT_NAME],
            dynamic_axes={input_names[0]: axes, OUTPUT_NAME: out_axes},
            opset_version=OPSET,
            dynamo=False,
        )


def export_fed_graph(network: nn.Module, path: str | Path) -> None:
    """Export ``network`` with its MoR layers' weights as inputs ``weight:<layer name>``."""
    graph = _FedGraph(network)
    sample = torch.rand(1, 3, 16, 16)
    weights = tuple(m.base.weight.detach() for m in graph.fed.values())
    names = [INPUT_NAME, *(WEIGHT_INPUT_PREFIX + name for name in graph.fed)]
    export_onnx_module(graph, (sample, *weights), path, names)


def folded_weights(plan: RoutingPlan) -> dict[str, Tensor]:
    """Every MoR layer's folded weight (U, out, in, ...) in a folded ``plan``."""
    weights = {name: entry.weight for name, entry in plan.layers.items()}
    unfolded = [name for name, weight in weights.items() if weight is None]
    if unfolded:
        raise ValueError(f"the routing plan was made without fold=True ({unfolded[0]})")
    return {name: weight for name, weight in weights.items() if weight is not None}


def graph_key(network: nn.Module) -> str:
    """A hash of what the fed graph of ``network`` holds: its structure and every tensor
    except the MoR adapters (their effect arrives as fed weights)."""
    digest = hashlib.sha256(f"{_GRAPH_VERSION} {OPSET} {torch.__version__}".encode())
    skip = {id(p) for p in mor_parameters(network)}
    digest.update(_structure(network).encode())
    tensors = [*network.named_parameters(), *network.named_buffers()]
    for name, tensor in tensors:
        if id(tensor) in skip:
            continue
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {tuple(data.shape)} {data.dtype}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()[:24]


def _structure(network: nn.Module) -> str:
    """Module types by name, MoR layers reduced to their frozen layer's type."""
    parts = []
    for name, module in network.named_modules():
        if isinstance(module, MoRLayer):
            parts.append(f"{name}:fed:{module.base_layer!r}")
        else:
            parts.append(f"{name}:{type(module).__qualname__}")
    return "\n".join(parts)
