"""Which backend and precision run a model: asked for by name, or chosen by a measured rule.

``precision="auto"`` takes the fastest configuration that met the project's quality criterion
against eager float32 (all 100 RealSR pairs: PSNR-Y at least -0.02 dB, LPIPS and DISTS at most
+0.001, paired means; BENCHMARKS section 20) for this CPU's instruction set:

- feed-forward models on a CPU with bfloat16 hardware (AMX, AVX512-BF16): OpenVINO in bfloat16;
- any other CPU: float32 on the fastest exact backend (OpenVINO, else ONNX Runtime, else torch);
- CUDA: torch in bfloat16 where the GPU supports it, else float16, a broken tile redone in
  float32; MPS and the one-step SD model: float32.

``precision="exact"`` keeps float32 everywhere (on the fastest exact backend); an explicit
``dtype`` overrides both (half precision then runs on eager torch unless a backend is named).
Routing and folding are float32 in every configuration (the one-step SD model excepted: its
generator is cast whole, as diffusers expects).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mordasr.infer.backends.base import Backend, BackendUnavailableError, TorchBackend
from mordasr.infer.backends.onnxruntime import (
    ONNX_HINT,
    OnnxRuntimeBackend,
    onnxruntime_available,
)
from mordasr.infer.backends.openvino import OPENVINO_HINT, OpenVinoBackend, openvino_available
from mordasr.infer.cpu import CpuFeatures, cpu_features
from mordasr.sr.protocol import SRModel

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
"""Names accepted by :func:`choose_configuration` (and ``mordasr upscale --backend``)."""
PRECISIONS = ("auto", "exact")
"""``auto``: the fastest configuration that met the quality criterion here; ``exact``: float32."""
GRAPH_BACKENDS = ("onnxruntime", "openvino")
"""Backends that run the fed graph: feed-forward models on the CPU only."""
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


@dataclass(frozen=True)
class Configuration:
    """Where and in what precision the network runs, and why it was chosen."""

    backend: str
    dtype: torch.dtype
    reason: str

    @property
    def network_dtype(self) -> torch.dtype:
        """The dtype of the torch network: the graph backends take float32 weights and inputs
        and round them inside their kernels."""
        return torch.float32 if self.backend in GRAPH_BACKENDS else self.dtype

    def describe(self) -> str:
        """E.g. ``openvino bfloat16 (auto: AMX)``, for the summary line."""
        return f"{self.backend} {DTYPE_NAMES.get(self.dtype, str(self.dtype))} ({self.reason})"

    def backend_object(self) -> Backend:
        """A backend object running this configuration."""
        if self.backend == "openvino":
            return OpenVinoBackend(self.dtype)
        if self.backend == "onnxruntime":
            return OnnxRuntimeBackend()
        return TorchBackend()


def choose_configuration(
    model: SRModel,
    device: torch.device,
    backend: str = "auto",
    precision: str = "auto",
    dtype: torch.dtype | None = None,
    cpu: CpuFeatures | None = None,
) -> Configuration:
    """The configuration for ``model`` on ``device``: ``backend`` (one of :data:`BACKENDS`)
    and ``precision`` (one of :data:`PRECISIONS`), or an explicit ``dtype``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if dtype is not None and dtype not in DTYPE_NAMES:
        raise ValueError(f"unsupported dtype {dtype}; choose float32, bfloat16 or float16")
    graph = model.feed_forward and device.type == "cpu"
    if backend in GRAPH_BACKENDS:
        _check_graph_backend(backend, graph)
    if dtype is not None:
        reason = f"--dtype {DTYPE_NAMES[dtype]}"
        if backend == "auto" and dtype != torch.float32:
            return Configuration("torch", dtype, reason)
        return _configuration(backend, dtype, graph, reason)
    if precision == "exact":
        return _configuration(backend, torch.float32, graph, "exact")
    if device.type == "cuda":
        half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return _configuration(backend, half, graph, "auto: CUDA")
    cpu = cpu or cpu_features()
    if graph and cpu.native_bfloat16 and backend in ("auto", "openvino") and openvino_available():
        return Configuration("openvino", torch.bfloat16, f"auto: {cpu.isa}")
    return _configuration(backend, torch.float32, graph, f"auto: {cpu.isa if graph else 'exact'}")


def _check_graph_backend(backend: str, graph: bool) -> None:
    """Refuse a graph backend that cannot run here: not installed, or not a CPU feed-forward
    model."""
    if not graph:
        raise ValueError(
            f"the {backend} backend runs feed-forward models (MoR or plain backbones) on the "
            "CPU; use --backend torch"
        )
    available = openvino_available() if backend == "openvino" else onnxruntime_available()
    if not available:
        raise BackendUnavailableError(OPENVINO_HINT if backend == "openvino" else ONNX_HINT)


def _configuration(backend: str, dtype: torch.dtype, graph: bool, reason: str) -> Configuration:
    """``backend`` at ``dtype``; ``auto`` picks the fastest installed backend that runs it."""
    if backend != "auto":
        if backend == "onnxruntime" and dtype != torch.float32:
            raise ValueError("the onnxruntime backend runs float32 only; use openvino or torch")
        return Configuration(backend, dtype, reason)
    if graph and openvino_available():
        return Configuration("openvino", dtype, reason)
    if graph and dtype == torch.float32 and onnxruntime_available():
        return Configuration("onnxruntime", dtype, reason)
    return Configuration("torch", dtype, reason)
