"""`sparsecircuits frontier --grid cpu|gpu|smoke --out DIR`: circuit size vs pretraining loss.

Trains a grid of models over weight density and width (reusing finished ones, resuming
interrupted ones), prunes each on the chosen tasks at several target losses, and writes
``DIR/frontier.json`` and ``DIR/frontier_edges.png`` / ``frontier_nodes.png``.  See
``sparsecircuits.analysis.frontier`` for what is measured and how.  ``--ray [ADDRESS]``
runs each training and each pruning as a Ray task (``analysis/frontier_ray.py``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    from ..analysis.frontier import DEFAULT_TARGETS, GRIDS

    p = sub.add_parser("frontier", help="circuit size vs pretraining loss over a grid of dense and sparse models",
                       description="Train a grid of models over density and width, prune each on a few tasks, "
                                   "and compare circuit sizes at matched pretraining loss.")
    p.add_argument("--grid", required=True, choices=list(GRIDS),
                   help="smoke: seconds, for tests; cpu: within an hour on 2 cores; gpu: a GPU machine")
    p.add_argument("--out", type=Path, required=True, help="folder for the models, frontier.json and plots")
    p.add_argument("--tasks", default=None, help="comma-separated task names (default: the grid's)")
    p.add_argument("--targets", default=None,
                   help=f"comma-separated target task losses (default {','.join(f'{t:g}' for t in DEFAULT_TARGETS)})")
    p.add_argument("--data", type=Path, default=None, help="token-shard folder (default: the stdlib data)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the grid's)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per model (default: the grid's; a longer budget learns more tasks)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="train and prune as Ray tasks, one per model and one per model and task, on the cluster "
                        "at ADDRESS ('auto', 'HOST:6379', 'ray://HOST:10001'); without ADDRESS, a local Ray. "
                        "--out and --data must be on a filesystem every node sees")
    p.add_argument("--no-progress", action="store_true", help="no per-model progress output")
    p.set_defaults(func=run)


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--targets expects comma-separated numbers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from ..analysis.frontier import frontier, ratio_lines

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    targets = _floats(args.targets) if args.targets else None
    if args.device and args.device.startswith("cuda") and args.ray is None:  # on Ray, the workers' GPUs count
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for, but no CUDA GPU is available")
    result = frontier(args.grid, args.out, tasks=tasks, targets=targets, data_dir=args.data,
                      device=args.device, progress=not args.no_progress, steps=args.steps, ray_address=args.ray)
    for line in ratio_lines(result):
        print(line)
    n_models = len(result["models"])
    print(f"frontier: {n_models} models, {len(result['tasks'])} tasks, targets "
          f"{','.join(f'{t:g}' for t in result['targets'])} -> {args.out / 'frontier.json'}")
    return 0
