"""Inference: image IO that keeps what the input had, tiling, and the upscale pipeline.

- :mod:`~mordasr.infer.io` — read/write by content; gray, alpha, 16-bit, EXIF, ICC.
- :mod:`~mordasr.infer.tiling` — overlapping tiles with smooth blending.
- :mod:`~mordasr.infer.pipeline` — :class:`Upscaler`, the Python API behind `mordasr upscale`.
"""
