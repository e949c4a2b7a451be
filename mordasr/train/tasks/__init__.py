"""Built-in training tasks; importing this package registers them."""

from mordasr.train.tasks.sd import OneStepSDTask
from mordasr.train.tasks.sr import RealESRGANMoRTask

__all__ = ["OneStepSDTask", "RealESRGANMoRTask"]
