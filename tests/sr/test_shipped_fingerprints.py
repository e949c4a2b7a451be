"""Each shipped model's output on a crop of ``assets/0014.jpg`` matches a stored fingerprint to
within 1/255, so refactors that should change nothing provably change nothing: ``default``
guards the merged plain-LoRA path, ``mor-dasr`` the routed one.

A fingerprint (``data/MODEL_0014_fingerprint.npz``) holds a 64x64 thumbnail (4x4 block
means) of the 256x256 result of the central 64x64 crop, and the per-channel means and
standard deviations of the full result. Regenerate it only for an intended change of the
model's output: ``PYTHONPATH=. python tests/sr/test_shipped_fingerprints.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mordasr.infer.pipeline import Upscaler
from mordasr.io.image import read_image

ASSET = Path(__file__).parents[2] / "assets" / "0014.jpg"
MODELS = ("default", "mor-dasr")
CROP = 64
TOLERANCE = 1.0 / 255.0


def stored(model: str) -> Path:
    return Path(__file__).parent / "data" / f"{model}_0014_fingerprint.npz"


def fingerprint(model: str) -> dict[str, np.ndarray]:
    """The model's result on the central ``CROP`` x ``CROP`` crop, summarised."""
    image = read_image(ASSET).tensor
    top = (image.shape[-2] - CROP) // 2
    left = (image.shape[-1] - CROP) // 2
    crop = image[:, top : top + CROP, left : left + CROP]
    sr = Upscaler(model, device="cpu", precision="exact").upscale_tensor(crop).double()
    thumbnail = F.avg_pool2d(sr[None], 4)[0]
    return {
        "thumbnail": thumbnail.numpy(),
        "mean": sr.mean(dim=(1, 2)).numpy(),
        "std": sr.std(dim=(1, 2)).numpy(),
    }


@pytest.mark.parametrize("model", MODELS)
def test_shipped_model_output_on_0014_matches_its_stored_fingerprint(model: str) -> None:
    expected = np.load(stored(model))
    current = fingerprint(model)
    assert current["thumbnail"].shape == expected["thumbnail"].shape == (3, 64, 64)
    for key in ("thumbnail", "mean", "std"):
        difference = np.abs(current[key] - expected[key]).max()
        assert difference <= TOLERANCE, f"{key} moved by {difference * 255:.3f}/255"


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    for name in MODELS:
        path = stored(name)
        values = fingerprint(name)
        np.savez_compressed(path, **{k: v.astype(np.float32) for k, v in values.items()})
        print(f"wrote {path}")
