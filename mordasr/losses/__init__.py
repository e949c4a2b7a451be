"""Training losses: VGG perceptual loss, the U-Net discriminator and GAN losses.

Pixel losses are plain ``torch.nn.functional`` calls; the balance losses of MoR live with the
router in :mod:`mordasr.mor.balance`; LPIPS is :mod:`mordasr.metrics.lpips`.
"""
