"""Plain networks and offline weight readers (no adapters, no routing).

- :mod:`~mordasr.nets.rrdbnet` — RRDBNet (Real-ESRGAN) with architecture detection.
- :mod:`~mordasr.nets.ncnn`, :mod:`~mordasr.nets.loaders` — ncnn and .pth weight loading.
- :mod:`~mordasr.nets.pretrained`, :mod:`~mordasr.nets.vgg`, :mod:`~mordasr.nets.alexnet`
  — ImageNet VGG16/AlexNet and LPIPS/DISTS/NIQE data from the weight packages.
"""
