"""Super-resolution models: a backbone with MoR adapters, the one-step SD model, plain baselines.

- :mod:`~mordasr.sr.mor_sr` — backbone + MoR adapters + estimator, save/load.
- :mod:`~mordasr.sr.router_input` — what the routers of a MoR model read (scores or features).
- :mod:`~mordasr.sr.sd` — the paper's one-step SD 2.1 generator.
- :mod:`~mordasr.sr.zoo` — one loader for every model name (`default`, backbones, bicubic).
"""
