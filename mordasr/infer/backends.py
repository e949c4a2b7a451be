"""Where a feed-forward SR network runs: eager PyTorch, or an ONNX Runtime session on the CPU.

Both run whatever plan they are bound to: an image's, or under region routing each tile's (the
pipeline binds every tile's work then). The ONNX graph of a network is exported once (cached per
process and on disk, keyed by a hash of the weights it holds); every MoR layer's weight is a
graph *input*, and :meth:`OnnxRuntimeBackend.bind` feeds the bound plan's folded weights (from
its :class:`~mordasr.mor.RoutingPlan`, the same weights eager torch convolves with), so a new
image or tile costs one fold per layer and no re-export.

``auto`` follows a measured rule (BENCHMARKS section 15): ONNX Runtime for feed-forward models
(MoR or plain backbones) in float32 on the CPU when it is installed, eager torch otherwise
(CUDA, half precision, the one-step SD model, bicubic).
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mordasr.infer.memory import release_freed_memory
from mordasr.mor import MoRLayer, RoutingPlan, mor_layers, mor_parameters
from mordasr.nets.loaders import cache_dir
from mordasr.sr.protocol import ImageWork, SRModel

BACKENDS = ("auto", "torch", "onnxruntime")
"""Names accepted by :func:`select_backend` (and ``mordasr upscale --backend``)."""
ONNX_HINT = "the onnxruntime backend needs ONNX Runtime: pip install 'mordasr[onnx]'"
INPUT_NAME = "input"
OUTPUT_NAME = "output"
WEIGHT_INPUT_PREFIX = "weight:"
"""Graph inputs named ``weight:<layer name>`` carry a MoR layer's folded weight."""
OPSET = 17
_GRAPH_VERSION = "1"
"""Bump when the exported graph changes, so stale disk-cached graphs are not reused."""

Network = Callable[[Tensor], Tensor]


class BackendUnavailableError(ValueError):
    """The requested backend cannot run here (its optional dependency is not installed)."""


class Backend(Protocol):
    """Turns a network, routed for the current image, into the callable that runs it."""

    name: str

    def bind(self, work: ImageWork) -> AbstractContextManager[Network]:
        """A callable running ``work``'s network under its plan, for the block's tiles."""
        ...


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, or a one-line install hint."""
    try:
        import onnxruntime
    except ImportError as error:
        raise BackendUnavailableError(ONNX_HINT) from error
    return onnxruntime


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime can be imported."""
    try:
        import_onnxruntime()
    except BackendUnavailableError:
        return False
    return True


class TorchBackend:
    """Eager PyTorch: the network itself, running the plan cast to the network's dtype."""

    name = "torch"

    @contextmanager
    def bind(self, work: ImageWork) -> Iterator[Network]:
        parameter = next(work.network.parameters(), None)
        plan = work.plan if parameter is None else work.plan.to(parameter.dtype)
        with plan.applied(work.network) as network:
            yield network


class OnnxRuntimeBackend:
    """ONNX Runtime (CPU provider) with each image's folded MoR weights fed as graph inputs.

    Args:
        threads: intra-op threads of the session (default: ``torch.get_num_threads()``).
        disk_cache: keep exported graphs under ``cache_dir()/onnx`` for later processes.
    """

    name = "onnxruntime"

    def __init__(self, threads: int | None = None, disk_cache: bool = True) -> None:
        self._ort = import_onnxruntime()
        self.threads = threads or torch.get_num_threads()
        self.disk_cache = disk_cache
        self._sessions: dict[int, tuple[nn.Module, Any]] = {}
        # The CPU arena keeps fast allocation within a run, but it otherwise holds every tile
        # shape's activations for the session's life (3.9 GiB resident over a 2000x1500
        # photo's tiles against 1.4 GiB for torch): shrink it back after every run.
        self.run_options = self._ort.RunOptions()
        self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def session(self, network: nn.Module) -> Any:
        """The ONNX Runtime session of ``network`` (exported on first use, then cached)."""
        known = self._sessions.get(id(network))
        if known is not None and known[0] is network:
            return known[1]
        key = graph_key(network)
        cached = _SESSIONS.get((key, self.threads))
        if cached is None:
            cached = self._new_session(network, key)
            _SESSIONS[(key, self.threads)] = cached
        self._sessions[id(network)] = (network, cached)
        return cached

    def _new_session(self, network: nn.Module, key: str) -> Any:
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if self.disk_cache:
            path = cache_dir() / "onnx" / f"{key}.onnx"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                handle, temporary = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
                os.close(handle)
                try:
                    export_fed_graph(network, temporary)
                    os.replace(temporary, path)
                finally:
                    Path(temporary).unlink(missing_ok=True)
            return self._ort.InferenceSession(str(path), options, providers=providers)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "graph.onnx"
            export_fed_graph(network, path)
            return self._ort.InferenceSession(str(path), options, providers=providers)

    @contextmanager
    def bind(self, work: ImageWork) -> Iterator[Network]:
        session = self.session(work.network)
        weights = {
            WEIGHT_INPUT_PREFIX + name: weight.detach().float().cpu().numpy()
            for name, weight in folded_weights(work.plan).items()
        }

        def run(image: Tensor) -> Tensor:
            outputs = []
            for index in range(image.shape[0]):
                feeds = {name: w[min(index, w.shape[0] - 1)] for name, w in weights.items()}
                feeds[INPUT_NAME] = image[index : index + 1].float().contiguous().cpu().numpy()
                outputs.append(
                    torch.from_numpy(session.run([OUTPUT_NAME], feeds, self.run_options)[0])
                )
                release_freed_memory()
            return torch.cat(outputs).to(device=image.device, dtype=image.dtype)

        yield run


_SESSIONS: dict[tuple[str, int], Any] = {}
"""Sessions of this process by (graph key, threads), shared by every Upscaler."""


def fast_path_supported(model: SRModel, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ONNX Runtime can run ``model``: a feed-forward network (MoR or plain backbone),
    float32, on the CPU."""
    return model.feed_forward and device.type == "cpu" and dtype == torch.float32


def select_backend(name: str, model: SRModel, device: torch.device, dtype: torch.dtype) -> Backend:
    """The backend ``name`` (one of :data:`BACKENDS`) for ``model`` on ``device``/``dtype``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    supported = fast_path_supported(model, device, dtype)
    if name == "onnxruntime":
        if not supported:
            raise ValueError(
                "the onnxruntime backend runs feed-forward models (MoR or plain backbones) "
                "in float32 on the CPU; use --backend torch"
            )
        return OnnxRuntimeBackend()
    if name == "auto" and supported and onnxruntime_available():
        return OnnxRuntimeBackend()
    return TorchBackend()


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
