"""Export of a feed-forward model with one fixed routing, for the tools people already use.

A MoR model's routing is fixed at export time: its layers' ranks are folded for one score vector
(an image's, given numbers, or a mid severity), optionally scaled by ``strength``, which leaves a
plain network of the backbone's architecture; per-image and per-region routing
(``--routing region``) need mordasr itself. Three formats:

- ``onnx`` (ONNX Runtime, chaiNNer's ONNX support): ``input`` (N, 3, H, W) float32 RGB in [0, 1]
  with dynamic batch, height and width, ``output`` (N, 3, scale H, scale W) clamped to [0, 1];
- ``safetensors`` and ``pth`` (ComfyUI, chaiNNer and anything built on spandrel): the plain
  network's state dict with the official Real-ESRGAN key layout of its architecture (RRDBNet:
  ``conv_first``, ``body.N.rdbK.convM``, ..., ``conv_last``; SRVGGNetCompact: ``body.N``), so
  they detect it as they detect RealESRGAN_x4plus.pth. The ``.pth`` holds it as the official
  files do (under ``params_ema`` for RRDBNet, ``params`` for the compact net); the
  ``.safetensors`` header says the architecture, the scale and the routing used.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from mordasr import __version__
from mordasr.infer.backends import INPUT_NAME, export_onnx_module, folded_weights
from mordasr.io.image import read_image
from mordasr.mor import mor_layers
from mordasr.nets.rrdbnet import RRDBNet
from mordasr.nets.srvgg import SRVGGNetCompact
from mordasr.sr.protocol import ImageWork, SRModel

ExportFormat = Literal["onnx", "safetensors", "pth"]
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)
_FORMAT_OF_SUFFIX: dict[str, ExportFormat] = {
    ".onnx": "onnx",
    ".safetensors": "safetensors",
    ".pth": "pth",
    ".pt": "pth",
}
_OFFICIAL_CONTAINER = {RRDBNet: "params_ema", SRVGGNetCompact: "params"}
"""The key the official ``.pth`` files of each architecture hold their weights under."""

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


def plain_network(model: SRModel, scores: Tensor | None = None, strength: float = 1.0) -> nn.Module:
    """``model``'s network without adapters: a copy in which every MoR layer is its frozen
    layer holding the weight folded for ``scores`` (1, score_dim), the adapter delta scaled by
    ``strength``; the architecture and module names are the backbone's."""
    if not model.feed_forward:
        raise ValueError("export supports feed-forward models (a MoR model or a plain backbone)")
    if model.score_dim is not None and scores is None:
        raise ValueError("a MoR model needs routing scores to be exported")
    side = model.multiple_of
    work = _work(model, torch.zeros(1, 3, side, side), scores)
    folded = {name: weight[0] for name, weight in folded_weights(work.plan).items()}
    network = copy.deepcopy(work.network)
    for name, layer in list(mor_layers(network)):
        frozen = layer.base_layer
        base = frozen.weight.detach()
        weight = base + strength * (folded[name].to(base.dtype) - base)
        frozen.weight = nn.Parameter(weight, requires_grad=False)
        parent, _, leaf = name.rpartition(".")
        setattr(network.get_submodule(parent) if parent else network, leaf, frozen)
    return network.eval()


def fixed_network(model: SRModel, scores: Tensor | None = None, strength: float = 1.0) -> nn.Module:
    """:func:`plain_network` with its output clamped to [0, 1]."""
    return _Clamped(plain_network(model, scores, strength)).eval()


def _work(model: SRModel, lr: Tensor, scores: Tensor | None = None) -> ImageWork:
    work = model.prepare(lr, None if scores is None else scores.float())
    if not isinstance(work, ImageWork):
        raise ValueError("export supports feed-forward models (a MoR model or a plain backbone)")
    return work


def export_format(path: str | Path, fmt: str = "auto") -> ExportFormat:
    """The format to write: ``fmt`` when given, else the one of ``path``'s extension."""
    if fmt != "auto":
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"unknown export format {fmt!r}; use one of {EXPORT_FORMATS}")
        return _FORMAT_OF_SUFFIX[f".{fmt}"]
    found = _FORMAT_OF_SUFFIX.get(Path(path).suffix.lower())
    if found is None:
        known = ", ".join(_FORMAT_OF_SUFFIX)
        raise ValueError(f"cannot tell the format of {path}: name it {known}, or give --format")
    return found


def official_state_dict(network: nn.Module) -> dict[str, Tensor]:
    """The float32 state dict of a plain RRDBNet or SRVGGNetCompact (official key layout)."""
    if type(network) not in _OFFICIAL_CONTAINER:
        raise ValueError(
            f"a {type(network).__name__} backbone has no official Real-ESRGAN state dict "
            "layout (RRDBNet and SRVGGNetCompact have): export it as .onnx"
        )
    return {k: v.detach().float().contiguous().cpu() for k, v in network.state_dict().items()}


def export_metadata(
    network: nn.Module, scale: int, scores: Tensor | None, strength: float, source: str
) -> dict[str, str]:
    """What the safetensors header says: the architecture, scale and routing of the file
    (``routing_scores`` and ``strength`` are JSON, null for a model that is not routed)."""
    return {
        "format": "pt",
        "architecture": type(network).__name__,
        "scale": str(scale),
        "routing_scores": json.dumps(None if scores is None else scores[0].tolist()),
        "strength": json.dumps(None if scores is None else strength),
        "source": source,
        "exporter": f"mordasr {__version__}",
    }


def export_model(
    model: SRModel,
    path: str | Path,
    scores: Tensor | None = None,
    strength: float = 1.0,
    fmt: str = "auto",
    source: str = "",
) -> Path:
    """Write ``model`` (routed by ``scores``, see :func:`plain_network`) in ``fmt`` (default:
    from ``path``'s extension; see the module docstring); ``source`` names the model in the
    safetensors header."""
    path = Path(path)
    chosen = export_format(path, fmt)
    network = plain_network(model, scores, strength)
    if chosen == "onnx":
        path.parent.mkdir(parents=True, exist_ok=True)
        clamped = _Clamped(network).eval()
        export_onnx_module(clamped, (torch.rand(1, 3, 16, 16),), path, [INPUT_NAME])
        return path
    state = official_state_dict(network)
    path.parent.mkdir(parents=True, exist_ok=True)
    if chosen == "safetensors":
        source = source or model.describe()
        metadata = export_metadata(network, model.scale, scores, strength, source)
        save_file(state, str(path), metadata=metadata)
    else:
        torch.save({_OFFICIAL_CONTAINER[type(network)]: state}, path)
    return path
