"""Backbones, pretrained weights read offline, and the MoR super-resolution model.

- :mod:`~mordasr.models.rrdbnet` — RRDBNet (Real-ESRGAN) with architecture detection.
- :mod:`~mordasr.models.ncnn`, :mod:`~mordasr.models.loaders` — ncnn and .pth weight loading.
- :mod:`~mordasr.models.pretrained`, :mod:`~mordasr.models.vgg`, :mod:`~mordasr.models.alexnet`
  — ImageNet VGG16/AlexNet and LPIPS/DISTS/NIQE data from the weight packages.
- :mod:`~mordasr.models.mor_sr` — backbone + MoR adapters + estimator, save/load.
- :mod:`~mordasr.models.zoo` — one loader for every model name (`default`, backbones, bicubic).
"""
