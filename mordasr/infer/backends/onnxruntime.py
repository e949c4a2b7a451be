"""ONNX Runtime (CPU provider) running the fed graph, each image's folded weights fed per run."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from mordasr.infer.backends.base import Network, import_optional, importable
from mordasr.infer.backends.graph import (
    INPUT_NAME,
    OUTPUT_NAME,
    cached_graph,
    export_fed_graph,
    feeds_for,
    graph_key,
    weight_feeds,
)
from mordasr.infer.memory import release_freed_memory
from mordasr.sr.protocol import ImageWork

ONNX_HINT = "the onnxruntime backend needs ONNX Runtime: pip install 'mordasr[onnx]'"


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, or a one-line install hint."""
    return import_optional("onnxruntime", ONNX_HINT)


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime can be imported."""
    return importable("onnxruntime")


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
            path = cached_graph(network)
            return self._ort.InferenceSession(str(path), options, providers=providers)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{key}.onnx"
            export_fed_graph(network, path)
            return self._ort.InferenceSession(str(path), options, providers=providers)

    @contextmanager
    def bind(self, work: ImageWork) -> Iterator[Network]:
        session = self.session(work.network)
        weights = weight_feeds(work.plan)

        def run(image: Tensor) -> Tensor:
            outputs = []
            for index in range(image.shape[0]):
                feeds = feeds_for(weights, index)
                feeds[INPUT_NAME] = image[index : index + 1].float().contiguous().cpu().numpy()
                outputs.append(
                    torch.from_numpy(session.run([OUTPUT_NAME], feeds, self.run_options)[0])
                )
                release_freed_memory()
            return torch.cat(outputs).to(device=image.device, dtype=image.dtype)

        yield run


_SESSIONS: dict[tuple[str, int], Any] = {}
"""Sessions of this process by (graph key, threads), shared by every Upscaler."""
