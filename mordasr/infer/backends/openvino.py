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

from mordasr.infer.backends.base import BackendUnavailableError, Network
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
    try:
        import openvino
    except ImportError as error:
        raise BackendUnavailableError(OPENVINO_HINT) from error
    return openvino


def openvino_available() -> bool:
    """Whether OpenVINO can be imported."""
    try:
        import_openvino()
    except BackendUnavailableError:
        return False
    return True


class OpenVinoBackend:
    """OpenVINO on the CPU at ``dtype``, each image's folded MoR weights fed as graph inputs.

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
        self._compiled: dict[int, tuple[nn.Module, Any]] = {}

    def compiled(self, network: nn.Module) -> Any:
        """The compiled model of ``network`` (exported and compiled on first use)."""
        known = self._compiled.get(id(network))
        if known is not None and known[0] is network:
            return known[1]
        key = (graph_key(network), self.threads, self.dtype)
        compiled = _COMPILED.get(key)
        if compiled is None:
            compiled = self._compile(network)
            _COMPILED[key] = compiled
        self._compiled[id(network)] = (network, compiled)
        return compiled

    def _compile(self, network: nn.Module) -> Any:
        core = self._ov.Core()
        core.set_property({"CACHE_DIR": str(cache_dir() / "openvino")})
        config = {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[self.dtype],
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        return core.compile_model(str(cached_graph(network)), "CPU", config)

    @contextmanager
    def bind(self, work: ImageWork) -> Iterator[Network]:
        compiled = self.compiled(work.network)
        request = compiled.create_infer_request()
        weights = weight_feeds(work.plan)

        def run(image: Tensor) -> Tensor:
            outputs = []
            for index in range(image.shape[0]):
                feeds = feeds_for(weights, index)
                feeds[INPUT_NAME] = image[index : index + 1].float().contiguous().cpu().numpy()
                result = request.infer(feeds)
                outputs.append(torch.from_numpy(result[compiled.output(0)].copy()))
                release_freed_memory()
            return torch.cat(outputs).to(device=image.device, dtype=image.dtype)

        yield run


_COMPILED: dict[tuple[str, int, torch.dtype], Any] = {}
"""Compiled models of this process by (graph key, threads, dtype), shared by every Upscaler."""
