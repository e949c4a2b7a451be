"""Built-in training tasks; importing this package registers them."""

from mordasr.train.tasks.sr import RealESRGANMoRTask

__all__ = ["RealESRGANMoRTask"]
