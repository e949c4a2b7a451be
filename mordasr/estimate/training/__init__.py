"""Training of the learned estimator's heads: what made the weights shipped in ``mordasr/weights``.

* :mod:`~mordasr.estimate.training.labels`: the targets, from known degradation parameters;
* :mod:`~mordasr.estimate.training.synthesis`: the synthetic training images and their summaries;
* :mod:`~mordasr.estimate.training.fit`: features, heads, validation and the whole run
  (:func:`train_estimator`; ``benchmarks/train_estimator.py`` is its command line).
"""

from __future__ import annotations

from mordasr.estimate.training.fit import train_estimator
from mordasr.estimate.training.labels import DEFAULT_SCHEME, LABEL_SCHEMES, Degradation

__all__ = ["DEFAULT_SCHEME", "LABEL_SCHEMES", "Degradation", "train_estimator"]
