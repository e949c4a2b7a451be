"""Inference: tiling, colour fixes and the upscale pipeline behind `mordasr upscale`.

- :mod:`~mordasr.infer.tiling` — overlapping tiles with smooth blending.
- :mod:`~mordasr.infer.latent_tiling` — latent and VAE tiling for the one-step SD model.
- :mod:`~mordasr.infer.pipeline` — :class:`Upscaler`, the Python API behind `mordasr upscale`.
"""

from mordasr.infer.pipeline import Upscaler, UpscaleResult

__all__ = ["UpscaleResult", "Upscaler"]
