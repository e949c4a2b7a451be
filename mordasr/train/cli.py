"""`mordasr train CONFIG`: run (or resume) a training run from a YAML config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from mordasr.io.cliargs import add_set_option, add_subcommand
from mordasr.train.checkpoint import CheckpointError
from mordasr.train.config import ConfigError, TrainConfig, from_dict
from mordasr.train.trainer import RunFolderError, train

# The sub-command's help line and description.
SUMMARY = (
    "train a model from a YAML config (resumes from the newest checkpoint)",
    "Train from a YAML config. Re-running the same command resumes from the "
    "newest checkpoint in output_dir. Multi-GPU: `accelerate launch -m mordasr.cli train ...`.",
)


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a config."""
    data: dict[str, Any] = config.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return from_dict(TrainConfig, data)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    parser = add_subcommand(subparsers, "train", SUMMARY)
    parser.add_argument("config", help="YAML training config (see configs/)")
    add_set_option(parser, "override a config value, e.g. total_steps=100")
    parser.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    parser.add_argument("--resume-from", help="resume from this checkpoint folder")
    parser.add_argument("--stop-at", type=int, help="stop after this step (checkpoint saved)")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even if CUDA exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mordasr train``."""

    try:
        config = TrainConfig.from_yaml(args.config)
    except ConfigError as error:
        print(f"mordasr train: {error}", file=sys.stderr)
        return 1
    except (OSError, yaml.YAMLError) as error:
        reason = str(error).replace("\n", " ")
        print(f"mordasr train: cannot read {args.config}: {reason}", file=sys.stderr)
        return 1
    try:
        config = apply_overrides(config, args.overrides)
    except (ConfigError, ValueError) as error:
        print(f"mordasr train: --set: {error}", file=sys.stderr)
        return 1
    if args.resume_from and not Path(args.resume_from).is_dir():
        print(f"mordasr train: no checkpoint folder at {args.resume_from}", file=sys.stderr)
        return 1
    resume: bool | str = args.resume_from or not args.no_resume
    try:
        out = train(config, resume=resume, stop_at=args.stop_at, cpu=True if args.cpu else None)
    except (CheckpointError, RunFolderError) as error:
        print(f"mordasr train: {error}", file=sys.stderr)
        return 1
    except ConfigError as error:  # sections that contradict each other, found by the task
        print(f"mordasr train: {args.config}: {error}", file=sys.stderr)
        return 1
    print(f"run folder: {out}")
    return 0
