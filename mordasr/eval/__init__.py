"""Evaluation: `mordasr eval`, `mordasr benchmark` and `mordasr analyze`.

- :mod:`~mordasr.eval.evaluate` — metrics over folders of SR/HR pairs.
- :mod:`~mordasr.eval.benchmark` — several models on one test set, quality and speed, the report.
- :mod:`~mordasr.eval.analysis` — which experts a MoR model keeps for which degradations.
- :mod:`~mordasr.eval.stats` — paired comparisons over seeds and images (hierarchical bootstrap,
  Holm, equivalence verdicts).
- :mod:`~mordasr.eval.plots` — the figures of `mordasr analyze` and `mordasr benchmark`.
- :mod:`~mordasr.eval.analyze_cli` — `mordasr analyze`.
"""
