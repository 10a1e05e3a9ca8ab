"""`sparsecircuits train`: train a weight-sparse model, or resume one."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import PRESETS, RunConfig, apply_overrides, build_config, parse_set
from ..errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a weight-sparse GPT (or resume one)",
                       description="Train a weight-sparse GPT on Python code.")
    p.add_argument("--preset", default=None, help=f"one of: {', '.join(PRESETS)} (default cpu-small)")
    p.add_argument("--out", type=Path, help="run directory to create, e.g. runs/NAME")
    p.add_argument("--data", type=Path, default=None, help="token-shard folder from 'data build' (default: stdlib)")
    p.add_argument("--config", type=Path, default=None, help="TOML file of settings")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set train.steps=100 (repeatable)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue a stopped run")
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train.trainer import train

    if args.resume:
        if args.preset or args.config or args.data:
            raise UserError("--resume takes its settings from the run; drop --preset/--config/--data")
        cfg_path = args.resume / "config.json"
        if not cfg_path.is_file():
            raise UserError(f"{args.resume} is not a run directory (no config.json)")
        cfg = RunConfig.load(cfg_path)
        if args.set:  # only training length may change on resume, e.g. to extend a run
            apply_overrides(cfg, parse_set(args.set), source="--set")
            cfg.validate()
        if args.device:
            cfg.train.device = args.device
        summary = train(cfg, args.resume, resume=True, progress=not args.no_progress)
    else:
        if not args.out:
            raise UserError("train needs --out RUN_DIR (or --resume RUN_DIR)")
        sets = list(args.set)
        if args.data:
            sets.append(f"data.data_dir={args.data}")
        if args.device:
            sets.append(f"train.device={args.device}")
        cfg = build_config(args.preset or "cpu-small", args.config, sets)
        summary = train(cfg, args.out, progress=not args.no_progress)
    val = summary["val_loss"]
    print(f"trained {summary['step']} steps: train loss {summary['train_loss']:.4f}, "
          f"val loss {val:.4f}, nonzero fraction {summary['nonzero_frac']:.4f} -> {summary['out']}")
    return 0
