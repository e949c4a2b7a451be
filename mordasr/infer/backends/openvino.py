"""OpenVINO (CPU plugin) running the fed graph in float32, bfloat16 or float16.

The graph is the one ONNX Runtime runs (:mod:`~mordasr.infer.backends.graph`): every MoR
layer's weight is an input, fed per image from the float32 routing plan, so routing and folding
never see reduced precision; OpenVINO rounds the weights and activations to its inference
precision inside its kernels (AMX or AVX512-BF16 tiles for bfloat16, float32 accumulation).
Compiled models are cached per process and, through OpenVINO's model cache, on disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from mordasr.infer.backends.base import Network, import_optional, importable
from mordasr.infer.backends.graph import (
    INPUT_NAME,
    cached_graph,
    feeds_for,
    graph_key,
    weight_feeds,
)
from mordasr.infer.memory import release_freed_memory
from mordasr.nets.loaders import cache_dir
from mordasr.sr.protocol import ImageWork

OPENVINO_HINT = "the openvino backend needs OpenVINO: pip install openvino"
PRECISION_HINTS = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}
"""OpenVINO's ``INFERENCE_PRECISION_HINT`` for each compute dtype."""


def import_openvino() -> ModuleType:
    """The ``openvino`` module, or a one-line install hint."""
    return import_optional("openvino", OPENVINO_HINT)


def openvino_available() -> bool:
    """Whether OpenVINO can be imported."""
    return importable("openvino")


class OpenVinoBackend:
    """OpenVINO on the CPU at ``dtype``, each image's folded MoR weights fed as graph inputs.

    The graph is compiled once per input shape (static shapes ran about 10 % faster than one
    dynamic-shape compilation here; a tiled image has one to four tile shapes), and at most
    :data:`MAX_SHAPES` compilations per graph are kept.

    Args:
        dtype: the inference precision (float32, bfloat16 or float16; the CPU plugin computes
            in float32 where the CPU lacks the reduced-precision instructions).
        threads: inference threads (default: ``torch.get_num_threads()``).
    """

    name = "openvino"

    def __init__(self, dtype: torch.dtype = torch.float32, threads: int | None = None) -> None:
        if dtype not in PRECISION_HINTS:
            raise ValueError(f"OpenVINO runs float32, bfloat16 or float16, not {dtype}")
        self._ov = import_openvino()
        self.dtype = dtype
        self.threads = threads or torch.get_num_threads()

    def compiled(self, network: nn.Module, shape: tuple[int, ...]) -> Any:
        """The model of ``network`` compiled for inputs of ``shape`` (and its infer request),
        exported and compiled on first use."""
        graph = _GRAPHS.get(id(network))
        if graph is None or graph[0] is not network:
            graph = (network, graph_key(network))
            _GRAPHS[id(network)] = graph
        key = (graph[1], self.threads, self.dtype, shape)
        entry = _COMPILED.pop(key, None)
        if entry is None:
            entry = self._compile(network, shape)
        _COMPILED[key] = entry  # most recently used last
        same_graph = [k for k in _COMPILED if k[:3] == key[:3]]
        for old in same_graph[:-MAX_SHAPES]:
            del _COMPILED[old]
        return entry

    def _compile(self, network: nn.Module, shape: tuple[int, ...]) -> Any:
        core = self._ov.Core()
        core.set_property({"CACHE_DIR": str(cache_dir() / "openvino")})
        model = core.read_model(str(cached_graph(network)))
        model.reshape({INPUT_NAME: list(shape)})
        config = {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[self.dtype],
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        compiled = core.compile_model(model, "CPU", config)
        return compiled, compiled.create_infer_request()

    @contextmanager
    def bind(self, work: ImageWork) -> Iterator[Network]:
        weights = weight_feeds(work.plan)

        def run(image: Tensor) -> Tensor:
            outputs = []
            for index in range(image.shape[0]):
                tile = image[index : index + 1].float().contiguous().cpu().numpy()
                compiled, request = self.compiled(work.network, tile.shape)
                feeds = feeds_for(weights, index)
                feeds[INPUT_NAME] = tile
                result = request.infer(feeds)
                outputs.append(torch.from_numpy(result[compiled.output(0)].copy()))
                release_freed_memory()
            return torch.cat(outputs).to(device=image.device, dtype=image.dtype)

        yield run


MAX_SHAPES = 4
"""Compiled input shapes kept per graph (least recently used dropped first)."""
_GRAPHS: dict[int, tuple[nn.Module, str]] = {}
"""Graph keys of networks seen by this process (hashing the weights costs a fraction of a
second per network)."""
_COMPILED: dict[tuple[str, int, torch.dtype, tuple[int, ...]], Any] = {}
"""Compiled models and their infer requests by (graph key, threads, dtype, input shape), shared
by every Upscaler of this process."""
