"""What each ablation config builds on the real Real-ESRGAN x4plus backbone.

For every ``configs/ablations/*.yaml`` (except ``router_clip``, which needs CLIP weights) the
script builds the training task's adapted backbone (no pool, no step) and prints the adapted
layers, the adapter factor and router parameters, and the most ranks one image can apply in a
layer (shared ranks plus the ranks of its kept real experts). Nothing is trained or timed.

    python benchmarks/bench_ablations.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from torch import nn

from mordasr.mor import mor_layers
from mordasr.train.cli import apply_overrides
from mordasr.train.config import TrainConfig
from mordasr.train.trainer import build_task, make_accelerator

ABLATIONS = Path(__file__).resolve().parents[1] / "configs" / "ablations"
NO_POOL = ["data.pool_size=0", "model.cache_trunk=false"]
"""Skip the training pool: only the adapters are wanted."""


def build(path: Path) -> nn.Module:
    """The adapted backbone the training task builds from the config (untrained)."""
    config = apply_overrides(TrainConfig.from_yaml(path), NO_POOL)
    return build_task(config, make_accelerator(config, cpu=True)).net_g


def describe(backbone: nn.Module) -> dict[str, int]:
    """Adapted layers, factor and router parameters, and the most ranks one image applies."""
    layers = [layer for _, layer in mor_layers(backbone)]
    factors = sum(
        p.numel()
        for layer in layers
        for p in (layer.shared_A, layer.shared_B, layer.routed_A, layer.routed_B)
    )
    routers = sum(p.numel() for layer in layers if layer.router for p in layer.router.parameters())
    c = layers[0].config
    active = c.num_shared + (min(c.top_k, c.num_real) * c.expert_rank if c.num_routed else 0)
    return {"layers": len(layers), "factors": factors, "routers": routers, "active": active}


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print("| config | adapted layers | factor params | router params | max ranks/image/layer |")
    print("|---|---:|---:|---:|---:|")
    for path in sorted(p for p in ABLATIONS.glob("*.yaml") if p.stem != "router_clip"):
        d = describe(build(path))
        print(
            f"| {path.stem} | {d['layers']} | {d['factors']:,} | {d['routers']:,} | {d['active']} |"
        )


if __name__ == "__main__":
    main()
