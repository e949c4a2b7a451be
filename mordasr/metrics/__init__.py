"""Image quality metrics on (B, 3, H, W) tensors in [0, 1].

- :mod:`~mordasr.metrics.functional` — PSNR/SSIM on the Y channel, LPIPS, DISTS, NIQE per image.
- :mod:`~mordasr.metrics.lpips` — the LPIPS network (also the LPIPS training loss).
- :mod:`~mordasr.metrics.dists`, :mod:`~mordasr.metrics.niqe` — DISTS and NIQE.
"""
