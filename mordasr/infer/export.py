"""ONNX export of a feed-forward model with one fixed routing, for tools that read Real-ESRGAN
ONNX models (chaiNNer, ComfyUI, Upscayl's converters, plain ONNX Runtime).

The file takes ``input`` (N, 3, H, W) float32 RGB in [0, 1] with dynamic batch, height and width,
and gives ``output`` (N, 3, scale H, scale W) clamped to [0, 1]. A MoR model's routing is fixed at
export time: its layers' ranks are folded for one score vector (an image's, given numbers, or a
mid severity), optionally scaled by ``strength``; per-image and per-region routing
(``--routing region``) need mordasr itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from mordasr.infer.backends import INPUT_NAME, export_onnx_module, folded_weights, weight_fed_copy
from mordasr.io.image import read_image
from mordasr.mor import mor_layers
from mordasr.sr.protocol import ImageWork, SRModel

MID_SEVERITY = 0.5
"""Every score of ``--scores auto``: a moderately degraded photo (scores lie in [0, 1])."""


class _Clamped(nn.Module):
    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: Tensor) -> Tensor:
        return self.network(image).clamp(0.0, 1.0)


def parse_scores(model: SRModel, spec: Sequence[str]) -> Tensor | None:
    """(1, score_dim) routing scores from ``auto``, an image path (what the model's routers
    see for it, as ``mordasr upscale`` computes it) or ``score_dim`` numbers; None for a model
    that is not routed."""
    dim = model.score_dim
    if dim is None:
        return None
    if list(spec) == ["auto"]:
        return torch.full((1, dim), MID_SEVERITY)
    if len(spec) == 1 and not _is_number(spec[0]):
        decoded = read_image(spec[0])
        rgb = decoded.tensor.expand(3, -1, -1) if decoded.is_gray else decoded.tensor
        return _work(model, rgb[None].float()).plan.scores
    if len(spec) != dim or not all(_is_number(s) for s in spec):
        raise ValueError(f"--scores takes 'auto', an image, or {dim} numbers; got {' '.join(spec)}")
    return torch.tensor([[float(s) for s in spec]])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def fixed_network(model: SRModel, scores: Tensor | None = None, strength: float = 1.0) -> nn.Module:
    """``model`` as a plain network: a MoR model's layers hold the weights folded for
    ``scores`` (1, score_dim), their adapter delta scaled by ``strength``; the output is
    clamped to [0, 1]."""
    if not model.feed_forward:
        raise ValueError("export supports feed-forward models (a MoR model or a plain backbone)")
    if model.score_dim is not None and scores is None:
        raise ValueError("a MoR model needs routing scores to be exported")
    side = model.multiple_of
    work = _work(model, torch.zeros(1, 3, side, side), scores)
    folded = {name: weight[0] for name, weight in folded_weights(work.plan).items()}
    for name, layer in mor_layers(work.network):
        base = layer.base_layer.weight
        folded[name] = base + strength * (folded[name].to(base.dtype) - base)
    return _Clamped(weight_fed_copy(work.network, folded)[0]).eval()


def _work(model: SRModel, lr: Tensor, scores: Tensor | None = None) -> ImageWork:
    work = model.prepare(lr, None if scores is None else scores.float())
    if not isinstance(work, ImageWork):
        raise ValueError("export supports feed-forward models (a MoR model or a plain backbone)")
    return work


def export_model(
    model: SRModel, path: str | Path, scores: Tensor | None = None, strength: float = 1.0
) -> Path:
    """Write ``model`` (routed by ``scores``, see :func:`fixed_network`) as an ONNX file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    network = fixed_network(model, scores, strength)
    export_onnx_module(network, (torch.rand(1, 3, 16, 16),), path, [INPUT_NAME])
    return path
