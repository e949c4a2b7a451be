"""Cost of MoR layers against the frozen base layer and a plain LoRA of the same total rank.

Cases (from the foundation issue): conv 64->64 3x3 on 128x128 and linear 640->640 on 4096
tokens, batch 1 and 8, inference and one training step. All variants of one case are timed in the
same process, interleaved round by round in a rotating order; the table gives the median time
and the median over rounds of the time ratio to the baseline of the same round, so machine noise
hits them alike.

MoR uses the paper's layout (8 shared + 32 routed slots of which 4 zero, top-8); LoRA has rank 40.
Inference calls get fresh scores every call, so routing and (merged path) weight folding are paid
each time; "cached" reuses one image's scores, as tiled inference of one image does.

    python benchmarks/bench_mor.py [--rounds 15] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass

import torch
from common import summarise_rounds, time_rounds
from torch import nn

from mordasr.mor import MoRConfig, inject_mor, mor_layers, mor_parameters, route


@dataclass
class Case:
    name: str
    make_base: Callable[[], nn.Module]
    make_input: Callable[[int], torch.Tensor]


CASES = [
    Case(
        "conv 64->64 3x3, 128x128",
        lambda: nn.Conv2d(64, 64, 3, padding=1),
        lambda b: torch.randn(b, 64, 128, 128),
    ),
    Case(
        "linear 640->640, 4096 tokens",
        lambda: nn.Linear(640, 640),
        lambda b: torch.randn(b, 4096, 640),
    ),
]


def _wrap(base: nn.Module, config: MoRConfig | None) -> nn.Module:
    model = nn.Sequential(base)
    if config is None:
        model.requires_grad_(False)
        return model
    inject_mor(model, config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, layer in mor_layers(model):
            for b in (layer.shared_B, layer.routed_B):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.01)
    return model


def _inference_fn(model: nn.Module, x: torch.Tensor, routed: bool, fresh: bool) -> Callable:
    """Inference with one fixed plan (folded once), or a new folded plan per call (``fresh``)."""
    batch = x.shape[0]
    fixed = route(model, torch.rand(batch, 7) if routed else None, fold=True)

    def run() -> None:
        with torch.no_grad():
            plan = fixed
            if routed and fresh:
                plan = route(model, torch.rand(batch, 7), fold=True)
            with plan.applied(model):
                model(x)

    return run


def _train_fn(model: nn.Module, x: torch.Tensor, routed: bool) -> Callable:
    params = mor_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    target = torch.randn_like(model(x) if not routed else _routed_forward(model, x))

    def run() -> None:
        plan = route(model, torch.rand(x.shape[0], 7) if routed else None)
        with plan.applied(model):
            loss = torch.nn.functional.mse_loss(model(x), target)
        if routed:
            loss = loss + 0.01 * plan.balance_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return run


def _routed_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), route(model, torch.rand(x.shape[0], 7)).applied(model):
        return model(x)


def run_case(case: Case, batch: int, rounds: int) -> list[dict]:
    torch.manual_seed(0)
    base = case.make_base()
    x = case.make_input(batch)
    mor = MoRConfig(target_modules=["0"])
    variants = {
        "frozen base": _wrap(base, None),
        "LoRA r40": _wrap(copy.deepcopy(base), MoRConfig.lora(40, target_modules=["0"])),
        "MoR merged": _wrap(
            copy.deepcopy(base), MoRConfig(target_modules=["0"], compute_path="merged")
        ),
        "MoR low-rank": _wrap(
            copy.deepcopy(base), MoRConfig(target_modules=["0"], compute_path="lowrank")
        ),
        "MoR auto": _wrap(copy.deepcopy(base), mor),
    }
    inference = {
        name: _inference_fn(model, x, routed=name.startswith("MoR"), fresh=True)
        for name, model in variants.items()
    }
    inference["MoR merged, cached"] = _inference_fn(
        _wrap(copy.deepcopy(base), MoRConfig(target_modules=["0"], compute_path="merged")),
        x,
        routed=True,
        fresh=False,
    )
    infer_times = summarise_rounds(time_rounds(inference, rounds), "frozen base")
    training = {
        name: _train_fn(model, x, routed=name.startswith("MoR"))
        for name, model in variants.items()
        if name != "frozen base"
    }
    train_times = summarise_rounds(time_rounds(training, max(3, rounds // 3)), "LoRA r40")
    rows = []
    for mode, times, reference in (
        ("inference", infer_times, "frozen base"),
        ("train step", train_times, "LoRA r40"),
    ):
        for name, (seconds, ratio) in times.items():
            rows.append(
                {
                    "case": case.name,
                    "batch": batch,
                    "mode": mode,
                    "variant": name,
                    "ms": 1e3 * seconds,
                    "vs": reference,
                    "ratio": ratio,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for case in CASES:
        for batch in args.batches:
            rows.extend(run_case(case, batch, args.rounds))
            print(f"done: {case.name}, batch {batch}", flush=True)
    print(
        f"\ntorch {torch.__version__}, {args.threads} threads, {args.rounds} rounds (inference)\n"
    )
    print("| case | batch | mode | variant | ms | ratio | vs |")
    print("|---|---:|---|---|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['batch']} | {r['mode']} | {r['variant']} | {r['ms']:.2f} | "
            f"{r['ratio']:.3f} | {r['vs']} |"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
