"""Training: YAML configs, the loop (accelerate, per-step seeding, exact resume), tasks.

- :mod:`~mordasr.train.config` — :class:`TrainConfig` and its sections.
- :mod:`~mordasr.train.trainer` — :func:`train`: progress bar, CSV/TensorBoard logs, checkpoints.
- :mod:`~mordasr.train.checkpoint` — atomic safetensors checkpoints.
- :mod:`~mordasr.train.task` — the task interface and registry; tasks in :mod:`.tasks`.
"""
