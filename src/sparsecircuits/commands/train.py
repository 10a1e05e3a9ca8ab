"""`sparsecircuits train`: train a weight-sparse model, or resume one.

Distributed: ``torchrun --nproc_per_node=N -m sparsecircuits train ...`` runs the same
command on N processes (DDP); rank 0 writes the run directory and prints the summary, the
other ranks print nothing unless they fail, and then one line naming the rank and step.
Under ``torchrun --max-restarts=N`` a restarted group resumes the run from its newest
checkpoint by itself (``train.elastic`` says when).
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from ..config import PRESETS, apply_overrides, build_config, parse_set
from ..errors import UserError
from ..rundir import RunDir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a weight-sparse GPT (or resume one)",
                       description="Train a weight-sparse GPT on Python code. Under torchrun "
                                   "(--nproc_per_node=N) it trains with DDP; train.batch_size is the global batch.")
    p.add_argument("--preset", default=None, help=f"one of: {', '.join(PRESETS)} (default cpu-small)")
    p.add_argument("--out", type=Path, help="run directory to create, e.g. runs/NAME")
    p.add_argument("--data", type=Path, default=None, help="token-shard folder from 'data build' (default: stdlib)")
    p.add_argument("--config", type=Path, default=None, help="TOML file of settings")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set train.steps=100 (repeatable)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue a stopped run")
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                   help="stop (with a checkpoint) once STEP steps are done; the schedules still follow "
                        "train.steps, and --resume continues exactly where it stopped")
    p.add_argument("--check-masks-every", type=int, default=None, metavar="N",
                   help="with several processes, check every N steps that all hold the same top-k "
                        "masks (0 = never; default: every train.log_every steps)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train.trainer import RankFailed, _PeerFailed, train

    if args.stop_after is not None and args.stop_after < 1:
        raise UserError(f"--stop-after must be >= 1, got {args.stop_after}")
    if args.resume:
        if args.preset or args.config or args.data or args.out:
            raise UserError("--resume takes its settings from the run; drop --preset/--config/--data/--out")
        if not args.resume.is_dir():
            raise UserError(f"run directory not found: {args.resume}")
        if not RunDir(args.resume).is_run():
            raise UserError(f"{args.resume} is not a run directory (no config.json)")
        cfg = RunDir(args.resume).read_config()
        if args.set:  # e.g. to extend a run (train.steps) or change threads
            apply_overrides(cfg, parse_set(args.set), source="--set")
            cfg.validate()
        if args.device:
            cfg.train.device = args.device
        out, resume = args.resume, True
    else:
        if not args.out:
            raise UserError("train needs --out RUN_DIR (or --resume RUN_DIR)")
        sets = list(args.set)
        if args.data:
            sets.append(f"data.data_dir={args.data}")
        if args.device:
            sets.append(f"train.device={args.device}")
        cfg = build_config(args.preset or "cpu-small", args.config, sets)
        out, resume = args.out, False
    rank = int(os.environ.get("RANK", "0"))
    try:
        summary = train(cfg, out, resume=resume, progress=not args.no_progress, stop_after=args.stop_after,
                        check_masks_every=args.check_masks_every)
    except _PeerFailed:
        raise SystemExit(2) from None  # rank 0 prints the reason
    except RankFailed as exc:  # not bad input: keep the traceback, then the one line that sums it up
        traceback.print_exception(exc.__cause__)
        sys.stderr.write(f"sparsecircuits: error: {exc}\n")
        return 1
    if rank:
        return 0
    if summary["stopped"]:
        print(f"stopped after step {summary['step']} of {cfg.train.steps}: train loss "
              f"{summary['train_loss']:.4f}; continue with 'sparsecircuits train --resume {out}'")
        return 0
    val = summary["val_loss"]
    if val is None:  # resumed a run that had already finished
        print(f"{out} is already at step {summary['step']} of {cfg.train.steps}; final model rewritten")
        return 0
    print(f"trained {summary['step']} steps: train loss {summary['train_loss']:.4f}, "
          f"val loss {val:.4f}, nonzero fraction {summary['nonzero_frac']:.4f} -> {summary['out']}")
    return 0
