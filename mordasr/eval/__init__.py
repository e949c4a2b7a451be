"""Evaluation: metrics, `mordasr eval` and `mordasr benchmark`.

- :mod:`~mordasr.eval.metrics` — PSNR/SSIM on the Y channel, LPIPS, DISTS, NIQE on tensors.
- :mod:`~mordasr.eval.evaluate` — metrics over folders of SR/HR pairs.
- :mod:`~mordasr.eval.benchmark` — several models on one test set, quality and speed.
"""
