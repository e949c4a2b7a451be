"""Where a feed-forward SR network runs, and in what precision.

- :mod:`~mordasr.infer.backends.base` — the :class:`Backend` protocol and eager torch.
- :mod:`~mordasr.infer.backends.graph` — the fed graph: exported once, MoR weights as inputs.
- :mod:`~mordasr.infer.backends.onnxruntime` — ONNX Runtime running it in float32.
- :mod:`~mordasr.infer.backends.openvino` — OpenVINO running it in float32, bfloat16, float16.
- :mod:`~mordasr.infer.backends.choice` — the backend and precision for a model and device.

Every backend runs whatever plan it is bound to: an image's, or under region routing each
tile's; the graph backends are fed the plan's folded weights (computed in float32).
"""

from mordasr.infer.backends.base import Backend, BackendUnavailableError, Network, TorchBackend
from mordasr.infer.backends.choice import (
    BACKENDS,
    PRECISIONS,
    Configuration,
    choose_configuration,
)
from mordasr.infer.backends.graph import (
    INPUT_NAME,
    WEIGHT_INPUT_PREFIX,
    export_onnx_module,
    folded_weights,
    weight_fed_copy,
)
from mordasr.infer.backends.onnxruntime import (
    ONNX_HINT,
    OnnxRuntimeBackend,
    onnxruntime_available,
)
from mordasr.infer.backends.openvino import OPENVINO_HINT, OpenVinoBackend, openvino_available

__all__ = [
    "BACKENDS",
    "INPUT_NAME",
    "ONNX_HINT",
    "OPENVINO_HINT",
    "PRECISIONS",
    "WEIGHT_INPUT_PREFIX",
    "Backend",
    "BackendUnavailableError",
    "Configuration",
    "Network",
    "OnnxRuntimeBackend",
    "OpenVinoBackend",
    "TorchBackend",
    "choose_configuration",
    "export_onnx_module",
    "folded_weights",
    "onnxruntime_available",
    "openvino_available",
    "weight_fed_copy",
]
